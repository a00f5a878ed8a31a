"""Vision-tower attention: hook capture vs eager output_attentions, rollout, combined maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lab.capture.station import Strategy, collect
from llava import vision as VI

TOL = 1e-5
_NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8))


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def _samples():
    return [(Image.new("RGB", (80, 50), (220, 30, 30)), "what color is the circle ?"),
            (_NOISE.copy(), "where is the red object ?")]


@torch.inference_mode()
def _eager_vision(eager, batch):
    tower = VI.vision_tower(eager)
    out = tower(batch.inputs["pixel_values"], output_attentions=True)
    return torch.stack(out.attentions, dim=1)  # (B, L, H, N, N)


def test_capture_during_vlm_forward_matches_eager(tiny_vlm, tiny_eager):
    batch = tiny_vlm.prepare(_samples())
    assert tiny_vlm.model.config.vision_config._attn_implementation != "eager"  # the model runs SDPA
    with VI.capture_vision_attention(tiny_vlm) as cap:
        tiny_vlm.forward(batch)
    got = cap.attentions()
    ref = _eager_vision(tiny_eager, batch)
    vc = tiny_vlm.model.config.vision_config
    n = (vc.image_size // vc.patch_size) ** 2 + 1
    assert got.shape == (2, vc.num_hidden_layers, vc.num_attention_heads, n, n)
    assert (got - ref).abs().max().item() <= TOL
    assert torch.allclose(got.sum(-1), torch.ones(()), atol=1e-5)


def test_capture_during_generate_layers_and_head_mean(tiny_vlm, tiny_eager):
    batch = tiny_vlm.prepare(_samples())
    with VI.capture_vision_attention(tiny_vlm, layers=[1], heads="mean") as cap:
        tiny_vlm.generate(batch, max_new_tokens=3)
    assert len(cap.per_layer[1]) == 1  # the tower runs once (prefill), not per decoding step
    ref = _eager_vision(tiny_eager, batch)[:, [1]].mean(2)
    assert (cap.attentions() - ref).abs().max().item() <= TOL
    # standalone helper
    arr = VI.vision_attention(tiny_vlm, batch.inputs["pixel_values"])
    assert np.abs(arr - _eager_vision(tiny_eager, batch).numpy()).max() <= TOL


def test_hooks_removed_and_logits_untouched(tiny_vlm):
    batch = tiny_vlm.prepare(_samples()[:1])
    plain = tiny_vlm.forward(batch).logits
    mods = VI.vision_attention_modules(VI.vision_tower(tiny_vlm))
    before = [len(m._forward_hooks) for m in mods]  # transformers may keep its own output recorders
    with pytest.raises(RuntimeError, match="boom"):
        with VI.capture_vision_attention(tiny_vlm):
            assert [len(m._forward_hooks) for m in mods] == [b + 1 for b in before]
            assert torch.equal(tiny_vlm.forward(batch).logits, plain)
            raise RuntimeError("boom")
    assert [len(m._forward_hooks) for m in mods] == before
    with VI.capture_vision_attention(tiny_vlm) as cap:
        pass
    with pytest.raises(RuntimeError, match="did not run"):
        cap.attentions()
    with pytest.raises(ValueError, match="out of range"):
        with VI.capture_vision_attention(tiny_vlm, layers=[5]):
            pass


def test_feature_layer_count(tiny_vlm):
    cfg = tiny_vlm.model.config
    assert cfg.vision_config.num_hidden_layers == 2 and cfg.vision_feature_layer == -2
    assert VI.feature_layer_count(cfg) == 1
    from types import SimpleNamespace as NS

    vc = NS(num_hidden_layers=24)
    assert VI.feature_layer_count(NS(vision_config=vc, vision_feature_layer=-2)) == 23
    assert VI.feature_layer_count(NS(vision_config=vc, vision_feature_layer=-1)) == 24
    assert VI.feature_layer_count(NS(vision_config=vc, vision_feature_layer=[-2, 5])) == 23


# ---- maps -----------------------------------------------------------------------------------------
def _random_attention(L=3, H=2, N=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random((L, H, N, N))
    return a / a.sum(-1, keepdims=True)


def test_rollout_of_identity_is_identity():
    eye = np.broadcast_to(np.eye(7), (4, 3, 7, 7))
    np.testing.assert_allclose(VI.attention_rollout(eye), np.eye(7))
    np.testing.assert_allclose(VI.attention_rollout(eye, residual=False), np.eye(7))


def test_rollout_by_hand():
    a = _random_attention()
    m = a.mean(1)
    eye = np.eye(5)
    steps = [(x + eye) / (x + eye).sum(-1, keepdims=True) for x in m]
    np.testing.assert_allclose(VI.attention_rollout(a), steps[2] @ steps[1] @ steps[0])
    np.testing.assert_allclose(VI.attention_rollout(a, num_layers=2), steps[1] @ steps[0])
    np.testing.assert_allclose(VI.attention_rollout(a, num_layers=0), eye)
    np.testing.assert_allclose(VI.attention_rollout(a, residual=False), m[2] @ m[1] @ m[0])
    np.testing.assert_allclose(VI.attention_rollout(a).sum(-1), 1.0)
    with pytest.raises(ValueError):
        VI.attention_rollout(a, num_layers=4)


def test_mean_attention_drops_cls_and_renormalises():
    a = _random_attention()
    m = VI.mean_attention(a)
    assert m.shape == (4, 4)
    np.testing.assert_allclose(m.sum(-1), 1.0)
    raw = a.mean(axis=(0, 1))[1:, 1:]
    np.testing.assert_allclose(m, raw / raw.sum(-1, keepdims=True))
    m1 = VI.mean_attention(a, layers=[1], drop_cls=False)
    np.testing.assert_allclose(m1, a[1].mean(0))


def test_token_patch_matrix_and_combined_maps(tiny_vlm):
    from types import SimpleNamespace as NS

    a = _random_attention(L=3, N=5)
    cfg = NS(vision_config=NS(num_hidden_layers=3), vision_feature_layer=-2, vision_feature_select_strategy="default")
    mat = VI.token_patch_matrix(a, cfg)  # rollout through layers 0, 1 only
    r = VI.attention_rollout(a, 2)[1:, 1:]
    np.testing.assert_allclose(mat, r / r.sum(-1, keepdims=True))
    assert mat.shape == (4, 4)
    full = VI.token_patch_matrix(a, NS(**{**vars(cfg), "vision_feature_select_strategy": "full"}), method="mean")
    assert full.shape == (5, 4)
    np.testing.assert_allclose(full.sum(-1), 1.0)
    eye_cfg = VI.token_patch_matrix(np.broadcast_to(np.eye(5), (3, 5, 5)), cfg)
    np.testing.assert_allclose(eye_cfg, np.eye(4))  # no mixing in the tower: the LLM map is unchanged
    w = np.random.default_rng(1).random((6, 4)) * 0.1  # (T, V)
    comb = VI.combine_with_llm(w, mat)
    assert comb.shape == (6, 4)
    np.testing.assert_allclose(comb.sum(-1), w.sum(-1))  # mass kept
    with pytest.raises(ValueError, match="5 image-token weights"):
        VI.combine_with_llm(np.ones(5), mat)


def test_combined_maps_with_a_real_record(tiny_vlm):
    (rec,) = collect(tiny_vlm, _samples()[:1], Strategy(query_positions="generated"), max_new_tokens=3)
    T, L, H, V = rec.shape
    batch = tiny_vlm.prepare(_samples()[:1])
    weights = rec.image_attention.mean(axis=(1, 2))  # (T, V)
    maps = VI.image_token_maps(tiny_vlm, batch.inputs["pixel_values"], weights)
    assert maps.shape == (T, V)
    np.testing.assert_allclose(maps.sum(-1), weights.sum(-1), rtol=1e-5)
    grid = rec.layout.to_grid(maps)
    assert grid.shape == (T, 4, 4)
    mean_maps = VI.image_token_maps(tiny_vlm, batch.inputs["pixel_values"], weights[0], method="mean")
    assert mean_maps.shape == (V,)
