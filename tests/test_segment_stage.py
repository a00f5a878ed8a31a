"""stage=evaluate with grounding.output=mask|both and grounding.refine=sam on the toy model's first
16 rows: every number of metrics.json recomputed from the PNGs it wrote and the rows' masks."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from helpers import ROOT, make_cfg
from test_sam import tiny_sam

from lab.analysis.masks import MaskMetrics, read_mask_png
from lab.stages import StageContext, run_stage
from utils.data import file_stem, load_rows
from utils.errors import UserError
from utils.masks import decode_mask, mask_box_xywh

DATA = ROOT / "examples" / "toy" / "toy_small.jsonl"


@pytest.fixture(scope="module")
def collected(tmp_path_factory, toy_vlm):
    """Records of the 16 rows, collected once; each test evaluates into a copy."""
    out = tmp_path_factory.mktemp("seg_records")
    run_stage(make_cfg("stage=batch", f"output_dir={out}", f"data_file={DATA}", "max_new_tokens=2"),
              StageContext(loader=lambda: toy_vlm, output_dir=out))
    return out


def _evaluate(collected, tmp_path, toy_vlm, *overrides, sam=None, data=DATA):
    out = tmp_path / "run"
    shutil.copytree(collected / "attention", out / "attention")
    shutil.copy(collected / "heads.json", out / "heads.json")
    ctx = StageContext(loader=lambda: toy_vlm, output_dir=out, sam_loader=sam)
    run_stage(make_cfg("stage=evaluate", f"output_dir={out}", f"data_file={data}", f"heads_file={out / 'heads.json'}",
                       "max_new_tokens=2", *overrides), ctx)
    return out, json.loads((out / "metrics.json").read_text())


def _recompute(out, rows, method):
    m = MaskMetrics()
    for row in rows:
        pred = read_mask_png(out / "masks" / method / f"{file_stem(row.id)}.png")
        gt = read_mask_png(out / "masks" / "ground_truth" / f"{file_stem(row.id)}.png")
        assert pred.shape == gt.shape
        w, h = pred.shape[1], pred.shape[0]
        assert (gt == decode_mask(row.mask, (w, h))).all()
        m.add(pred, gt)
    return m.summary()


def test_default_output_writes_no_masks(collected, tmp_path, toy_vlm):
    from lab.report.rundata import build_run_data

    out, metrics = _evaluate(collected, tmp_path, toy_vlm)
    assert not (out / "masks").exists()
    assert not any("pred_mask" in s for s in build_run_data(out)["samples"])
    assert "mask" not in metrics["selected_heads"] and "masks" not in metrics["settings"]


def test_map_masks_recomputable_from_the_pngs(collected, tmp_path, toy_vlm):
    out, metrics = _evaluate(collected, tmp_path, toy_vlm, "grounding.output=both")
    rows = load_rows(DATA)
    for method in ("selected_heads", "all_heads_mean"):
        again = _recompute(out, rows, method)
        for k, v in metrics[method]["mask"].items():
            assert again[k] == pytest.approx(v), (method, k)
    draws = [_recompute(out, rows, f"random_heads_{i}") for i in range(5)]
    assert metrics["random_heads"]["mask"]["miou"] == pytest.approx(np.mean([d["miou"] for d in draws]))
    assert metrics["selected_heads"]["mask"]["miou"] > metrics["random_heads"]["mask"]["miou"]
    with open(out / "masks" / "masks.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 16 * 7
    from lab.report.rundata import build_run_data

    page = build_run_data(out)
    assert all(s["pred_mask"].startswith("data:image/png;base64,") and "gt_mask" in s for s in page["samples"])
    assert metrics["selected_heads"]["acc@0.5"] == pytest.approx(  # the box metrics are today's
        _evaluate(collected, tmp_path / "b", toy_vlm)[1]["selected_heads"]["acc@0.5"])


def test_output_mask_needs_no_bbox(collected, tmp_path, toy_vlm):
    rows = [json.loads(x) for x in DATA.read_text().splitlines()]
    data = tmp_path / "nobox.jsonl"
    images = DATA.parent
    data.write_text("".join(json.dumps({**{k: v for k, v in r.items() if k != "bbox"},
                                        "image_path": str(images / r["image_path"])}) + "\n" for r in rows))
    out, metrics = _evaluate(collected, tmp_path, toy_vlm, "grounding.output=mask", data=data)
    assert metrics["selected_heads"]["mask"]["n"] == 16
    # the box target is the mask's tight box, which for the toy world is the row's bbox
    boxed = _evaluate(collected, tmp_path / "b", toy_vlm)[1]
    assert metrics["selected_heads"]["miou"] == pytest.approx(boxed["selected_heads"]["miou"])


def test_mask_of_the_wrong_size_is_one_line_naming_the_row(collected, tmp_path, toy_vlm):
    rows = [json.loads(x) for x in DATA.read_text().splitlines()]
    rows[3]["mask"] = {"size": [10, 10], "counts": [100]}
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps({**r, "image_path": str(DATA.parent / r["image_path"])}) + "\n" for r in rows))
    with pytest.raises(UserError) as e:
        _evaluate(collected, tmp_path, toy_vlm, "grounding.output=both", data=data)
    assert str(e.value).startswith(f"{data}:4: ") and "\n" not in str(e.value)


def test_refine_sam_boxes_come_from_the_sam_masks(collected, tmp_path, toy_vlm):
    seg = tiny_sam()
    calls = []

    def loader():
        calls.append(1)
        return seg

    out, metrics = _evaluate(collected, tmp_path, toy_vlm, "grounding.output=both", "grounding.refine=sam",
                             "grounding.sam.prompt=box+points", "grounding.sam.num_points=2", sam=loader)
    assert len(calls) == 1
    assert {"mask", "map_box"} <= set(metrics["selected_heads"])
    assert metrics["settings"]["masks"]["refine"] == "sam"
    with open(out / "masks" / "masks.csv") as f:
        lines = [r for r in csv.DictReader(f) if r["method"] == "selected_heads"]
    for r in lines:
        pred = read_mask_png(out / "masks" / "selected_heads" / f"{file_stem(r['id'])}.png")
        assert [float(r[k]) for k in ("box_x", "box_y", "box_w", "box_h")] == list(mask_box_xywh(pred))
        assert np.isfinite(float(r["sam_score"]))
    rows = load_rows(DATA)
    assert _recompute(out, rows, "selected_heads")["miou"] == pytest.approx(metrics["selected_heads"]["mask"]["miou"])


def test_refine_sam_without_a_loader_is_one_line(collected, tmp_path, toy_vlm):
    with pytest.raises(UserError, match="grounding.refine=sam needs a SAM model"):
        _evaluate(collected, tmp_path, toy_vlm, "grounding.refine=sam")


@pytest.mark.parametrize("bad", ["grounding.output=masks", "grounding.refine=sam2", "grounding.sam.prompt=point",
                                 "grounding.sam.num_points=0", "grounding.sam.multimask=all", "grounding.mask_edges=soft"])
def test_bad_settings_are_refused(bad):
    from utils.settings.reading import check_config

    with pytest.raises(UserError, match=bad.split("=")[0]):
        check_config(make_cfg(bad))


def test_masks_csv_neutralises_formula_ids(collected, tmp_path, toy_vlm):
    """Ids a spreadsheet would run (=HYPERLINK(...), +cmd|...) land in masks.csv with a leading '."""
    rows = [json.loads(x) for x in DATA.read_text().splitlines()][:3]
    hostile = ['=HYPERLINK("http://x.invalid","click")', "+cmd|' /C calc'!A0", "-0.5"]
    data = tmp_path / "hostile.jsonl"
    data.write_text("".join(json.dumps({**r, "id": i, "image_path": str(DATA.parent / r["image_path"])}) + "\n"
                            for r, i in zip(rows, hostile)))
    out, _ = _evaluate(collected, tmp_path, toy_vlm, "grounding.output=mask", "grounding.random_draws=0", data=data)
    with open(out / "masks" / "masks.csv", newline="") as f:
        ids = {line["id"] for line in csv.DictReader(f)}
    assert ids == {"'" + hostile[0], "'" + hostile[1], "-0.5"}


def test_empty_masks_fail_their_row_and_bbox_disagreement_is_counted(collected, tmp_path, toy_vlm, capsys):
    """A polygon entirely outside the image and an all-zero RLE fail their rows (manifest, metrics.json),
    as a box outside the image does; a bbox with no overlap with its mask's box is counted and printed."""
    from lab.analysis.grounding import iou

    rows = [json.loads(x) for x in DATA.read_text().splitlines()]
    rows[0]["mask"] = [[200, 200, 250, 200, 250, 250]]
    h, w = rows[1]["mask"]["size"]
    rows[1]["mask"] = {"size": [h, w], "counts": [h * w]}
    far = [0.0, 0.0, 4.0, 4.0]
    h, w = rows[2]["mask"]["size"]
    assert iou(far, mask_box_xywh(decode_mask(rows[2]["mask"], (w, h)))) == 0.0
    rows[2]["bbox"] = far
    data = tmp_path / "bad_masks.jsonl"
    data.write_text("".join(json.dumps({**r, "image_path": str(DATA.parent / r["image_path"])}) + "\n" for r in rows))
    out, metrics = _evaluate(collected, tmp_path, toy_vlm, "grounding.output=both", data=data)
    printed = capsys.readouterr().out
    assert [e["id"] for e in metrics["masks_empty"]] == ["toy_0000", "toy_0001"]
    assert "polygon(s) lie entirely outside the " in metrics["masks_empty"][0]["reason"]
    assert metrics["mask_bbox_disagree"] == {"count": 1, "ids": ["toy_0002"]}
    assert metrics["selected_heads"]["mask"]["n"] == 14 and metrics["selected_heads"]["n"] == 14 and metrics["failed"] == 2
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {m["id"] for m in manifest if m.get("status") == "failed" and m.get("stage") == "evaluate"} == {"toy_0000", "toy_0001"}
    assert "2 row(s) not scored, their mask is empty" in printed and "1 row(s) whose bbox does not overlap" in printed
    assert not (out / "masks" / "ground_truth" / "toy_0000.png").exists()
