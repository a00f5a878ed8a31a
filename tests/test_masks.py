"""Referring segmentation from the combined map (lab/analysis/masks.py) and ground-truth masks (utils/masks.py).

Geometry in a world whose answer is known by construction: an object drawn on the original image,
a map planted on the grid cells that cover it (through the record's layout, as a perfect head would
attend), and the mask that comes back must cover the object (IoU >= 0.9) under every layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco

from lab.analysis import grounding as G
from lab.analysis import masks as M
from llava.families.layouts import anyres_layout, crop_box, llava15_layout, resize_grid_layout
from utils.data import load_rows
from utils.errors import UserError
from utils.masks import _rle_counts_from_string, check_mask, decode_mask, encode_mask, mask_box_xywh

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def _layouts():
    pad = llava15_layout((300, 200), range(576), 24, "pad")
    crop = llava15_layout((300, 200), range(576), 24, "crop", {"shortest_edge": 336}, {"height": 336, "width": 336})
    tall = llava15_layout((180, 420), range(576), 24, "pad")
    side = 24  # LLaVA-NeXT: 24 x 24 features per 336 px crop
    from llava.families.layouts import anyres_geometry

    geo = anyres_geometry((500, 300), side, 336, PINPOINTS)
    n = side * side + geo["rows"] * (geo["cols"] + 1)
    anyres = anyres_layout((500, 300), range(n), side, 336, PINPOINTS)
    resize = resize_grid_layout((320, 240), range(12 * 16), 12, 16, "qwen2_vl")
    return {"pad": pad, "crop": crop, "pad_tall": tall, "anyres": anyres, "resize": resize}


LAYOUTS = _layouts()


def _object_and_map(layout, kind: str, rng):
    """An object (pixel mask) inside the covered part of the image, the per-cell share of it
    (a perfect head's map) and a smaller distractor blob elsewhere."""
    g = layout.grid()
    W, H = layout.image_size
    cover = G.coverage_mask(layout)
    ys, xs = np.nonzero(cover)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    Y, X = np.mgrid[0:H, 0:W] + 0.5
    cx, cy = x0 + 0.4 * (x1 - x0), y0 + 0.45 * (y1 - y0)
    rx, ry = 0.3 * (x1 - x0), 0.3 * (y1 - y0)
    if kind == "rect":
        obj = (abs(X - cx) <= rx) & (abs(Y - cy) <= ry)
    else:
        obj = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 <= 1.0
    obj &= cover
    # per-cell share of the object: pixel -> its cell through the layout
    share = np.zeros((g.rows, g.cols))
    count = np.zeros((g.rows, g.cols))
    for yy in range(0, H, 2):
        for xx in range(0, W, 2):
            cell = layout.pixel_to_cell(xx + 0.5, yy + 0.5)
            if cell is not None:
                count[cell] += 1
                share[cell] += obj[yy, xx]
    share = np.divide(share, count, out=np.zeros_like(share), where=count > 0)
    noisy = share + 0.02 * rng.random(share.shape)
    r, c = g.rows - 2, g.cols - 2  # a weak one-cell distractor in a far corner
    noisy[r, c] += 0.6
    return obj, noisy


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("kind", ["rect", "ellipse"])
def test_planted_map_gives_the_object_mask(name, kind):
    layout = LAYOUTS[name]
    obj, planted = _object_and_map(layout, kind, np.random.default_rng(0))
    g = G.predict_box(planted, layout, threshold="frac:0.5")
    mask = M.region_mask(g, layout)
    assert mask.shape == obj.shape[:2]
    iou = M.mask_iou(mask, obj)
    assert iou >= 0.9, (name, kind, iou)
    # one region: with edges=cells the mask's tight box is the REC box (to the pixel)
    cells = M.region_mask(g, layout, edges="cells")
    assert M.mask_iou(cells, obj) > 0.7
    assert not (mask & ~cells).any()  # never beyond the region
    bx, by, bw, bh = mask_box_xywh(cells)
    assert np.allclose((bx, by, bx + bw, by + bh), g.box_xyxy, atol=1.0), (mask_box_xywh(mask), g.box_xywh)


def test_wrong_geometry_would_fail():
    """The check above can fail: the pad layout's region painted as if the grid were stretched
    over the image (the release's geometry) misses the object."""
    layout = LAYOUTS["pad"]
    obj, planted = _object_and_map(layout, "rect", np.random.default_rng(0))
    g = G.predict_box(planted, layout, threshold="frac:0.5")
    stretched = resize_grid_layout(layout.image_size, range(576), 24, 24, "stretch")
    assert M.mask_iou(M.region_mask(g, stretched), obj) < 0.8


def test_paper_threshold_and_hull_keep_box_and_mask_together():
    layout = LAYOUTS["crop"]
    obj, planted = _object_and_map(layout, "ellipse", np.random.default_rng(1))
    for hull in (False, True):
        g = G.predict_box(planted[None], layout, sigma=1.0, hull=hull)
        mask = M.region_mask(g, layout, hull=hull)
        assert M.mask_iou(mask, obj) > 0.5
        if not hull:  # hull changes the mask, never the box
            bx, by, bw, bh = mask_box_xywh(M.region_mask(g, layout, edges="cells"))
            assert np.allclose((bx, by, bx + bw, by + bh), g.box_xyxy, atol=1.0)


def test_sam_prompts_from_the_region():
    layout = LAYOUTS["pad"]
    obj, planted = _object_and_map(layout, "rect", np.random.default_rng(0))
    g = G.predict_box(planted, layout, threshold="frac:0.5")
    p = M.sam_prompts(g, layout, "box+points", 3)
    assert p["box"] == pytest.approx(list(g.box_xyxy))
    assert len(p["points"]) == 3
    for x, y in p["points"]:
        assert obj[int(y), int(x)]  # positive points land on the object
    top = M.top_cells(g, 3)
    assert top[0] == tuple(np.unravel_index(np.argmax(np.where(g.grid_mask, g.combined, -np.inf)), g.combined.shape))
    assert M.sam_prompts(g, layout, "box", 3)["points"] is None
    assert M.sam_prompts(g, layout, "points", 1)["box"] is None


def test_mask_metrics_by_hand():
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 px
    b = np.zeros((4, 4), bool)
    b[:2, :] = True  # 8 px
    m = M.MaskMetrics()
    assert m.add(a, b) == pytest.approx(0.5)
    assert m.add(b, b) == pytest.approx(1.0)
    s = m.summary()
    assert s["miou"] == pytest.approx(0.75)
    assert s["ciou"] == pytest.approx((4 + 8) / (8 + 8))
    assert (s["p@0.5"], s["p@0.7"], s["p@0.9"], s["n"]) == (1.0, 0.5, 0.5, 2)
    assert np.isnan(M.MaskMetrics().summary()["miou"])


def test_mask_png_roundtrip(tmp_path):
    m = np.random.default_rng(0).random((37, 53)) > 0.5
    p = M.write_mask_png(tmp_path / "a" / "x.png", m)
    assert (M.read_mask_png(p) == m).all()


# ---- ground-truth masks: RLE and polygons --------------------------------------------------

masks_st = st.integers(1, 24).flatmap(lambda h: st.integers(1, 24).flatmap(
    lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(lambda v: np.array(v).reshape(h, w))))


@settings(max_examples=60, deadline=None)
@given(masks_st)
def test_rle_roundtrip_and_pycocotools_agree(m):
    rle = encode_mask(m)
    assert check_mask(rle) is None
    h, w = m.shape
    assert (decode_mask(rle, (w, h)) == m).all()
    ref = coco.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
    assert (ref == m).all()
    counts = _rle_counts_from_string(rle["counts"])
    assert check_mask({"size": [h, w], "counts": counts}) is None
    assert (decode_mask({"size": [h, w], "counts": counts}, (w, h)) == m).all()
    assert mask_box_xywh(m) == tuple(float(v) for v in (coco.toBbox(coco.encode(np.asfortranarray(m.astype(np.uint8))))
                                                        if m.any() else (0, 0, 0, 0)))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=30), st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=111), max_size=30)),
       st.integers(1, 8), st.integers(1, 8))
def test_hostile_rle_strings_never_decode_to_garbage(s, h, w):
    err = check_mask({"size": [h, w], "counts": s})
    if err is None:
        m = decode_mask({"size": [h, w], "counts": s}, (w, h))
        assert m.shape == (h, w)
        assert (coco.decode({"size": [h, w], "counts": s.encode()}).astype(bool) == m).all()
    else:
        assert "\n" not in err and '"mask"' in err


@pytest.mark.parametrize("bad", [
    {"size": [4, 4]}, {"size": [4, 4], "counts": "", "x": 1}, {"size": [0, 4], "counts": [0]},
    {"size": [4, 4], "counts": [3, 3]}, {"size": [4, 4], "counts": [20, -4]}, {"size": [4, 4], "counts": [16.0]},
    {"size": [4, 4], "counts": ""}, {"size": [4, 4], "counts": "0"}, {"size": [4, True], "counts": [4]},
    [], [[1, 2, 3, 4]], [[1, 2, 3, 4, 5]], [[0, 0, 1, "a", 2, 2]], [[0, 0, 1, float("nan"), 2, 2]], "rle", 3, [3],
])
def test_bad_masks_get_one_line(bad):
    err = check_mask(bad)
    assert err and "\n" not in err


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 30), st.floats(0, 20)), min_size=3, max_size=8))
def test_polygons_decode_like_pycocotools(pts):
    poly = [[v for p in pts for v in p]]
    assert check_mask(poly) is None
    m = decode_mask(poly, (31, 21))
    ref = coco.decode(coco.merge(coco.frPyObjects(poly, 21, 31))).astype(bool)
    assert m.shape == (21, 31) and (m == ref).all()


def test_rle_size_must_match_the_image():
    rle = encode_mask(np.ones((5, 7), bool))
    with pytest.raises(ValueError, match="7x5"):
        decode_mask(rle, (5, 7))


def test_jsonl_bad_masks_each_named_nothing_lost(tmp_path):
    good = encode_mask(np.eye(4, dtype=bool))
    rows = [
        {"id": "a", "prompt": "p", "image_path": "x.png", "mask": good},
        {"id": "b", "prompt": "p", "image_path": "x.png", "mask": {"size": [4, 4], "counts": [3]}},
        {"id": "c", "prompt": "p", "image_path": "x.png", "mask": [[0, 0, 1, 1]]},
        {"id": "d", "prompt": "p", "image_path": "x.png", "mask": [[0, 0, 3, 0, 3, 3]]},
        {"id": "e", "prompt": "p", "image_path": "x.png", "mask": "rle"},
    ]
    f = tmp_path / "rows.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError) as e:
        load_rows(f)
    text = str(e.value)
    assert "3 bad line(s)" in text
    for line in (2, 3, 5):
        assert f"{f}:{line}: " in text
    assert f"{f}:1:" not in text and f"{f}:4:" not in text
    f.write_text("".join(json.dumps(r) + "\n" for r in (rows[0], rows[3])))
    ok = load_rows(f, require=("mask",))
    assert ok[0].mask == good and ok[1].mask == rows[3]["mask"]
    assert "mask" not in ok[0].meta() and "row_extra" not in ok[0].meta()  # records keep no mask


def test_toy_rows_carry_the_exact_drawn_pixels():
    from llava.toy.scenes import render_scene, sample_item

    rows = load_rows("examples/toy/toy_small.jsonl", require=("mask", "bbox"))
    for i, row in enumerate(rows[:6]):
        item = sample_item(1234 * 100_003 + i)
        _, masks = render_scene(item["scene"])
        truth = np.asarray(masks[item["target"]]) > 0
        W, H = item["scene"].width, item["scene"].height
        assert (decode_mask(row.mask, (W, H)) == truth).all()
        assert list(mask_box_xywh(truth)) == row.bbox


def test_mask_png_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    """Disk full while writing a mask PNG: one OSError, and neither a 0-byte temp file nor a part file stays."""
    import errno
    import os

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        M.write_mask_png(tmp_path / "gt" / "a.png", np.ones((4, 5), bool))
    assert os.listdir(tmp_path / "gt") == []
