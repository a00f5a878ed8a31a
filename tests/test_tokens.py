"""Generation-time maps: capture vs eager generate, reductions on synthetic arrays, the figures."""

from __future__ import annotations

from dataclasses import replace

from lab.figures.overlays import STRIP_STYLE

import numpy as np
import pytest
import torch
from PIL import Image

from lab.analysis import token_maps as TK
from lab.figures import token_figures
from lab.capture.station import Strategy, collect
from utils.errors import UserError

TOL = 1e-5


_NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8))


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def _samples():
    return [(Image.new("RGB", (80, 50), (220, 30, 30)), "what color is the circle ?", "s0"),
            (_NOISE.copy(), "where is the red object on the left ?", "s1")]


@pytest.fixture(scope="module")
def gen_records(tiny_vlm):
    return collect(tiny_vlm, _samples(), Strategy(query_positions="generated"), max_new_tokens=6)


def test_generated_capture_matches_eager_generate(tiny_vlm, tiny_eager, gen_records):
    batch = tiny_vlm.prepare(_samples())
    ref = tiny_eager.model.generate(**batch.inputs, max_new_tokens=6, do_sample=False, output_attentions=True,
                                    return_dict_in_generate=True)
    s = batch.inputs["input_ids"].shape[1]
    for b, rec in enumerate(gen_records):
        T = rec.image_attention.shape[0]
        assert T == len(rec.meta.generated_tokens) == len(rec.generated_ids) >= 1
        assert rec.generated_ids.tolist() == ref.sequences[b, s: s + T].tolist()
        assert rec.meta.query_mode == "generated"
        assert rec.meta.query_positions == [len(rec.input_ids) - 1 + t for t in range(T)]
        for t in range(T):
            exp = torch.stack([a[b, :, -1, batch.image_cols[b]] for a in ref.attentions[t]])  # (L, H, V)
            assert np.abs(rec.image_attention[t] - exp.numpy()).max() <= TOL, f"sample {b} token {t}"


def test_record_helpers_on_real_records(gen_records, tiny_vlm):
    rec = gen_records[0]
    T, L, H, V = rec.shape
    maps = TK.record_token_maps(rec)
    assert maps.shape == (T, V)
    np.testing.assert_allclose(maps, rec.image_attention.astype(np.float64).mean(axis=(1, 2)), atol=1e-7)
    share = TK.record_image_share(rec, layers=[2, 3], heads=[1])
    np.testing.assert_allclose(share, rec.image_attention[:, 2:4, 1].sum(-1).mean(-1), atol=1e-6)
    assert ((share > 0) & (share <= 1 + 1e-6)).all()
    sel = TK.record_token_maps(rec, pairs=[(1, 0), (3, 2)])
    np.testing.assert_allclose(sel, (rec.image_attention[:, 1, 0] + rec.image_attention[:, 3, 2]) / 2, atol=1e-6)
    with pytest.raises(UserError, match="layers \\[9\\] not captured"):
        TK.record_token_maps(rec, layers=[9])
    (last,) = collect(tiny_vlm, _samples()[:1], Strategy())
    with pytest.raises(UserError, match="query_positions=generated"):
        TK.record_token_maps(last)


def test_record_with_a_layer_subset_maps_model_indices(tiny_vlm):
    (rec,) = collect(tiny_vlm, _samples()[:1], Strategy(query_positions="generated", layers=[1, 3], heads=[0, 2]),
                     max_new_tokens=3)
    full = TK.record_token_maps(rec, layers=[3], heads=[2], over=())
    np.testing.assert_array_equal(full[:, 0, 0], rec.image_attention[:, 1, 1])
    with pytest.raises(UserError, match="heads \\[1\\] not captured"):
        TK.record_token_maps(rec, pairs=[(1, 1)])


# ---- reductions on synthetic arrays -------------------------------------------------------------
@pytest.fixture()
def att():
    rng = np.random.default_rng(0)
    return rng.random((5, 4, 3, 6))  # (T, L, H, V)


@pytest.mark.parametrize("over,shape,axes", [
    (("heads", "layers"), (5, 6), (1, 2)),
    (("heads",), (5, 4, 6), (2,)),
    (("layers",), (5, 3, 6), (1,)),
    (("steps",), (4, 3, 6), (0,)),
    (("steps", "heads", "layers"), (6,), (0, 1, 2)),
    ((), (5, 4, 3, 6), ()),
])
def test_reduce_shapes_and_values(att, over, shape, axes):
    out = TK.reduce_token_maps(att, over=over)
    assert out.shape == shape
    np.testing.assert_allclose(out, att.mean(axis=axes) if axes else att)


def test_reduce_chosen_layers_heads_pairs(att):
    out = TK.reduce_token_maps(att, layers=[1, 3], heads=[0])
    np.testing.assert_allclose(out, att[:, [1, 3]][:, :, [0]].mean(axis=(1, 2)))
    out = TK.reduce_token_maps(att, layers=[2], over=("heads",))
    assert out.shape == (5, 1, 6)
    pairs = [(0, 1), (3, 2), (2, 0)]
    out = TK.reduce_token_maps(att, pairs=pairs)
    np.testing.assert_allclose(out, np.mean([att[:, l, h] for l, h in pairs], axis=0))
    out = TK.reduce_token_maps(att, pairs=pairs, over=("steps", "heads"))
    np.testing.assert_allclose(out, np.mean([att[:, l, h] for l, h in pairs], axis=0).mean(0))
    assert TK.reduce_token_maps(att, pairs=pairs, over=("steps",)).shape == (3, 6)
    for bad in (dict(layers=[4]), dict(heads=[]), dict(pairs=[(4, 0)]), dict(pairs=[(0, 0)], layers=[0])):
        with pytest.raises(ValueError):
            TK.reduce_token_maps(att, **bad)
    with pytest.raises(UserError, match="tokens.reduce='tokens' must be one of heads, layers, steps"):
        TK.reduce_token_maps(att, over=("tokens",))  # the one axis check (ReduceAxis), as token_view's
    with pytest.raises(ValueError, match="\\[T, L, H, V\\]"):
        TK.reduce_token_maps(att[0])


def test_normalize_and_image_share(att):
    n = TK.reduce_token_maps(att, normalize=True)
    np.testing.assert_allclose(n.sum(-1), 1.0)
    z = np.zeros((2, 1, 1, 4))
    assert (TK.reduce_token_maps(z, normalize=True) == 0).all()
    probs = att / att.sum(-1, keepdims=True) * 0.25  # every head puts 25% of its attention on the image
    np.testing.assert_allclose(TK.image_share(probs), 0.25)
    np.testing.assert_allclose(TK.image_share(att, layers=[0], heads=[2]), att[:, 0, 2].sum(-1))
    np.testing.assert_allclose(TK.image_share(att, pairs=[(1, 1)]), att[:, 1, 1].sum(-1))


# ---- figures -------------------------------------------------------------------------------------
def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        arr = np.asarray(im.convert("RGB"))
        assert arr.std() > 5  # not a blank canvas
        return im.size


def test_token_figures(gen_records, tmp_path):
    rec = gen_records[1]
    img = _samples()[1][0]
    T = rec.shape[0]
    p = token_figures.token_curve(rec, tmp_path / "curve.png")
    assert _png_size(p) == (600, 400)  # default figsize (6, 4) at 100 dpi for a few tokens
    p = token_figures.token_curve(rec, tmp_path / "curve_sel.png", pairs=[(2, 1), (3, 0)], figsize=(5, 3), dpi=80)
    assert _png_size(p) == (400, 240)
    p = token_figures.token_strip(rec, img, tmp_path / "strip.png", style=replace(STRIP_STYLE, figsize=(8, 2.5), dpi=100))
    assert _png_size(p) == (800, 250)
    p = token_figures.token_strip(rec, img, tmp_path / "strip_default.png", layers=[2, 3], max_tokens=2)
    w, h = _png_size(p)
    assert w > h > 100  # a strip: wider than tall
    assert T >= 1
