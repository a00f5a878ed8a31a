"""Heads files a user chose or wrote, and the rows a selection is over (issue 29 items 3-5, issue 31 item 2):
evaluate / ablate use the folder's heads.json (reselect=true selects again, the old file kept beside it),
a selection counts only the run's rows, heads files with non-integer or no heads and an exclude_layers
the model cannot take are refused in one line before any row is collected, stage=select writes the page."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from helpers import make_cfg
from report_data import page_data

from lab.records.record import AttentionRecord
from lab.runs.heads_files import heads_from_file
from lab.stages import StageContext, run_stage
from utils.errors import UserError


def _run(toy_vlm, out, *overrides):
    return run_stage(make_cfg(*overrides, f"output_dir={out}"), StageContext(loader=lambda: toy_vlm, output_dir=out))


def _heads(path):
    return [[h["layer"], h["head"]] for h in json.loads(path.read_text())["heads"]]


# ---- 29.3: a heads.json is used, never replaced without a word ----------------------------------
def test_evaluate_uses_a_hand_edited_heads_json_and_reselect_keeps_it_beside(toy_run, toy_vlm, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    edited = json.loads((run / "heads.json").read_text())
    edited["heads"] = [{"layer": 2, "head": 2}, {"layer": 1, "head": 0}]  # a user's own choice
    (run / "heads.json").write_text(json.dumps(edited))
    mine = (run / "heads.json").read_bytes()
    _run(toy_vlm, run, "stage=evaluate", "end_index=16")
    out = capsys.readouterr().out
    assert (run / "heads.json").read_bytes() == mine  # used, not replaced
    assert json.loads((run / "metrics.json").read_text())["heads"] == [[2, 2], [1, 0]]
    assert f"evaluate: using heads L2H2, L1H0 from {run / 'heads.json'}; this folder's heads.json" in out
    _run(toy_vlm, run, "stage=evaluate", "end_index=16", "reselect=true")
    out = capsys.readouterr().out
    (kept,) = run.glob("heads.*.json")
    assert kept.read_bytes() == mine and f"kept the previous heads.json as {kept}" in out
    assert _heads(run / "heads.json") == _heads(toy_run / "heads.json")  # selected again
    _run(toy_vlm, run, "stage=evaluate", "end_index=16", "reselect=true")  # the same selection: nothing to keep
    assert list(run.glob("heads.*.json")) == [kept] and "kept the previous" not in capsys.readouterr().out


# ---- 29.4: a selection is over the run's rows only -----------------------------------------------
def test_select_leaves_out_records_that_are_not_the_runs_rows(toy_run, toy_vlm, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    rec = AttentionRecord.load(run / "attention" / "toy_0003.safetensors")
    rec.meta.sample_id = "toy_9999"  # a record of the same model, of a row this run was never given
    rec.save(run / "attention" / "toy_9999.safetensors")
    _run(toy_vlm, run, "stage=select")  # no data_file rows: the manifests say which rows are the run's
    out = capsys.readouterr().out
    assert json.loads((run / "heads.json").read_text())["records"]["count"] == 16
    assert "note: left out 1 record(s)" in out and "toy_9999.safetensors" in out and "16 samples" in out
    _run(toy_vlm, run, "stage=evaluate", "end_index=5", "reselect=true")  # given rows: exactly those
    out = capsys.readouterr().out
    assert json.loads((run / "heads.json").read_text())["records"]["count"] == 5
    assert "note: left out 12 record(s)" in out and "5 samples" in out


# ---- 29.5: heads that are not whole numbers, none, layers the model does not have ------------------
@pytest.mark.parametrize("heads, says", [
    ([{"layer": 1.5, "head": 0}], "heads entry 1 {\"layer\": 1.5, \"head\": 0}: layer and head must be whole numbers"),
    ([{"layer": 1, "head": 0}, {"layer": True, "head": 1}], "heads entry 2 {\"layer\": true, \"head\": 1}"),
    ([{"layer": "1", "head": 0}], "(got str '1', int 0)"),
    ([{"layer": -1, "head": 0}], "whole numbers >= 0"),
    ([], "its heads list is empty"),
])
def test_heads_files_with_heads_that_are_not_whole_numbers_are_refused(tmp_path, heads, says):
    f = tmp_path / "heads.json"
    f.write_text(json.dumps({"heads": heads}))
    with pytest.raises(UserError) as e:
        heads_from_file(str(f))
    assert str(e.value).startswith(f"{f}: ") and says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("overrides, says", [
    (["stage=evaluate", "heads_file={hf}"], "heads L9H0 are outside the model's 4 layers x 4 heads"),
    (["stage=batch", "selection.exclude_layers=[9]"], "selection.exclude_layers=[9] names layer(s) [9] the model does not have"),
    (["stage=evaluate", "selection.exclude_layers=[0,1,2,3]"], "leaves no layer to select heads from"),
])
def test_heads_and_layers_the_model_does_not_have_are_refused_before_any_row_is_collected(toy_vlm, tmp_path, overrides,
                                                                                          says):
    hf = tmp_path / "mine.json"
    hf.write_text(json.dumps({"heads": [{"layer": 9, "head": 0}]}))
    out = tmp_path / "out"
    with pytest.raises(UserError, match=re.escape(says)):
        _run(toy_vlm, out, *[o.format(hf=hf) for o in overrides], "end_index=4")
    assert not list(out.glob("attention/*.safetensors"))  # refused before any row was collected


def test_select_over_records_refuses_exclude_layers_covering_every_layer(toy_run, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"selection.exclude_layers=\[0, 1, 2, 3\] leaves no layer"):
        _run(None, out, "stage=select", f"attention_dir={toy_run / 'attention'}", "selection.exclude_layers=[0,1,2,3]")


# ---- 31.2: stage=select alone leaves the run's page true -----------------------------------------
def test_select_alone_writes_the_run_page(toy_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(toy_run / "attention", run / "attention")
    shutil.copy(toy_run / "manifest.jsonl", run / "manifest.jsonl")
    _run(None, run, "stage=select", "top_k=5")
    out = capsys.readouterr().out
    page = run / "index.html"
    assert page.is_file() and f"index: {page}" in out and out.count("index: ") == 1
    data = page_data(page.read_text(encoding="utf-8"))
    assert len(data["heads"]["selected"]) == 5 == len(_heads(run / "heads.json")) and len(data["samples"]) == 16
