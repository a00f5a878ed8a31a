"""Stale results tables (issue 24, item 5): metrics.json / ablation.json whose heads or settings are
not the current heads.json's are marked on the page and said in the console when the page is written
(`lab.report.staleness.stale_tables`, the one function that decides it)."""

from __future__ import annotations

import json
import shutil

import pytest
from browser_page import Page
from helpers import make_cfg

from lab.report.rundata import build_run_data
from lab.report.staleness import stale_tables
from lab.stages import StageContext, run_stage


def _rerun_batch(toy_run, toy_vlm, dest, *overrides):
    """A copy of the toy run (stage=batch, then stage=evaluate), then stage=batch again into it."""
    shutil.copytree(toy_run, dest)
    cfg = make_cfg("stage=batch", f"output_dir={dest}", "end_index=16", *overrides)
    run_stage(cfg, StageContext(loader=lambda: toy_vlm, output_dir=dest))
    return dest


@pytest.fixture(scope="module")
def stale_run(toy_run, toy_vlm, tmp_path_factory):
    return _rerun_batch(toy_run, toy_vlm, tmp_path_factory.mktemp("stale") / "run", "top_k=5")


def _names(heads):
    return ", ".join(f"L{l}H{h}" for l, h in heads)


def test_batch_evaluate_then_batch_top_k_5_marks_the_grounding_table_stale(toy_run, toy_vlm, tmp_path, capsys):
    assert build_run_data(toy_run)["stale"] == {}  # batch, evaluate: the table is about heads.json
    run = _rerun_batch(toy_run, toy_vlm, tmp_path / "run", "top_k=5")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "stale" in ln]
    old = json.loads((run / "metrics.json").read_text())["heads"]
    new = [[h["layer"], h["head"]] for h in json.loads((run / "heads.json").read_text())["heads"]]
    assert len(old) == 3 and len(new) == 5 and new[:3] == old
    assert lines == [f"warning: index.html: the Grounding table (metrics.json, stage=evaluate) is stale: heads {_names(old)} "
                     f"(heads.json now: {_names(new)}); settings differ from stage=batch's: top_k 3 (now 5); "
                     "re-run stage=evaluate to refresh it"]
    data = build_run_data(run)
    st = data["stale"]["metrics"]
    assert set(data["stale"]) == {"metrics"} and st["heads_differ"] and st["writer"] == "stage=batch"
    assert st["table_heads"] == old and st["current_heads"] == new
    assert st["settings"] == [{"key": "top_k", "table": 3, "current": 5}]
    assert "top_k 3 (now 5)" in st["sentence"] and st["sentence"].startswith("Stale: metrics.json (stage=evaluate)")
    # the samples are drawn with heads.json's heads, and the page says so
    assert all(s["heads"] == new for s in data["samples"])
    assert any("metrics.json is stale" in n for n in data["notes"])


def test_batch_again_with_the_same_settings_is_not_stale(toy_run, toy_vlm, tmp_path, capsys):
    run = _rerun_batch(toy_run, toy_vlm, tmp_path / "run")
    assert "stale" not in capsys.readouterr().out
    data = build_run_data(run)
    assert data["stale"] == {} and not any("stale" in n for n in data["notes"])
    want = json.loads((run / "metrics.json").read_text())["heads"]
    assert all(s["heads"] == want for s in data["samples"])


def test_the_page_shows_the_badge_and_the_sentence(browser, stale_run, toy_run):  # noqa: F811
    p = Page(browser, (stale_run / "index.html").as_uri())
    p.ready()
    pg = p.page
    assert pg.is_visible('#metrics-section .badge[data-stale="metrics"]')
    note = pg.inner_text("#metrics-stale")
    assert "not about the current heads.json" in note and "top_k 3 (now 5)" in note and "Re-run stage=evaluate" in note
    assert "L3H" in pg.inner_text("#selected-heads")  # 5 heads listed beside the stale 3-head table
    assert p.errors == []
    p.close()
    fresh = Page(browser, (toy_run / "index.html").as_uri())
    fresh.ready()
    assert fresh.page.locator(".badge").count() == 0 and fresh.page.locator("#metrics-stale").count() == 0
    fresh.close()


# ---- the rule on synthetic files ---------------------------------------------------------------
HEADS_JSON = {"heads": [{"layer": 1, "head": 0}, {"layer": 2, "head": 2}], "settings": {"top_k": 2}}
SEL = {"k": 10, "exclude_layers": None, "elbow": {"method": "kneedle"}}


def _cfg(stage, **kw):
    return {"stage": stage, "top_k": 2, "method_name": "paper", "selection": dict(SEL), "heads_file": None,
            "model": {"name_or_path": "toy"}, "attention_dir": None, **kw}


def test_rule_heads_settings_and_writer():
    metrics = {"heads": [[1, 0], [2, 2]], "settings": {"top_k": 2}}
    ablation = {"selected_heads": {"heads": [[1, 0], [2, 2]]}, "settings": {"top_k": 2}}
    tables = {"metrics": metrics, "ablation": ablation}
    same = {"stage=batch": _cfg("batch"), "stage=evaluate": _cfg("evaluate"), "stage=ablate": _cfg("ablate")}
    assert stale_tables(HEADS_JSON, tables, same) == []
    assert stale_tables(None, tables, same) == []  # no heads.json: nothing to be stale against
    # a later stage=batch with another selection.k: same heads, but a setting that decides them differs
    other = {"stage=evaluate": _cfg("evaluate"), "stage=ablate": _cfg("ablate"),
             "stage=batch": _cfg("batch", selection={**SEL, "k": 4, "elbow": {"method": "chord"}})}
    got = {x.table: x for x in stale_tables(HEADS_JSON, tables, other)}
    assert set(got) == {"metrics", "ablation"} and not got["metrics"].heads_differ
    assert got["ablation"].settings == [("selection.elbow.method", "kneedle", "chord"), ("selection.k", 10, 4)]
    assert "selection.k 10 (now 4)" in got["ablation"].console_line()
    # the table used heads_file=: only top_k counts among the settings, the heads still do
    used_file = dict(other, **{"stage=evaluate": _cfg("evaluate", heads_file="elsewhere/heads.json")})
    got = {x.table: x for x in stale_tables(HEADS_JSON, {"metrics": metrics}, used_file)}
    assert got == {}
    moved = {"heads": [[0, 1], [2, 2]], "settings": {"top_k": 2}}
    (x,) = stale_tables(HEADS_JSON, {"metrics": moved}, used_file)
    assert x.heads_differ and x.settings == [] and "heads L0H1, L2H2 (heads.json now: L1H0, L2H2)" in x.sentence()


def test_rule_without_run_config_heads_decide_and_the_latest_writer_counts():
    metrics = {"heads": [[1, 0], [2, 2]], "settings": {"top_k": 2}}
    assert stale_tables(HEADS_JSON, {"metrics": metrics}, {}) == []
    # top_k=3 asked, two heads eligible: the same heads, nothing stale
    assert stale_tables({**HEADS_JSON, "settings": {"top_k": 3}}, {"metrics": metrics}, {}) == []
    (x,) = stale_tables(HEADS_JSON, {"metrics": {"heads": [[1, 0]]}}, {})
    assert x.heads_differ and x.settings == [] and x.writer == "heads.json"
    # stage=evaluate alone in a folder: it selected on the fly and wrote heads.json itself, so it is current
    assert stale_tables(HEADS_JSON, {"metrics": metrics}, {"stage=evaluate": _cfg("evaluate")}) == []
    # after stage=batch it used the folder's heads.json (issue 29.3), as with heads_file=: stage=batch's
    # top_k=5 wrote heads.json
    cfgs = {"stage=batch": _cfg("batch", top_k=5), "stage=evaluate": _cfg("evaluate")}
    (x,) = stale_tables(HEADS_JSON, {"metrics": metrics}, cfgs)
    assert x.writer == "stage=batch" and x.settings == [("top_k", 2, 5)]
    cfgs["stage=evaluate"]["heads_file"] = "runs/toy/heads.json"
    (x,) = stale_tables(HEADS_JSON, {"metrics": metrics}, cfgs)
    assert x.writer == "stage=batch" and x.settings == [("top_k", 2, 5)]
    # reselect=true: it selected again and wrote heads.json: current
    cfgs["stage=evaluate"].update(heads_file=None, reselect=True)
    assert stale_tables(HEADS_JSON, {"metrics": metrics}, cfgs) == []
    # an unreadable heads list in a table: only the settings can say
    assert stale_tables(HEADS_JSON, {"metrics": {"heads": "garbage", "settings": {}}}, {}) == []


def test_rule_per_sample_heads_from_evaluate_samples():
    per = {"a": [[1, 0]], "b": [[2, 2], [1, 0]], "c": []}
    hj = {**HEADS_JSON, "per_sample": per}
    metrics = {"heads": [[1, 0], [2, 2]], "settings": {"top_k": 2, "per_sample_heads": True}}
    assert stale_tables(hj, {"metrics": metrics}, {}, {"a": [[1, 0]], "b": [[2, 2], [1, 0]], "c": []}) == []
    (x,) = stale_tables(hj, {"metrics": metrics}, {}, {"a": [[1, 0]], "b": [[1, 0], [2, 2]], "c": [], "gone": [[0, 0]]})
    assert x.samples_differ == (2, 4) and not x.heads_differ
    assert "each sample's own heads differ from heads.json's per_sample in 2 of 4 samples" in x.sentence()
    # grounded with the tally (no per_sample_heads): evaluate_samples.jsonl is not consulted
    assert stale_tables(hj, {"metrics": {**metrics, "settings": {"top_k": 2}}}, {}, {"a": [[3, 3]]}) == []
