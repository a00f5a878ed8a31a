"""The explorer's data contract (lab/report/page_data.py `PageData`, issue 30 item 8): the blob the
toy runs' pages embed matches it, and a field outside it or of the wrong type is named."""

from __future__ import annotations

import pytest
from report_data import page_data

from lab.report.page_data import PageData, Sample, contract_problems


@pytest.mark.parametrize("run", ["toy_run", "toy_tokens_run"])
def test_the_toy_pages_data_matches_the_contract(run, request):
    data = page_data((request.getfixturevalue(run) / "index.html").read_text(encoding="utf-8"))
    assert contract_problems(data) == []
    assert set(data) == set(PageData.__annotations__)  # every block of the contract is written
    assert all(set(Sample.__required_keys__) <= set(s) for s in data["samples"])
    if run == "toy_tokens_run":
        assert all("tokens" in s for s in data["samples"])  # the token maps are checked too


def test_a_field_outside_the_contract_or_of_the_wrong_type_is_named(toy_run):
    data = page_data((toy_run / "index.html").read_text(encoding="utf-8"))
    data["samples"][2]["colour"] = "red"
    data["samples"][3]["iou"] = "0.5"
    data["grid_mean"]["eligible"] = [1, None]
    del data["samples"][0]["maps"]
    assert contract_problems(data) == [
        "data.grid_mean.eligible[1]: NoneType None, expected int",
        "data.samples[0].maps: missing (Sample)",
        "data.samples[2].colour: not in the contract (Sample, lab/report/page_data.py)",
        "data.samples[3].iou: str '0.5', expected float"]


def test_the_page_script_is_every_module_of_js_once_main_last():
    """lab/report/page.py SCRIPTS: a module left out of it would be missing from the page, silently."""
    from lab.report.page import ASSETS, SCRIPTS, page_script

    assert sorted(SCRIPTS) == sorted(p.name for p in (ASSETS / "js").glob("*.js")) and SCRIPTS[-1] == "main.js"
    js = page_script()
    assert js.count('"use strict"') == 1 and all(f"function {f}(" in js for f in ("drawMap", "renderSampleList", "renderGrid"))
