"""Tests for lab.analysis.grounding: geometry on non-square images (pad and crop), metrics, baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from lab.analysis.grounding import (
    IOU_THRESHOLDS,
    LMMS_EVAL_ACC_AT,
    GroundingMetrics,
    benchmark_metrics,
    benchmark_table,
    combine_head_maps,
    coverage_mask,
    fill_convex_hull,
    iou,
    predict_box,
    random_head_sets,
    summarize,
)
from lab.analysis.masks import region_mask
from lab.analysis.record_numbers import score
from utils.contracts.layout import square_grid_layout

SIZES = [(200, 120), (90, 160)]
GRIDS = [24, 6]
MODES = ["pad", "crop"]


def pad_layout(W: int, H: int, G: int):
    """Original LLaVA-1.5: pad to a centred square of side max(W, H), then resize."""
    M = max(W, H)
    ox, oy = (M - W) // 2, (M - H) // 2
    return square_grid_layout((W, H), range(G * G), side=G, box=(-ox, -oy, M - ox, M - oy), aspect="pad")


def crop_layout(W: int, H: int, G: int):
    """llava-hf: shortest edge resized, centre crop: the grid covers a central min(W, H) square."""
    m = min(W, H)
    return square_grid_layout((W, H), range(G * G), side=G, box=((W - m) / 2, (H - m) / 2, (W + m) / 2, (H + m) / 2), aspect="crop")


def make_layout(mode: str, W: int, H: int, G: int):
    return pad_layout(W, H, G) if mode == "pad" else crop_layout(W, H, G)


def covered_rect(layout):
    """Part of the image the grid covers: (x0, y0, x1, y1)."""
    W, H = layout.image_size
    x0, y0, x1, y1 = layout.grid().box
    return max(x0, 0.0), max(y0, 0.0), min(x1, W), min(y1, H)


def truth_rect(layout):
    """An off-centre rectangle (bottom-left-ish) inside the covered part of the image."""
    x0, y0, x1, y1 = covered_rect(layout)
    w, h = x1 - x0, y1 - y0
    return x0 + 0.15 * w, y0 + 0.55 * h, x0 + 0.45 * w, y0 + 0.85 * h


def hot_map(layout, rect, rng=None, noise=0.01, peak=False):
    """1 on every cell that covers part of `rect` (found with layout.pixel_to_cell), small noise
    elsewhere; `peak` adds 1 on the cell holding the rectangle's centre (for the pointing game)."""
    g = layout.grid()
    x0, y0, x1, y1 = rect
    eps = 1e-6
    r0, c0 = layout.pixel_to_cell(x0, y0)
    r1, c1 = layout.pixel_to_cell(x1 - eps, y1 - eps)
    m = np.zeros((g.rows, g.cols))
    if rng is not None:
        m += noise * rng.random((g.rows, g.cols))
    m[r0 : r1 + 1, c0 : c1 + 1] = 1.0
    if peak:
        m[layout.pixel_to_cell((x0 + x1) / 2, (y0 + y1) / 2)] += 1.0
    return m, (r0, c0, r1 + 1, c1 + 1)


def assert_box_close(box_xywh, rect, cell_wh, tol_cells=1.0):
    x, y, w, h = box_xywh
    cw, ch = cell_wh
    tx0, ty0, tx1, ty1 = rect
    assert abs(x - tx0) <= tol_cells * cw + 1e-6, (box_xywh, rect, cell_wh)
    assert abs(y - ty0) <= tol_cells * ch + 1e-6, (box_xywh, rect, cell_wh)
    assert abs((x + w) - tx1) <= tol_cells * cw + 1e-6, (box_xywh, rect, cell_wh)
    assert abs((y + h) - ty1) <= tol_cells * ch + 1e-6, (box_xywh, rect, cell_wh)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("W,H", SIZES)
@pytest.mark.parametrize("G", GRIDS)
@pytest.mark.parametrize("mode", MODES)
def test_predict_box_recovers_hot_rectangle(mode, G, W, H):
    lay = make_layout(mode, W, H, G)
    rect = truth_rect(lay)
    m, gb = hot_map(lay, rect, np.random.default_rng(0))
    g = predict_box(m[None], lay, sigma=0.0)
    assert g.grid_box == gb
    assert_box_close(g.box_xywh, rect, lay.grid().cell_size)
    # the cells cover the truth: the box contains it
    x, y, w, h = g.box_xywh
    assert x <= rect[0] + 1e-6 and y <= rect[1] + 1e-6 and x + w >= rect[2] - 1e-6 and y + h >= rect[3] - 1e-6
    # peak lies in the hot rectangle's cells
    assert gb[0] <= g.peak_cell[0] < gb[2] and gb[1] <= g.peak_cell[1] < gb[3]
    assert g.grid_mask.shape == (G, G) and g.grid_mask.dtype == bool
    assert g.combined.shape == (G, G)


@pytest.mark.parametrize("W,H", SIZES)
@pytest.mark.parametrize("mode", MODES)
def test_predict_box_with_default_smoothing_stays_near(mode, W, H):
    """Paper settings (sigma=1, mean threshold) on the 24x24 grid: smoothing bleeds the region by
    up to ~2 cells around a compact target; the box must stay within that."""
    lay = make_layout(mode, W, H, 24)
    rect = truth_rect(lay)
    m, _ = hot_map(lay, rect, np.random.default_rng(1))
    g = predict_box(np.stack([m, 0.5 * m]), lay)  # two heads, default sigma=1
    assert_box_close(g.box_xywh, rect, lay.grid().cell_size, tol_cells=2.0)


@pytest.mark.parametrize("W,H", SIZES)
@pytest.mark.parametrize("mode", MODES)
def test_naive_scaling_would_fail_these_checks(mode, W, H):
    """The geometry checks can fail: mapping cells with a naive W/cols, H/rows scaling puts the
    same grid box more than a cell away from the truth in both modes."""
    lay = make_layout(mode, W, H, 24)
    rect = truth_rect(lay)
    _, (r0, c0, r1, c1) = hot_map(lay, rect)
    naive = (c0 * W / 24, r0 * H / 24, (c1 - c0) * W / 24, (r1 - r0) * H / 24)
    with pytest.raises(AssertionError):
        assert_box_close(naive, rect, lay.grid().cell_size)


@pytest.mark.parametrize("W,H", SIZES)
@pytest.mark.parametrize("G", GRIDS)
def test_pad_boxes_never_leave_the_image(G, W, H):
    lay = pad_layout(W, H, G)
    rng = np.random.default_rng(2)
    corners = [(0, 0, 10, 10), (W - 10, H - 10, W, H), (0, H - 10, 10, H), (W - 10, 0, W, 10)]
    maps = [hot_map(lay, c)[0] for c in corners]
    # hot padding cells (attention sinks in the grey padding) and random maps too
    pad_hot = np.zeros((G, G))
    pad_hot[0, :] = 1.0
    pad_hot[-1, :] = 1.0
    maps += [pad_hot] + [rng.random((G, G)) for _ in range(5)]
    for m in maps:
        for sigma in (0.0, 1.0):
            x, y, w, h = predict_box(m[None], lay, sigma=sigma).box_xywh
            assert 0 <= x and 0 <= y and w >= 0 and h >= 0
            assert x + w <= W + 1e-9 and y + h <= H + 1e-9


@pytest.mark.parametrize("W,H", SIZES)
def test_crop_boxes_stay_in_coverage(W, H):
    lay = crop_layout(W, H, 24)
    cx0, cy0, cx1, cy1 = covered_rect(lay)
    rng = np.random.default_rng(3)
    for _ in range(5):
        x, y, w, h = predict_box(rng.random((2, 24, 24)), lay).box_xywh
        assert cx0 - 1e-9 <= x and x + w <= cx1 + 1e-9 and cy0 - 1e-9 <= y and y + h <= cy1 + 1e-9


def test_image_cells_only_ignores_padding_sink():
    lay = pad_layout(200, 120, 24)  # rows 0..7 and 16..23... are padding: image spans y in [0, 120)
    m = np.zeros((24, 24))
    m[0, :] = 10.0  # a sink in the top padding row
    rect = truth_rect(lay)
    hot, gb = hot_map(lay, rect, peak=True)
    m += hot
    g_all = predict_box(m, lay)
    assert g_all.peak_cell[0] == 0  # the padding row wins by default
    g_img = predict_box(m, lay, image_cells_only=True)
    assert g_img.grid_box == gb
    gt = (rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1])
    assert not score(g_all, gt).hit  # pointing as stage=evaluate scores it: the peak in the gt box
    assert score(g_img, gt).hit


def test_largest_region_wins_over_stronger_small_one():
    lay = pad_layout(200, 120, 24)
    m = np.zeros((24, 24))
    m[10:14, 3:9] = 1.0  # 24 cells
    m[10, 18] = 5.0  # one strong cell, separate
    g = predict_box(m, lay)
    assert g.grid_box == (10, 3, 14, 9)
    assert g.peak_cell == (10, 18)
    g_peak = predict_box(m, lay, region="peak")
    assert g_peak.grid_box == (10, 18, 11, 19)
    g_allr = predict_box(m, lay, region="all")
    assert g_allr.grid_box == (10, 3, 14, 19)


def test_diagonal_cells_are_one_region_8_connectivity():
    lay = pad_layout(90, 160, 6)
    m = np.zeros((6, 6))
    m[1, 1] = m[2, 2] = m[3, 3] = 1.0  # diagonal chain: one 8-connected region
    m[5, 0] = m[5, 1] = 1.0  # two cells, 4-connected
    g = predict_box(m, lay)
    assert g.grid_box == (1, 1, 4, 4)


def test_hull_is_superset_of_largest_region_and_same_box():
    lay = crop_layout(200, 120, 24)
    m = np.zeros((24, 24))
    m[4:16, 4:7] = 1.0  # an L shape
    m[13:16, 7:16] = 1.0
    plain = predict_box(m, lay)
    hull = predict_box(m, lay, hull=True)
    assert (hull.grid_mask | plain.grid_mask == hull.grid_mask).all()  # superset
    assert hull.grid_mask.sum() > plain.grid_mask.sum()  # the L's notch gets filled
    assert hull.grid_box == plain.grid_box
    # the corner far from the L's diagonal is not filled
    assert not hull.grid_mask[4, 15]
    # convex input: hull adds nothing
    sq = np.zeros((24, 24), bool)
    sq[3:8, 10:14] = True
    assert (fill_convex_hull(sq) == sq).all()


def test_combined_2d_map_is_not_smoothed_and_combine_sums():
    rng = np.random.default_rng(4)
    maps = rng.random((3, 6, 6))
    assert np.allclose(combine_head_maps(maps, sigma=0), maps.sum(0))
    sm = combine_head_maps(maps, sigma=1.0)
    assert np.isclose(sm.sum(), maps.sum())  # reflect-mode smoothing keeps the mass
    assert sm.std() < maps.sum(0).std()
    assert np.isclose(combine_head_maps(maps, sigma=1.0, normalize="sum").sum(), 3.0)
    assert np.isclose(combine_head_maps(maps, sigma=0, normalize="max").max(), combine_head_maps(maps, sigma=0, normalize="max").max())
    lay = pad_layout(90, 160, 6)
    g = predict_box(maps.sum(0), lay)
    assert np.allclose(g.combined, maps.sum(0))
    with pytest.raises(ValueError):
        combine_head_maps(maps, normalize="bogus")
    with pytest.raises(ValueError):
        predict_box(np.zeros((5, 5)), lay)  # wrong grid size


def test_flat_map_gives_whole_covered_area():
    lay = crop_layout(200, 120, 6)
    g = predict_box(np.ones((6, 6)), lay)
    x, y, w, h = g.box_xywh
    assert (x, y, x + w, y + h) == pytest.approx(covered_rect(lay))


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("W,H", SIZES)
@pytest.mark.parametrize("G", GRIDS)
def test_region_mask_shape_and_crop_outside_is_false(G, W, H):
    lay = crop_layout(W, H, G)
    m = np.zeros((G, G))
    m[:, 0] = 1.0  # hot on the grid's first column / row edge: right against the cropped-out part
    m[0, :] = 1.0
    mask = region_mask(predict_box(m, lay), lay)
    assert mask.shape == (H, W) and mask.dtype == bool
    assert mask.any()
    cov = coverage_mask(lay)
    assert not mask[~cov].any()
    cx0, cy0, cx1, cy1 = covered_rect(lay)
    ys, xs = np.nonzero(mask)
    assert xs.min() >= math.floor(cx0) and xs.max() < math.ceil(cx1)
    assert ys.min() >= math.floor(cy0) and ys.max() < math.ceil(cy1)
    # the outside strips really exist for these sizes
    assert (~cov).sum() > 0


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def test_iou_known_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 2, 2), (1, 1, 2, 2)) == pytest.approx(1 / 7)
    assert iou((0, 0, 4, 4), (1, 1, 2, 2)) == pytest.approx(4 / 16)
    assert iou((0, 0, 2, 2), (2, 0, 2, 2)) == 0.0  # touching
    assert iou((0, 0, 2, 2), (5, 5, 2, 2)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert iou((10.5, 20.0, 5.0, 4.0), (12.5, 22.0, 5.0, 4.0)) == pytest.approx(6 / 34)
    assert iou((1, 2, 3, 4), (0, 0, 10, 10)) == iou((0, 0, 10, 10), (1, 2, 3, 4))


@pytest.mark.parametrize("mode", MODES)
def test_pointing_through_score(mode):
    lay = make_layout(mode, 200, 120, 24)
    rect = truth_rect(lay)
    gt = (rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1])
    m = np.zeros((24, 24))
    r, c = lay.pixel_to_cell((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)
    m[r, c] = 1.0
    assert score(predict_box(m, lay), gt).hit
    m2 = np.zeros((24, 24))
    r2, c2 = lay.pixel_to_cell(rect[2] + 20, rect[1] - 20)
    m2[r2, c2] = 1.0
    assert not score(predict_box(m2, lay), gt).hit


def test_summarize_and_metrics_accumulator():
    s = summarize([0.6, 0.4, 0.5], [True, False, True])
    assert s["acc@0.5"] == pytest.approx(2 / 3)
    assert s["miou"] == pytest.approx(0.5)
    assert s["pointing"] == pytest.approx(2 / 3)
    assert s["n"] == 3
    e = summarize([], [])
    assert e["n"] == 0 and math.isnan(e["miou"]) and math.isnan(e["acc@0.5"])
    assert math.isnan(summarize([0.7])["pointing"])
    acc = GroundingMetrics()
    acc.add((0, 0, 10, 10), (0, 0, 10, 10), hit=True)
    acc.add((0, 0, 10, 10), (20, 20, 5, 5), hit=False)
    out = acc.summary()
    assert out == {"acc@0.5": 0.5, "miou": 0.5, "pointing": 0.5, "n": 2}
    lay = pad_layout(200, 120, 6)
    rect = truth_rect(lay)
    m, _ = hot_map(lay, rect, peak=True)
    gt = (rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1])
    v = acc.add_grounding(predict_box(m, lay), gt)
    assert v > 0.3
    assert acc.summary()["n"] == 3 and acc.summary()["pointing"] == pytest.approx(2 / 3)


def test_random_head_sets_reproducible_and_valid():
    a = random_head_sets(32, 32, 10, 5, seed=7, exclude_layers=(0, 1))
    b = random_head_sets(32, 32, 10, 5, seed=7, exclude_layers=(0, 1))
    c = random_head_sets(32, 32, 10, 5, seed=8, exclude_layers=(0, 1))
    assert a == b and a != c
    assert len(a) == 5
    for s in a:
        assert len(s) == 10 and len(set(s)) == 10
        for l, h in s:
            assert isinstance(l, int) and isinstance(h, int)
            assert 2 <= l < 32 and 0 <= h < 32
    d = random_head_sets(2, 3, 5, 3, seed=0, exclude_heads=[(0, 0)])
    assert all((0, 0) not in s for s in d)
    with pytest.raises(ValueError):
        random_head_sets(2, 2, 5, 1, seed=0)


# ---------------------------------------------------------------------------------------------
# the numbers other tools report (lmms-eval refcoco_bbox_rec, evaluate_boxes.py)
# ---------------------------------------------------------------------------------------------
IMAGE = (640, 480)  # binary fractions of these sizes stay exact through pixels and back


def _pixels(xyxy, size=IMAGE):
    """A normalized [x1, y1, x2, y2] box (as lmms-eval writes them) as our pixel [x, y, w, h]."""
    W, H = size
    return (xyxy[0] * W, xyxy[1] * H, (xyxy[2] - xyxy[0]) * W, (xyxy[3] - xyxy[1]) * H)


# lmms-eval hand-computed cases (gt, pred normalized xyxy; None = parse failure), IoU, ACC passes, centre hit;
# checked by running lmms-eval's utils_rec.py functions (/tmp/research/refcoco_metrics.md)
LMMS_CASES = [
    ([0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], 1 / 7, {0.1}, True),  # centre on the gt corner: inclusive
    ([0, 0, 1, 0.5], [0, 0, 0.5, 0.5], 0.5, {0.1, 0.3, 0.5}, True),  # IoU exactly 0.5: >=
    ([0.25, 0.25, 0.75, 0.75], None, 0.0, set(), False),  # parse failure -> [0, 0, 0, 0]
    ([0.25, 0.25, 0.75, 0.75], [0.375, 0.375, 0.625, 0.625], 0.25, {0.1}, True),
    ([0, 0, 1, 1], [0, 0, 0.75, 1], 0.75, {0.1, 0.3, 0.5, 0.7}, True),
]


@pytest.mark.parametrize("gt,pred,want_iou,passes,center", LMMS_CASES)
def test_lmms_eval_hand_cases_one_by_one(gt, pred, want_iou, passes, center):
    out = benchmark_metrics([None if pred is None else _pixels(pred)], [_pixels(gt)], [IMAGE])["lmms_eval"]
    assert out["IoU"] == pytest.approx(want_iou, abs=1e-12)
    assert {t for t in LMMS_EVAL_ACC_AT if out[f"ACC@{t:g}"] == 1.0} == passes
    assert out["Center_ACC"] == float(center)


def test_lmms_eval_hand_cases_aggregate_and_evaluate_boxes_case():
    preds = [None if p is None else _pixels(p) for _, p, *_ in LMMS_CASES]
    out = benchmark_metrics(preds, [_pixels(g) for g, *_ in LMMS_CASES], [IMAGE] * len(LMMS_CASES))
    want = {"IoU": (1 / 7 + 0.5 + 0 + 0.25 + 0.75) / 5, "ACC@0.1": 0.8, "ACC@0.3": 0.4, "ACC@0.5": 0.4,
            "ACC@0.7": 0.2, "ACC@0.9": 0.0, "Center_ACC": 0.8}
    assert list(out["lmms_eval"]) == list(want)  # lmms-eval's COCO_REC_METRICS, in its order
    assert out["lmms_eval"] == pytest.approx(want, abs=1e-12)
    assert out["iou_thresholds"] == pytest.approx({"0.25": 0.6, "0.5": 0.4, "0.75": 0.2})
    # evaluate_boxes.py's pixel case: gt xywh [10, 20, 30, 40], pred xyxy [20, 30, 50, 70]: IoU 1/3
    one = benchmark_metrics([(20, 30, 30, 40)], [(10, 20, 30, 40)], [(100, 100)])
    assert one["iou_thresholds"] == {"0.25": 1.0, "0.5": 0.0, "0.75": 0.0}
    assert one["lmms_eval"]["IoU"] == pytest.approx(1 / 3)
    empty = benchmark_metrics([], [], [])
    assert all(math.isnan(v) for part in empty.values() for v in part.values())
    with pytest.raises(ValueError):
        benchmark_metrics([(0, 0, 1, 1)], [(0, 0, 1, 1)], [(0, 10)])


_coord = st.integers(0, 200)


@st.composite
def _sample(draw):
    W, H = draw(st.integers(8, 400)), draw(st.integers(8, 400))
    gx, gy = draw(st.integers(0, W - 1)), draw(st.integers(0, H - 1))
    gt = (gx, gy, draw(st.integers(1, W - gx)), draw(st.integers(1, H - gy)))
    pred = draw(st.one_of(st.none(), st.tuples(_coord, _coord, _coord, _coord)))
    return pred, gt, (W, H)


@settings(max_examples=60, deadline=None)
@given(st.lists(_sample(), min_size=1, max_size=12))
def test_acc_is_monotone_and_the_share_of_iou_at_or_above(samples):
    preds, gts, sizes = zip(*samples)
    out = benchmark_metrics(preds, gts, sizes)
    lm = out["lmms_eval"]
    accs = [lm[f"ACC@{t:g}"] for t in LMMS_EVAL_ACC_AT]
    assert all(a >= b for a, b in zip(accs, accs[1:]))  # non-increasing in t
    per = [benchmark_metrics([p], [g], [s])["lmms_eval"]["IoU"] for p, g, s in samples]
    for t in LMMS_EVAL_ACC_AT:
        assert lm[f"ACC@{t:g}"] == pytest.approx(np.mean([v >= t for v in per]))
    assert lm["IoU"] == pytest.approx(np.mean(per))
    pixel = [iou((0, 0, 0, 0) if p is None else p, g) for p, g, _ in samples]
    assert per == pytest.approx(pixel, abs=1e-9)  # normalizing changes nothing but rounding
    for t in IOU_THRESHOLDS:
        assert out["iou_thresholds"][f"{t:g}"] == pytest.approx(np.mean([v >= t for v in pixel]))


def test_accumulator_adds_them_only_with_image_sizes_and_per_subset():
    plain, sized = GroundingMetrics(), GroundingMetrics()
    cases = [(_pixels(p) if p else (0.0, 0.0, 0.0, 0.0), _pixels(g)) for g, p, *_ in LMMS_CASES]
    for pred, gt in cases:
        plain.add(pred, gt, hit=True)
        sized.add(pred, gt, hit=True, image_size=IMAGE)
    assert set(plain.summary()) == {"acc@0.5", "miou", "pointing", "n"}  # without sizes: what it always gave
    s = sized.summary()
    assert {k: s[k] for k in plain.summary()} == plain.summary()
    assert s["lmms_eval"]["ACC@0.5"] == 0.4 and s["iou_thresholds"]["0.5"] == s["acc@0.5"]
    part = sized.subset([1, 4]).summary()
    assert part["n"] == 2 and part["lmms_eval"]["ACC@0.7"] == 0.5 and part["lmms_eval"]["IoU"] == pytest.approx(0.625)
    table = benchmark_table([("selected_heads", s), ("no sizes", plain.summary())])
    assert table.splitlines()[0].split()[2:] == [*s["lmms_eval"], "IoU>=0.25", "IoU>=0.5", "IoU>=0.75"]
    assert len(table.splitlines()) == 2 and table.splitlines()[1].split()[1:] == [f"{v:.3f}" for v in [*s["lmms_eval"].values(), *s["iou_thresholds"].values()]]
    assert benchmark_table([("no sizes", plain.summary())]) == ""
