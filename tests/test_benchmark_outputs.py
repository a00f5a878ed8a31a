"""The run files for other tools (issue 31 item 5): metrics.json's lmms-eval / evaluate_boxes.py
numbers beside ours, and heads_by_layer.json beside heads.json, on the shared toy run."""

from __future__ import annotations

import json

import pytest

from lab.analysis.grounding import IOU_THRESHOLDS, LMMS_EVAL_ACC_AT
from lab.runs.heads_files import write_heads_by_layer

LMMS_KEYS = ["IoU", *(f"ACC@{t:g}" for t in LMMS_EVAL_ACC_AT), "Center_ACC"]


def _check_beside_ours(m: dict) -> None:
    """The added numbers of one head set agree with ours where the definitions meet."""
    assert list(m["lmms_eval"]) == LMMS_KEYS and list(m["iou_thresholds"]) == [f"{t:g}" for t in IOU_THRESHOLDS]
    assert m["iou_thresholds"]["0.5"] == m["acc@0.5"]  # the same pixel IoU, the same >= 0.5
    assert m["lmms_eval"]["IoU"] == pytest.approx(m["miou"], abs=1e-9)  # normalized boxes: only rounding differs
    assert m["lmms_eval"]["ACC@0.5"] == pytest.approx(m["acc@0.5"], abs=1.0 / m["n"] + 1e-12)
    accs = [m["lmms_eval"][f"ACC@{t:g}"] for t in LMMS_EVAL_ACC_AT]
    assert accs == sorted(accs, reverse=True) and all(0.0 <= v <= 1.0 for v in accs + [m["lmms_eval"]["Center_ACC"]])


def test_metrics_json_carries_the_benchmark_numbers(toy_run):
    metrics = json.loads((toy_run / "metrics.json").read_text())
    for name in ("selected_heads", "all_heads_mean"):
        _check_beside_ours(metrics[name])
    assert "lmms_eval" not in metrics["random_heads"]  # a mean over draws: not reported there
    lines = [json.loads(x) for x in (toy_run / "evaluate_samples.jsonl").read_text().splitlines()]
    ious = [d["iou"] for d in lines]  # the per-sample IoUs give the thresholds' shares
    for t in IOU_THRESHOLDS:
        assert metrics["selected_heads"]["iou_thresholds"][f"{t:g}"] == pytest.approx(sum(v >= t for v in ious) / len(ious))
    for group, ms in metrics.get("by_group", {}).items():
        _check_beside_ours(ms["selected_heads"])


def test_heads_by_layer_is_heads_json_per_layer(toy_run, tmp_path):
    heads = json.loads((toy_run / "heads.json").read_text())["heads"]
    by_layer = json.loads((toy_run / "heads_by_layer.json").read_text())
    want: dict[str, list[int]] = {}
    for layer, head in sorted((h["layer"], h["head"]) for h in heads):
        want.setdefault(str(layer), []).append(head)
    assert by_layer == want and list(by_layer) == list(want)
    # pairs or heads.json dicts; layers and heads ascending (numerically: 10 after 2), duplicates once
    path = write_heads_by_layer(tmp_path / "h.json", [(10, 3), (2, 7), (2, 1), {"layer": 2, "head": 7}])
    assert path.read_text() == '{"2": [1, 7], "10": [3]}\n'
