"""Tests for the criteria, per-sample analysis, selection and writers on synthetic maps with known answers (fast, deterministic)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from lab import criteria
from lab.analysis import per_sample as analysis
from lab.analysis import across_samples as selection
from lab.analysis import visual_heads
from lab.runs import heads_files as writers
from utils.io import atomic_write_json, jsonable
from utils.settings.declarations import ElbowConfig, SelectionConfig
from utils.contracts.layout import square_grid_layout

LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# spatial entropy, scalar
# ---------------------------------------------------------------------------------------------
def test_one_blob_has_zero_entropy():
    a = np.zeros((8, 8))
    a[2:4, 3:6] = [[1.0, 2.0, 1.0], [2.0, 3.0, 2.0]]
    d = criteria.spatial_entropy_details(a)
    assert d.entropy == 0.0 and math.copysign(1.0, d.entropy) == 1.0  # no -0.0
    assert d.n_components == 1
    assert set(np.unique(d.labels)) == {0, 1}


def test_two_equal_blobs_give_ln2():
    a = np.zeros((8, 8))
    a[1:3, 1:3] = 1.0
    a[5:7, 5:7] = 1.0
    assert criteria.spatial_entropy(a) == pytest.approx(LN2, abs=1e-12)
    assert criteria.spatial_entropy_details(a).n_components == 2


def test_unequal_blobs_follow_mass_weights():
    a = np.zeros((10, 10))
    a[1, 1] = 3.0  # one cell, big mass
    a[6:9, 6:9] = 0.2  # nine cells, small mass each
    d = criteria.spatial_entropy_details(a)
    mean = a.mean()
    m1, m2 = 3.0 - mean, 9 * (0.2 - mean)
    p = np.array([m1, m2]) / (m1 + m2)
    assert d.n_components == 2
    assert d.entropy == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-12)
    # area weighting: sizes 1 and 9
    q = np.array([1.0, 9.0]) / 10.0
    assert criteria.spatial_entropy(a, component_weight="area") == pytest.approx(float(-(q * np.log(q)).sum()), rel=1e-12)
    assert criteria.spatial_entropy(a, component_weight="area") != pytest.approx(d.entropy)


def test_diagonal_neighbours_connect_only_with_8_connectivity():
    a = np.zeros((6, 6))
    a[1, 1] = 1.0
    a[2, 2] = 1.0
    assert criteria.spatial_entropy(a) == 0.0  # default 8-connectivity: one component
    assert criteria.spatial_entropy(a, connectivity=8) == 0.0
    assert criteria.spatial_entropy(a, connectivity=4) == pytest.approx(LN2)
    assert criteria.spatial_entropy_details(a, connectivity=4).n_components == 2
    assert criteria.spatial_entropy_details(a).n_components == 1
    e, n = criteria.spatial_entropy_batch(np.stack([a, a]))
    assert (n == 1).all() and (e == 0.0).all()
    e4, n4 = criteria.spatial_entropy_batch(np.stack([a, a]), connectivity=4)
    assert (n4 == 2).all() and np.allclose(e4, LN2)
    assert analysis.analyze_sample(a.reshape(1, 1, 36), (6, 6), exclude_layers=()).n_components[0, 0] == 1


def test_constant_and_empty_maps_are_inf():
    for value in (0.0, 0.1, 1.0 / 3.0, 7.25):
        for dtype in (np.float32, np.float64):
            a = np.full((24, 24), value, dtype=dtype)
            assert criteria.spatial_entropy(a) == math.inf
            e, n = criteria.spatial_entropy_batch(a[None])
            assert e[0] == math.inf and n[0] == 0
    assert criteria.spatial_entropy_details(np.full((4, 4), 0.3)).n_components == 0


def test_non_finite_map_is_nan():
    a = np.ones((4, 4))
    a[0, 0] = np.nan
    assert math.isnan(criteria.spatial_entropy(a))
    e, n = criteria.spatial_entropy_batch(np.stack([a, np.eye(4)]))
    assert math.isnan(e[0]) and n[0] == 0
    assert e[1] == pytest.approx(0.0)  # the diagonal is one 8-connected component


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        criteria.spatial_entropy(np.zeros(5))
    with pytest.raises(ValueError):
        criteria.spatial_entropy(np.eye(3), connectivity=6)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        criteria.spatial_entropy_batch(np.eye(3)[None], component_weight="volume")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# spatial entropy, batch == scalar
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight", ["mass", "area"])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_batch_equals_scalar_on_random_maps(weight, connectivity):
    rng = np.random.default_rng(1)
    maps = (rng.random((3, 5, 7, 9)) ** 6).astype(np.float32)  # sparse, many components
    maps[0, 0] = 0.5  # a constant map in there
    ent, nc = criteria.spatial_entropy_batch(maps, weight, connectivity, chunk_maps=4)  # several chunks
    assert ent.shape == (3, 5) and nc.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            d = criteria.spatial_entropy_details(maps[i, j], weight, connectivity)
            assert nc[i, j] == d.n_components
            if math.isinf(d.entropy):
                assert math.isinf(ent[i, j])
            else:
                assert ent[i, j] == pytest.approx(d.entropy, rel=1e-10, abs=1e-12)
    assert nc.max() >= 3  # the test maps really have several components
    assert math.isinf(ent[0, 0])


def test_analyze_sample_matches_scalar_functions():
    rng = np.random.default_rng(3)
    att = (rng.random((3, 4, 25)) ** 5).astype(np.float32)
    r = analysis.analyze_sample(att, (5, 5), exclude_layers=())
    maps = att.reshape(3, 4, 5, 5)
    np.testing.assert_allclose(r.s_img, att.sum(-1, dtype=np.float64), rtol=1e-12)
    np.testing.assert_allclose(r.bottom_row_share, criteria.bottom_row_share(maps), rtol=1e-10)
    for l in range(3):
        for h in range(4):
            assert r.entropy[l, h] == pytest.approx(criteria.spatial_entropy(maps[l, h]), rel=1e-10, abs=1e-12)


def test_bottom_row_share():
    a = np.zeros((2, 4, 4))
    a[0, 3, :] = 1.0  # everything above the mean on the bottom row
    a[1, 0, 0] = 1.0
    a[1, 3, 3] = 1.0  # half of it
    share = criteria.bottom_row_share(a)
    assert share[0] == pytest.approx(1.0)
    assert share[1] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# elbow
# ---------------------------------------------------------------------------------------------
def _l_curve(n_big=5, n_tail=120, seed=0):
    rng = np.random.default_rng(seed)
    big = np.linspace(1.0, 0.6, n_big)
    tail = 0.05 + 0.02 * rng.random(n_tail)
    values = np.concatenate([big, tail])
    return rng.permutation(values), n_big


@pytest.mark.parametrize("method", ["kneedle", "chord"])
@pytest.mark.parametrize("n_big", [3, 5, 9])
def test_elbow_of_constructed_curve(method, n_big):
    values, n_big = _l_curve(n_big=n_big)
    e = criteria.elbow_threshold(values, method)
    assert e.knee_found and e.method_used == method
    # the corner: first point of the flat tail
    assert e.index == n_big
    tail_max = np.sort(values)[::-1][n_big]
    assert e.threshold == pytest.approx(tail_max)
    big_values = np.sort(values)[::-1][:n_big]
    assert (big_values >= e.threshold).all()
    assert e.n_kept == n_big + 1
    assert e.n_values == values.size


def test_elbow_edge_cases():
    flat = criteria.elbow_threshold(np.full(50, 0.3))
    assert not flat.knee_found and flat.method_used == "keep_all" and "flat" in flat.note
    assert flat.n_kept == 50
    tiny = criteria.elbow_threshold([0.5, 0.1])
    assert not tiny.knee_found and tiny.threshold == 0.1 and "too few" in tiny.note
    assert criteria.elbow_threshold([]).threshold == -math.inf
    one = criteria.elbow_threshold([2.0])
    assert one.threshold == 2.0 and one.n_kept == 1
    # NaNs are dropped
    values, n_big = _l_curve()
    with_nan = np.concatenate([values, [np.nan, np.nan]])
    e = criteria.elbow_threshold(with_nan)
    assert e.n_dropped_nan == 2 and e.index == n_big
    # straight line: kneedle finds no knee, the chord fallback finds no elbow either -> keep all
    line = criteria.elbow_threshold(np.linspace(1.0, 0.0, 30))
    assert not line.knee_found and line.method_used == "keep_all" and "no knee" in line.note
    assert line.n_kept == 30
    keep = criteria.elbow_threshold(np.linspace(1.0, 0.0, 30), fallback="keep_all")
    assert keep.method_used == "keep_all"
    with pytest.raises(ValueError):
        criteria.elbow_threshold([1, 2, 3], "bogus")  # type: ignore[arg-type]


def test_kneedle_knee_choice_skips_small_bumps():
    # uneven top values: kneed's first knee is a tiny bump at index 1; the corner is at index 7
    top = [0.6497, 0.6384, 0.6360, 0.6343, 0.5397, 0.5266, 0.5202]
    tail = np.linspace(0.0868, 0.02, 57)
    values = np.concatenate([top, tail])
    assert criteria.elbow_threshold(values).index == 7
    assert criteria.elbow_threshold(values, knee_choice="first").index == 1
    assert criteria.elbow_threshold(values, "chord").index == 7


def test_kneedle_no_knee_falls_back_to_chord():
    # a curve kneedle rejects (its knee is not significant at a huge sensitivity) but with a bend
    values, n_big = _l_curve()
    e = criteria.elbow_threshold(values, sensitivity=1e6)
    assert not e.knee_found and e.method_used == "chord" and "chord" in e.note
    assert e.index == n_big


# ---------------------------------------------------------------------------------------------
# synthetic population with planted localization heads
# ---------------------------------------------------------------------------------------------
PLANTED = [(3, 5), (5, 1), (6, 6)]
DISTRACTORS = [(2, 2), (4, 7), (7, 0)]  # high S_img but scattered attention
LAYER0_BLOB = (0, 4)  # perfect blob head in an excluded layer
SPOT_CELLS = np.array([(r, c) for r in (0, 2, 4) for c in (0, 2, 4)])  # pairwise non-adjacent


def _population(n=30, L=8, H=8, side=6, seed=0):
    rng = np.random.default_rng(seed)
    V = side * side
    out = np.empty((n, L, H, V), dtype=np.float32)
    for s in range(n):
        # diffuse noise: heavy-tailed speckle over the grid, small S_img
        w = rng.lognormal(0.0, 1.5, size=(L, H, V))
        w /= w.sum(-1, keepdims=True)
        total = rng.uniform(0.03, 0.12, size=(L, H, 1))
        att = w * total
        for l, h in DISTRACTORS:  # 4 separated single-cell spots of similar mass: entropy ~ ln 4
            spots = np.zeros((side, side))
            cells = SPOT_CELLS[rng.choice(len(SPOT_CELLS), size=4, replace=False)]
            spots[cells[:, 0], cells[:, 1]] = rng.uniform(0.9, 1.1, size=4)
            spots = spots.ravel() / spots.sum()
            att[l, h] = rng.uniform(0.45, 0.6) * (0.95 * spots + 0.05 / V)
        for l, h in PLANTED + [LAYER0_BLOB]:
            blob = np.zeros((side, side))
            r, c = rng.integers(0, side - 1, size=2)
            blob[r : r + 2, c : c + 2] = rng.uniform(0.8, 1.2, size=(2, 2))
            blob = blob.ravel() / blob.sum()
            mass = rng.uniform(0.55, 0.75)
            att[l, h] = mass * (0.95 * blob + 0.05 / V)
        out[s] = att
    return out


def _analyze_population(att, side=6, **kw):
    res = [analysis.analyze_sample(a, (side, side), **kw) for a in att]
    s_img = np.stack([r.s_img for r in res])
    ent = np.stack([r.entropy for r in res])
    return res, s_img, ent


def test_select_heads_recovers_planted_heads():
    att = _population()
    _, s_img, ent = _analyze_population(att)
    sel = selection.select_heads(s_img, ent, SelectionConfig(k=3), 3)
    assert sorted(sel.head_list) == sorted(PLANTED)
    for d in sel.heads:
        assert d["frequency"] == 30 and d["frequency_ratio"] == 1.0
        assert d["mean_entropy"] == pytest.approx(0.0)
        assert set(d) == {"layer", "head", "frequency", "frequency_ratio", "mean_s_img", "mean_entropy"}
    # criterion 1 let the distractors through, criterion 2 rejected them
    for l, h in DISTRACTORS:
        assert sel.eligible[l, h]
        assert sel.frequency[l, h] == 0
    assert sel.selected.sum() == 3
    # the default k=10 still ranks the planted heads first (ties broken by mean entropy)
    sel10 = selection.select_heads(s_img, ent)
    assert sorted(sel10.head_list) == sorted(PLANTED)
    assert [d["frequency"] for d in sel10.ranked] == sorted((d["frequency"] for d in sel10.ranked), reverse=True)
    # both elbow methods agree here
    assert sorted(selection.select_heads(s_img, ent, SelectionConfig(k=3, elbow=ElbowConfig(method="chord"))).head_list) == sorted(PLANTED)


def test_layer_exclusion_is_honoured():
    att = _population()
    _, s_img, ent = _analyze_population(att)
    sel = selection.select_heads(s_img, ent, SelectionConfig(k=4), 4)
    assert LAYER0_BLOB not in sel.head_list
    assert not sel.eligible[0].any() and not sel.eligible[1].any()
    assert (sel.frequency[:2] == 0).all()
    assert sel.settings["exclude_layers"] == [0, 1]
    sel_all = selection.select_heads(s_img, ent, SelectionConfig(k=4), 4, exclude_layers=())
    assert sorted(sel_all.head_list) == sorted(PLANTED + [LAYER0_BLOB])
    # excluding a planted head's layer removes it
    sel_x = selection.select_heads(s_img, ent, SelectionConfig(k=3), 3, exclude_layers=(0, 1, 5))
    assert (5, 1) not in sel_x.head_list
    # analyze_sample marks excluded layers as ineligible too
    r = analysis.analyze_sample(att[0], (6, 6))
    assert not r.eligible[:2].any() and r.included[2:].all() and not r.included[:2].any()


def test_bottom_row_mask_removes_heads_per_sample():
    att = _population()
    _, s_img, ent = _analyze_population(att)
    mask = np.zeros(s_img.shape, dtype=bool)
    mask[:20, 3, 5] = True  # planted head (3, 5) flagged in 20 of 30 samples
    sel = selection.select_heads(s_img, ent, SelectionConfig(k=3), 3, bottom_row_mask=mask)
    assert sel.frequency[3, 5] == 10
    assert sel.frequency.sum() == 30 * 3  # another head filled the slot in the 20 samples
    assert (3, 5) not in sel.head_list
    assert sel.frequency[5, 1] == 30 and sel.frequency[6, 6] == 30
    entry = next(d for d in sel.ranked if (d["layer"], d["head"]) == (3, 5))
    assert entry["frequency_ratio"] == pytest.approx(10 / 30)
    assert (sel.per_sample_choices[:20] != 3 * 8 + 5).all()


def test_analyze_sample_fields_and_bottom_row_filter():
    side = 4
    att = np.full((3, 2, side * side), 0.01, dtype=np.float32)
    att[2, 0, -side:] = 0.2  # all above-mean mass on the bottom row
    att[2, 1, 5] = 0.5  # compact, not on the bottom row
    layout = square_grid_layout((64, 64), list(range(10, 10 + side * side)), side, (0, 0, 64, 64), "pad")
    r = analysis.analyze_sample(att, layout, threshold=0.3, exclude_layers=(0,), settings=SelectionConfig(bottom_row_filter=True))
    assert r.s_img.shape == (3, 2) and r.grid_shape == (4, 4)
    assert r.s_img[0, 0] == pytest.approx(0.16)
    assert np.isinf(r.entropy[0, 0]) and r.n_components[0, 0] == 0  # constant map
    assert r.bottom_row_share[2, 0] == pytest.approx(1.0)
    assert r.bottom_row_artifact is not None and r.bottom_row_artifact[2, 0] and not r.bottom_row_artifact[2, 1]
    assert r.passes_c1 is not None and r.passes_c1[2, 0] and r.passes_c1[2, 1] and not r.passes_c1[1, 0]
    assert r.eligible.tolist() == [[False, False], [False, False], [False, True]]
    # without the filter the bottom-row head is eligible
    r2 = analysis.analyze_sample(att, (side, side), threshold=0.3, exclude_layers=(0,))
    assert r2.bottom_row_artifact is None and r2.eligible[2, 0]
    # JSON-safe dict: inf entropy -> null
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["entropy"][0][0] is None and d["n_components"][0][0] == 0
    assert d["settings"]["excluded_layers"] == [0]
    assert d["eligible"][2][1] is True
    assert "L2H1" in r.summary()
    with pytest.raises(ValueError):
        analysis.analyze_sample(att, (5, 5))


def test_select_heads_edge_cases():
    rng = np.random.default_rng(0)
    s = rng.random((4, 2, 3))
    e = rng.random((4, 2, 3))
    # all layers excluded: nothing eligible, nothing chosen, no crash
    sel = selection.select_heads(s, e, exclude_layers=(0, 1))
    assert sel.heads == [] and not sel.eligible.any()
    # inf entropies are never chosen
    e_inf = np.full_like(e, np.inf)
    sel = selection.select_heads(s, e_inf, exclude_layers=(), threshold=0.0)
    assert sel.heads == [] and (sel.per_sample_choices == -1).all()
    # a given threshold overrides the elbow
    sel = selection.select_heads(s, e, SelectionConfig(k=1), 2, exclude_layers=(), threshold=-1.0)
    assert sel.eligible.all() and sel.elbow.method_used == "given"
    assert sum(d["frequency"] for d in sel.ranked) == 4
    with pytest.raises(ValueError):
        selection.select_heads(s, e[:, :1])


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------
def test_json_and_csv_writers(tmp_path):
    att = _population(n=10)
    _, s_img, ent = _analyze_population(att)
    ent[0, 4, 4] = np.inf
    sel = selection.select_heads(s_img, ent, SelectionConfig(k=3))
    jpath = tmp_path / "out" / "heads.json"
    atomic_write_json(jpath, jsonable(sel.to_json_dict()))
    data = json.loads(jpath.read_text())
    assert [(d["layer"], d["head"]) for d in data["heads"]] == sel.head_list
    assert set(data) >= {"heads", "ranked", "threshold", "elbow", "settings", "n_samples"}
    assert data["n_samples"] == 10 and data["settings"]["k"] == 3 and data["settings"]["top_k"] == 3
    assert data["elbow"]["method"] == "kneedle" and data["threshold"] == pytest.approx(sel.threshold)
    assert set(data["heads"][0]) == {"layer", "head", "frequency", "frequency_ratio", "mean_s_img", "mean_entropy"}

    cpath = tmp_path / "table.csv"
    mean_e = sel.mean_entropy.copy()
    mean_e[1, 1] = np.inf
    writers.write_head_table_csv(cpath, sel.mean_s_img, mean_e, sel.frequency, sel.eligible, sel.selected)
    with open(cpath, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 64
    assert list(rows[0]) == ["layer", "head", "mean_s_img", "mean_entropy", "frequency", "eligible", "selected"]
    by = {(int(r["layer"]), int(r["head"])): r for r in rows}
    for l, h in sel.head_list:
        assert by[l, h]["selected"] == "true" and by[l, h]["eligible"] == "true"
        assert int(by[l, h]["frequency"]) == sel.frequency[l, h]
    assert float(by[1, 1]["mean_entropy"]) == math.inf
    assert float(by[3, 5]["mean_s_img"]) == sel.mean_s_img[3, 5]  # exact round trip
    assert by[0, 0]["selected"] == "false"


# ---------------------------------------------------------------------------------------------
# visual-head statistics
# ---------------------------------------------------------------------------------------------
def test_attention_concentration_extremes():
    V = 16
    a = np.zeros((3, V))
    a[0, 7] = 0.4  # one token
    a[1] = 0.5 / V  # uniform
    # a[2]: no image mass
    c = visual_heads.attention_concentration(a)
    assert c[0] == pytest.approx(1.0)
    assert c[1] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(c[2])
    two = np.zeros(V)
    two[:2] = 1.0
    assert visual_heads.attention_concentration(two) == pytest.approx(1.0 - LN2 / math.log(V))


def test_visual_head_stats_groups():
    L, H, V = 2, 3, 9
    a = np.full((4, L, H, V), 0.01)
    a[:2, 1, 2] = 0.0
    a[:2, 1, 2, 0] = 0.8  # concentrated head in group "a"
    groups = ["a", "a", "b", None]
    st = visual_heads.visual_head_stats(a, groups)
    assert st["overall"]["n_samples"] == 4
    assert set(st["groups"]) == {"a", "b"}
    assert st["groups"]["a"]["n_samples"] == 2 and st["groups"]["b"]["n_samples"] == 1
    assert st["groups"]["a"]["ratio_mean"][1, 2] == pytest.approx(0.8)
    assert st["groups"]["a"]["concentration_mean"][1, 2] == pytest.approx(1.0)
    assert st["groups"]["b"]["ratio_mean"][1, 2] == pytest.approx(0.09)
    assert st["groups"]["b"]["concentration_mean"][1, 2] == pytest.approx(0.0, abs=1e-12)
    assert st["overall"]["ratio_mean"][1, 2] == pytest.approx((0.8 * 2 + 0.09 * 2) / 4)
    # list input with varying V gives the same ratios
    st2 = visual_heads.visual_head_stats([x for x in a], groups)
    np.testing.assert_allclose(st2["overall"]["ratio_mean"], st["overall"]["ratio_mean"])
    json.dumps(jsonable(st), allow_nan=False)
    with pytest.raises(ValueError):
        visual_heads.visual_head_stats(a, ["a"])


def test_analysis_modules_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, lab.criteria, lab.analysis.per_sample, lab.analysis.across_samples, lab.analysis.visual_heads, lab.runs.heads_files; sys.exit(1 if ('torch' in sys.modules or 'transformers' in sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_elbow_on_a_concave_curve_is_not_rank_zero():
    """A plateau of image-attending heads, then a drop (the toy model's shape): auto picks 'concave'."""
    y = np.array([0.99, 0.98, 0.94, 0.91, 0.86, 0.85, 0.84, 0.81, 0.80, 0.77, 0.74, 0.67, 0.45, 0.36, 0.13, 0.01])
    e = criteria.elbow_threshold(y, "kneedle")
    assert e.knee_found and 8 <= e.index <= 12, e
    convex = criteria.elbow_threshold(y, "kneedle", curve="convex")
    assert convex.index is None or convex.index < e.index


def test_visual_heads_are_named_by_count_then_ratio_and_given_their_kind():
    """A world whose answer is known: 4 samples x 2 layers x 3 heads (docs/visual_heads.md's rule)."""
    from utils.settings.declarations import VisualHeadsConfig

    ratio = np.zeros((4, 2, 3))
    ratio[:, 0, 0] = 0.9  # every sample: counted 4 times
    ratio[:, 1, 2] = [0.95, 0.95, 0.95, 0.1]  # 3 of 4
    ratio[:, 1, 1] = [0.99, 0.99, 0.99, np.nan]  # 3 of 4, NaN never counts; higher mean than (1, 2)
    ratio[:, 0, 1] = [0.6, 0.1, 0.1, 0.1]  # 1 of 4 < min_share 0.5: not named
    conc = np.full((4, 2, 3), 0.4)
    conc[:, 1, 2] = 0.05  # spread over the image
    loc = np.zeros((2, 3), dtype=bool)
    loc[0, 0] = True
    named = visual_heads.name_visual_heads(ratio, conc, VisualHeadsConfig(), loc)
    assert [(h["layer"], h["head"], h["count"], h["kind"]) for h in named] == [
        (0, 0, 4, "localization"), (1, 1, 3, "focused"), (1, 2, 3, "global")]
    assert [h["rank"] for h in named] == [1, 2, 3] and named[1]["ratio"] == pytest.approx(0.99)
    top = visual_heads.name_visual_heads(ratio, conc, VisualHeadsConfig(k=2, min_ratio=0.5, min_share=0.25))
    assert [(h["layer"], h["head"]) for h in top] == [(0, 0), (1, 1)]  # the release's top-k by count
    block = visual_heads.named_block(ratio, conc, ["a", "a", "b", None], VisualHeadsConfig(), loc)
    assert set(block["by_group"]) == {"a", "b"} and block["by_group"]["b"]["n_samples"] == 1
    assert visual_heads.kinds_summary(named) == "3 (1 localization, 1 global, 1 focused)"
