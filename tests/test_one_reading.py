"""One number, one function: the explorer's per-sample tables, boxes, IoU and hit are the stages'
(stage=analyze, stage=evaluate), for both method profiles and for several values of the selection
and grounding keys, and so are the figures of visualize_attention.py (read from the run's
run_config.json) under both profiles and under grounding.refine=sam. A setting the page or a figure
ignored would make its numbers differ here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, make_cfg

from lab.analysis.record_numbers import ground, score
from lab.records.record import AttentionRecord, record_path
from lab.report.page_settings import page_settings
from lab.sessions.views import run_view
from lab.report.encode import float16_table
from lab.report.rundata import build_run_data
from lab.stages import StageContext, run_stage
from utils.settings.declarations import GroundingConfig, SelectionConfig

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
    if overrides[0].startswith("method="):  # the figures too (2 views of one record per profile, ~2 s)
        _views_draw_the_stages_numbers(tmp_path, by_id["toy_0000"], overrides[0])


# toy_0000's heads as stage=evaluate grounded it under method=kang_release, and the box the views drew
# with the paper's defaults before they read run_config.json (issue 30 item 1), measured on this toy
KANG_TOY_0000 = {"heads": [[2, 1], [2, 3], [3, 0], [2, 2], [2, 0]], "box": [0.0, 0.0, 80.0, 96.0]}
KANG_BOX_WITH_PAPER_SETTINGS = [40.0, 16.0, 32.0, 16.0]


def _views_draw_the_stages_numbers(run, want, method):
    """visualize_attention.py mode=single of a record of `run`, with no selection/grounding keys
    given: its figure and `<figure>.json` carry stage=evaluate's box and IoU (run_config.json's
    settings), for the heads evaluate used and for one head alone (record_numbers.ground)."""
    rec_file = record_path(run, "toy_0000")
    heads_file = run / "evaluate_heads_toy_0000.json"
    heads_file.write_text(json.dumps({"heads": [{"layer": l, "head": h} for l, h in want["heads"]]}))
    views = run / "views"
    res = run_view(make_cfg("mode=single", f"attention_file={rec_file}", f"heads_file={heads_file}", f"output_dir={views}",
                            config_name="visualization_config"), StageContext(loader=lambda: None, output_dir=views))
    drawn = json.loads(Path(res["figure"]).with_suffix(".json").read_text())
    assert drawn["settings_source"] == f"{run / 'run_config.json'} stage=evaluate"
    assert drawn["heads"] == want["heads"]  # the run's top_k (kang_release: 5), not the view's default 3
    assert drawn["box"] == pytest.approx(want["box"], abs=1e-9) and res["box"] == drawn["box"]
    assert drawn["iou"] == pytest.approx(want["iou"], abs=1e-12) and drawn["hit"] == want["hit"]
    rec = AttentionRecord.load(rec_file)
    paper_box = list(ground(rec, [tuple(h) for h in want["heads"]], SelectionConfig(), GroundingConfig()).box_xywh)
    if method == "method=kang_release":
        assert want["heads"] == KANG_TOY_0000["heads"] and want["box"] == KANG_TOY_0000["box"]
        assert paper_box == KANG_BOX_WITH_PAPER_SETTINGS  # what the view drew before: not the run's box
    else:
        assert paper_box == want["box"]
    layer, head = want["heads"][0]
    res = run_view(make_cfg("mode=single", f"attention_file={rec_file}", f"layer={layer}", f"head={head}",
                            f"output_dir={views}", config_name="visualization_config"),
                   StageContext(loader=lambda: None, output_dir=views))
    st = page_settings(json.loads((run / "run_config.json").read_text()))
    one = ground(rec, [(layer, head)], st.selection, st.grounding)
    drawn = json.loads(Path(res["figure"]).with_suffix(".json").read_text())
    assert drawn["heads"] == [[layer, head]] and drawn["box"] == list(one.box_xywh)
    assert drawn["iou"] == score(one, rec.meta.extra["bbox"]).iou


def test_refine_sam_figures_draw_the_box_evaluate_wrote(toy_run, toy_vlm, tmp_path):
    """grounding.refine=sam (a tiny random SAM): the figure of evaluate's heads draws the SAM mask's
    box evaluate_samples.jsonl holds; other heads get the map's box, and `<figure>.json` says so."""
    from test_sam import tiny_sam

    run = tmp_path / "run"
    shutil.copytree(toy_run / "attention", run / "attention")
    shutil.copy(toy_run / "heads.json", run / "heads.json")
    seg = tiny_sam()
    run_stage(make_cfg("stage=evaluate", f"output_dir={run}", "end_index=4", "grounding.refine=sam",
                       "grounding.random_draws=1"), StageContext(loader=lambda: toy_vlm, output_dir=run, sam_loader=lambda: seg))
    want = json.loads((run / "evaluate_samples.jsonl").read_text().splitlines()[0])
    rec_file = record_path(run, want["id"])
    rec = AttentionRecord.load(rec_file)
    st = page_settings(json.loads((run / "run_config.json").read_text()))
    map_box = list(ground(rec, [tuple(h) for h in want["heads"]], st.selection, st.grounding).box_xywh)
    assert st.grounding.refine == "sam" and want["box"] != map_box  # SAM's box is another than the map's
    views = run / "views"
    ctx = StageContext(loader=lambda: None, output_dir=views)
    res = run_view(make_cfg("mode=single", f"attention_file={rec_file}", f"heads_file={run / 'heads.json'}",
                            f"output_dir={views}", config_name="visualization_config"), ctx)
    drawn = json.loads(Path(res["figure"]).with_suffix(".json").read_text())
    assert drawn["heads"] == want["heads"] and drawn["box"] == want["box"] and drawn["iou"] == want["iou"]
    assert drawn["box_source"].startswith("SAM mask's box")
    layer, head = want["heads"][0]
    res = run_view(make_cfg("mode=single", f"attention_file={rec_file}", f"layer={layer}", f"head={head}",
                            f"output_dir={views}", config_name="visualization_config"), ctx)
    drawn = json.loads(Path(res["figure"]).with_suffix(".json").read_text())
    assert drawn["box"] == list(ground(rec, [(layer, head)], st.selection, st.grounding).box_xywh)
    assert "refine=sam boxes exist only for the heads stage=evaluate scored" in drawn["box_source"]
    # the page (index.html's data) draws the same box as evaluate scored, and keeps the map's beside it
    from lab.report.rundata import build_run_data

    page = {s["id"]: s for s in build_run_data(run)["samples"]}[want["id"]]
    assert page["pred_box"] == want["box"] and page["map_box"] == map_box and page["iou"] == want["iou"]
    assert "SAM" in page["box_source"]
