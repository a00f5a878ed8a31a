"""The criteria/selection/grounding variants (lab/criteria/variants.py and their options) and the method= group."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import make_cfg
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lab import criteria
from lab.analysis import grounding
from lab.analysis import across_samples as selection
from lab.analysis.per_sample import analyze_sample
from lab.criteria.variants import (
    bottom_row_any_cell,
    chord_raw_threshold,
)
from lab.stages import StageContext, run_stage
from lab.criteria.entropy import entropy_components
from utils.settings.declarations import SelectionConfig
from utils.errors import UserError


def _relu(maps, *, mean_factor=1.0, threshold=0.0, component_weight="mass"):
    """The release's entropy (entropy_components with its cell rule): (entropy[M], n_components[M])."""
    ent, nc, _ = entropy_components(np.asarray(maps), component_weight=component_weight, mean_factor=mean_factor,
                                    binarize_threshold=threshold)
    return ent, nc


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (5, 6, 7), elements=st.floats(0, 1, allow_nan=False, width=32)))
def test_relu_entropy_with_default_settings_equals_the_default_entropy(maps):
    ent, nc = _relu(maps)
    ref_e, ref_n = criteria.spatial_entropy_batch(maps)
    for a, b in zip(ent, ref_e):  # the default adds a round-off guard (rtol 1e-9) on near-constant maps
        if math.isfinite(b):
            assert a == pytest.approx(b, abs=1e-9)
    assert ((nc == ref_n) | ~np.isfinite(ref_e)).all()


def test_relu_mass_weights_leave_sub_threshold_mass_out():
    a = np.zeros((4, 4))
    a[0, 0], a[2, 0] = 1.0, 0.3  # two components above 2 * mean
    a[3, 3] = 1.304 / 7  # relu(a - 2 * mean) = 0.0005: mass at or below the 0.001 threshold, in no component
    (e,), (n,) = _relu(a[None], mean_factor=2.0, threshold=0.001, component_weight="relu_mass")
    b = np.maximum(a - 2 * a.mean(), 0)
    assert 0 < b[3, 3] <= 0.001
    p = np.array([b[0, 0], b[2, 0]]) / b.sum()  # sums to less than 1
    assert n == 2 and e == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-12)
    (e_mass,), _ = _relu(a[None], mean_factor=2.0, threshold=0.001, component_weight="mass")
    q = p / p.sum()
    assert e_mass == pytest.approx(float(-(q * np.log(q)).sum()), abs=1e-12) and e_mass != pytest.approx(e)
    # all relu mass at or below the threshold: no component, entropy 0 (the best score)
    weak = np.full((4, 4), 0.01)
    weak[1, 1] = 0.0105
    (e0,), (n0,) = _relu(weak[None], mean_factor=1.0, threshold=0.001, component_weight="relu_mass")
    assert n0 == 0 and e0 == 0.0
    (e_mass,), _ = _relu(weak[None], mean_factor=1.0, threshold=0.001, component_weight="mass")
    assert e_mass == math.inf  # the default weighting calls the same map empty
    (ec,), _ = _relu(np.full((1, 3, 3), 0.2), component_weight="relu_mass")
    assert ec == math.inf  # constant map: no relu mass at all


def test_chord_raw_is_the_unscaled_ascending_chord():
    """The perpendicular distance to a chord is the vertical gap times a constant, so scaled and unscaled
    chords pick the same point; they differ on ties (the release takes the first one on the ascending curve)."""
    y = np.array([0.01] * 10 + [0.02, 0.3, 0.9, 0.95])
    thr, i = chord_raw_threshold(y[::-1])
    # x spans 13, y spans 0.94: the farthest point below the chord is the last flat one before the jump
    ys = np.sort(y)
    x = np.arange(ys.size)
    d = (x * (ys[-1] - ys[0]) / 13 + ys[0]) - ys  # vertical gap below the chord (dominates the distance)
    assert i == int(np.argmax(d)) and thr == ys[i]
    assert criteria.elbow_threshold(y, "chord_raw").threshold == thr
    assert chord_raw_threshold([0.5]) == (0.5, 0) and chord_raw_threshold([])[1] is None
    assert criteria.elbow_threshold(y, "chord").threshold == thr
    tie = np.array([0.0, 0.125, 0.5, 0.875, 1.0])  # equal gaps below (0.125) and above (0.875) the chord
    assert chord_raw_threshold(tie)[0] == 0.125 and criteria.elbow_threshold(tie, "chord").threshold == 0.875


def test_bottom_row_any_cell():
    m = np.zeros((2, 3, 3))
    m[0, 2, 1] = 0.06
    m[1, 2, 1] = 0.05  # not strictly above
    assert bottom_row_any_cell(m).tolist() == [True, False]


def test_analysis_options_fallback_and_tie_break():
    L, H, P = 3, 2, 4
    att = np.full((L, H, P * P), 0.001)
    att[2, 0, 5] = 0.5  # one compact blob -> entropy 0
    att[2, 1, 6] = 0.5  # another, equal entropy, equal S_img
    att[1, 0, 0] = 0.9  # highest S_img, but layer 1 excluded
    res = analyze_sample(att, (P, P), threshold=0.4, exclude_layers=[0, 1],
                         settings=SelectionConfig(component_weight="relu_mass", mean_factor=2.0, binarize_threshold=0.001,
                                                  tie_break="index"))
    assert res.ranked_heads() == [(2, 0), (2, 1)]
    res_hi = analyze_sample(att, (P, P), threshold=10.0, exclude_layers=[0, 1], settings=SelectionConfig(min_keep=1))
    assert res_hi.eligible.sum() == 1 and res_hi.eligible[1, 0]  # the fallback ignores layers and the threshold


def test_select_heads_with_per_sample_masks():
    s = np.ones((2, 2, 2))
    e = np.array([[[0.1, 0.2], [0.3, np.inf]], [[0.5, 0.2], [0.1, 0.0]]])
    mask = np.array([[[True, True], [False, True]], [[False, True], [True, True]]])
    sel = selection.select_heads(s, e, SelectionConfig(k=2, tie_break="index"), 2, exclude_layers=[], sample_mask=mask)
    assert sel.per_sample_choices.tolist() == [[0, 1], [3, 2]]  # inf entropy allowed, after the finite ones
    assert math.isnan(sel.threshold) and sel.elbow.method_used == "per_sample"


def test_stretched_box_reproduces_the_release_sample_output():
    """outputs/results/.../sample_bbox.json of the release: a 275x183 image, box [0, 22, 274, 182] (inclusive),
    which its scale_bbox_to_image gives for grid rows 3..23, cols 0..23 of 24."""
    assert grounding.stretched_box_xywh((3, 0, 24, 24), (275, 183), 24, 24) == (0.0, 22.0, 275.0, 161.0)


def test_method_group_bundles_explicit_keys():
    paper, release = make_cfg(), make_cfg("method=kang_release")
    assert paper.method_name == "paper" and release.method_name == "kang_release"
    assert paper.selection.elbow.method == "kneedle" and paper.top_k == 3 and paper.grounding.region == "largest"
    assert release.selection.elbow.method == "chord_raw" and release.selection.elbow.scope == "per_sample"
    assert release.model.prompt_template == "referseg" and release.top_k == 5
    assert release.selection.exclude_layers == [0, 1] and release.grounding.geometry == "stretch"
    # command-line keys still win over the bundle; every bundle key exists on its own
    assert make_cfg("method=kang_release", "top_k=3").top_k == 3
    assert make_cfg("selection.elbow.method=chord_raw").selection.elbow.method == "chord_raw"


def test_invalid_choice_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match="selection.ranking='bogus' must be one of frequency, per_sample"):
        run_stage(make_cfg("stage=select", "selection.ranking=bogus"), StageContext(loader=lambda: None, output_dir=tmp_path))
