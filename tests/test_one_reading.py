"""One number, one function: the explorer's per-sample tables, boxes, IoU and hit are the stages'
(stage=analyze, stage=evaluate), for both method profiles and for several values of the selection
and grounding keys. A setting the page ignored would make its numbers differ here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ROOT, make_cfg

from lab.records.record import record_path
from lab.report.encode import float16_table
from lab.report.rundata import build_run_data
from lab.stages import StageContext, run_stage

DATA = ROOT / "examples" / "toy" / "toy_small.jsonl"
CASES = [
    ("method=paper",),
    ("method=kang_release",),
    ("grounding.region=all", "grounding.geometry=stretch", "grounding.sigma=0.6"),
    ("selection.mean_factor=2.0", "selection.binarize_threshold=0.001", "selection.component_weight=relu_mass",
     "selection.tie_break=index", "selection.min_keep=1"),
    ("selection.bottom_row_filter=true", "selection.bottom_row_rule=any_cell", "selection.ranking=per_sample",
     "grounding.hull=true", "top_k=2"),
    ("selection.elbow.scope=per_sample", "selection.elbow.method=chord", "selection.k=4", "selection.exclude_layers=[0]"),
]


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) for c in CASES])
def test_the_page_shows_the_stages_numbers(toy_vlm, tmp_path, overrides):
    common = (f"data_file={DATA}", f"output_dir={tmp_path}", "max_new_tokens=0", *overrides)
    ctx = StageContext(loader=lambda: toy_vlm, output_dir=tmp_path)
    run_stage(make_cfg("stage=batch", *common), ctx)
    run_stage(make_cfg("stage=evaluate", *common), ctx)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    by_id = {d["id"]: d for d in map(json.loads, (tmp_path / "evaluate_samples.jsonl").read_text().splitlines())}
    page = build_run_data(tmp_path)  # settings from run_config.json only, as a notebook's show() would
    assert page["settings_source"] == "stage=evaluate"
    assert page["stale"] == {}  # lab/report/staleness.py: evaluate's table is about the heads.json it wrote
    samples = {s["id"]: s for s in page["samples"]}
    assert set(samples) == set(by_id) and len(samples) == 16
    ious = []
    for sid, want in by_id.items():
        got = samples[sid]
        if want["box"] is None:  # per_sample ranking: no head passed both criteria here
            assert "pred_box" not in got
            ious.append(0.0)
            continue
        assert got["heads"] == want["heads"]
        assert got["pred_box"] == pytest.approx(want["box"], abs=1e-9)
        assert got["iou"] == pytest.approx(want["iou"], abs=1e-12) and got["hit"] == want["hit"]
        ious.append(got["iou"])
    assert np.mean(ious) == pytest.approx(metrics["selected_heads"]["miou"], abs=1e-12)
    for sid in ("toy_0000", "toy_0007"):  # the per-sample tables equal stage=analyze's
        rec = record_path(tmp_path, sid)
        run_stage(make_cfg("stage=analyze", f"attention_file={rec}", *common), ctx)
        ana = json.loads((tmp_path / "analysis" / f"{sid}.analysis.json").read_text())
        s_img = np.array(ana["s_img"], dtype=float)
        ent = np.array([[np.inf if v is None else v for v in row] for row in ana["entropy"]], dtype=float)
        assert samples[sid]["s_img"] == float16_table(s_img)
        assert samples[sid]["entropy"] == float16_table(ent)
