"""Interventions of the capture attention function (maskout, modify, steps) against explicit references.

References are plain transformers: an eager model with an `o_proj` forward pre-hook (head ablation),
or a reference attention function registered with `AttentionInterface` that does eager math and
applies the intervention by hand. Float32 tiny random models; max abs error <= 1e-5.
"""

from __future__ import annotations

import dataclasses

import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.clip.modeling_clip import eager_attention_forward as clip_eager
from transformers.models.llama.modeling_llama import eager_attention_forward, repeat_kv

from lab.capture.station import AttentionStation, RunInputs, Strategy, collect
from llava.model import load_vlm
from utils.contracts.capture import active_sink
from utils.errors import UserError

TOL = 1e-5
REF_IMPL = "ref_eager_intervene"


_NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8))


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def _images():
    return [
        Image.new("RGB", (80, 50), (220, 30, 30)),
        Image.linear_gradient("L").convert("RGB").resize((40, 90)),
        _NOISE.copy(),
    ]


QUERIES = ["what color is the circle ?", "what", "where is the red object on the left of the picture ?"]


def _samples(n=3):
    return list(zip(_images()[:n], QUERIES[:n]))


def _inputs(batch):
    return RunInputs(batch.attention_mask, batch.image_cols)


# ---- the reference: eager math + a hand-written intervention --------------------------------
class _RefState:
    """What the reference attention function must do; set by `ref_intervention`, None = plain eager."""

    def __init__(self):
        self.cfg: dict | None = None
        self.calls: dict[int, int] = {}


REF = _RefState()


def _ref_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention (as transformers' Llama) with the intervention of `REF.cfg` applied by hand."""
    layer = getattr(module, "layer_idx", None)
    if layer is None:  # the vision tower
        return clip_eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    cfg = REF.cfg
    if cfg is None:
        return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    step = REF.calls.get(layer, 0)
    REF.calls[layer] = step + 1
    if cfg["steps"] == "prefill" and step > 0:
        return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    B, H, q_len, _ = query.shape
    k = repeat_kv(key, module.num_key_value_groups)  # (B, H, S, D)
    v = repeat_kv(value, module.num_key_value_groups)
    S = k.shape[2]
    raw = torch.matmul(query, k.transpose(2, 3)) * scaling  # (B, H, q, S)
    mask = attention_mask if attention_mask is not None else torch.zeros(B, 1, q_len, S)
    visible = (mask == 0).expand(B, 1, q_len, S)  # eager float mask: 0 visible, dtype-min hidden
    img = torch.zeros(B, S, dtype=torch.bool)
    for b, cols in enumerate(cfg["image_cols"]):
        img[b, cols] = True
    img = img[:, None, None, :]  # (B, 1, 1, S)
    weights = torch.softmax(raw + mask, dim=-1, dtype=torch.float32)
    mheads = cfg["modify"].get(layer, [])
    f = cfg["factor"]
    for h in mheads:
        if cfg["modify_mode"] == "image_reweight":  # post-softmax weights on image keys x f, renormalised
            w = torch.where(img[:, 0], weights[:, h] * f, weights[:, h])
            weights[:, h] = w / w.sum(-1, keepdim=True)
        else:  # logits_scale: pre-softmax logits of image keys x f
            lg = torch.where(img[:, 0], raw[:, h] * f, raw[:, h])
            weights[:, h] = torch.softmax(lg + mask[:, 0], dim=-1)
    for h in cfg["maskout"].get(layer, []):
        if cfg["maskout_mode"] == "uniform":  # uniform over the keys the query may see
            vis = visible[:, 0].float()
            weights[:, h] = vis / vis.sum(-1, keepdim=True).clamp(min=1.0)
    out = torch.matmul(weights, v).transpose(1, 2).contiguous()  # (B, q, H, D)
    if cfg["maskout_mode"] == "zero":
        for h in cfg["maskout"].get(layer, []):
            out[:, :, h] = 0.0
    return out, weights


AttentionInterface.register(REF_IMPL, _ref_attention)
AttentionMaskInterface.register(REF_IMPL, eager_mask)


@contextmanager
def ref_intervention(batch, strategy: Strategy):
    """Activate the reference with the interventions of `strategy` (by layer), always reset."""
    by_layer = lambda pairs: {l: [h for ll, h in pairs if ll == l] for l, _ in pairs}  # noqa: E731
    REF.cfg = {"maskout": by_layer(strategy.maskout), "maskout_mode": strategy.maskout_mode,
               "modify": by_layer(strategy.modify),
               "factor": strategy.modify_factor, "modify_mode": strategy.modify_mode, "steps": strategy.steps,
               "image_cols": [c.tolist() for c in batch.image_cols]}
    REF.calls = {}
    try:
        yield
    finally:
        REF.cfg = None
        REF.calls = {}


@pytest.fixture(scope="module")
def ref_vlm(tiny_ckpt):
    return load_vlm(str(tiny_ckpt), device="cpu", dtype="float32", attn_implementation=REF_IMPL)


@pytest.fixture(scope="module")
def gqa(tiny_gqa_ckpt):
    return (load_vlm(str(tiny_gqa_ckpt), device="cpu", dtype="float32"),
            load_vlm(str(tiny_gqa_ckpt), device="cpu", dtype="float32", attn_implementation="eager"))


@contextmanager
def o_proj_zero_hooks(vlm, pairs):
    """Zero each (layer, head)'s slice of o_proj's input: the textbook head ablation."""
    layers = vlm.model.model.language_model.layers
    d = vlm.model.config.text_config.hidden_size // vlm.num_heads
    handles = []
    for layer in sorted({l for l, _ in pairs}):
        heads = [h for l, h in pairs if l == layer]

        def pre(module, args, heads=heads):
            x = args[0].clone()  # (B, q, H * D)
            for h in heads:
                x[..., h * d:(h + 1) * d] = 0.0
            return (x,)
        handles.append(layers[layer].self_attn.o_proj.register_forward_pre_hook(pre))
    try:
        yield
    finally:
        for hd in handles:
            hd.remove()


def _real(batch):
    return batch.attention_mask.bool()


def _maxdiff(a, b, batch):
    real = _real(batch)
    return (a[real] - b[real]).abs().max().item()


# ---- maskout zero -----------------------------------------------------------------------------
PAIRS = [[1, 0], [1, 3], [2, 2], [3, 1]]


@pytest.mark.parametrize("n", [1, 3])
def test_maskout_zero_equals_o_proj_hook(tiny_vlm, tiny_eager, n):
    batch = tiny_vlm.prepare(_samples(n))
    plain = tiny_vlm.forward(batch).logits
    with AttentionStation().run(Strategy(maskout=PAIRS, capture=False), _inputs(batch)):
        ours = tiny_vlm.forward(batch).logits
    with o_proj_zero_hooks(tiny_eager, PAIRS):
        ref = tiny_eager.forward(batch).logits
    assert _maxdiff(ours, ref, batch) <= TOL
    assert _maxdiff(ours, plain, batch) > 1e-3  # the ablation really does something


def test_maskout_zero_gqa(gqa):
    vlm, eager = gqa
    pairs = [[0, 1], [0, 6], [2, 3], [3, 7]]  # heads sharing and not sharing a kv head
    batch = vlm.prepare(_samples(3))
    with AttentionStation().run(Strategy(maskout=pairs), _inputs(batch)) as run:
        ours = vlm.forward(batch).logits
    with o_proj_zero_hooks(eager, pairs):
        ref = eager.forward(batch).logits
    assert _maxdiff(ours, ref, batch) <= TOL
    assert run.image_attention(0).shape == (1, 4, 8, 16)


def test_maskout_zero_during_generate(tiny_vlm, tiny_eager):
    batch = tiny_vlm.prepare(_samples(3))
    with AttentionStation().run(Strategy(maskout=PAIRS, capture=False), _inputs(batch)):
        ours = tiny_vlm.model.generate(**batch.inputs, max_new_tokens=4, do_sample=False, eos_token_id=None,
                                       output_logits=True, return_dict_in_generate=True)
    with o_proj_zero_hooks(tiny_eager, PAIRS):
        ref = tiny_eager.model.generate(**batch.inputs, max_new_tokens=4, do_sample=False, eos_token_id=None,
                                        output_logits=True, return_dict_in_generate=True)
    assert ours.sequences.tolist() == ref.sequences.tolist()
    for a, b in zip(ours.logits, ref.logits):
        assert (a - b).abs().max().item() <= TOL


# ---- maskout uniform + modify against the reference attention function ------------------------
@pytest.mark.parametrize("strategy", [
    Strategy(maskout=PAIRS, maskout_mode="uniform"),
    Strategy(modify=PAIRS, modify_factor=3.0, modify_mode="image_reweight"),
    Strategy(modify=PAIRS, modify_factor=0.25, modify_mode="image_reweight"),
    Strategy(modify=[[0, 0], [2, 1]], modify_factor=0.0, modify_mode="image_reweight"),
    Strategy(modify=PAIRS, modify_factor=2.5, modify_mode="logits_scale"),
    Strategy(modify=PAIRS, modify_factor=0.0, modify_mode="logits_scale"),
    Strategy(maskout=[[1, 0], [2, 3]], maskout_mode="uniform", modify=[[1, 0], [2, 2]], modify_factor=4.0),
    Strategy(maskout=[[2, 3]], modify=[[2, 3], [3, 0]], modify_factor=3.0, modify_mode="logits_scale"),
], ids=["uniform", "reweight3", "reweight0.25", "reweight0", "scale2.5", "scale0", "uniform+reweight", "zero+scale"])
def test_interventions_match_reference(tiny_vlm, ref_vlm, strategy):
    """Logits equal the reference, and the captured rows are the intervened probabilities."""
    batch = tiny_vlm.prepare(_samples(3))
    strategy = dataclasses.replace(strategy, query_positions="all_input")
    plain = tiny_vlm.forward(batch).logits
    with AttentionStation().run(strategy, _inputs(batch)) as run:
        ours = tiny_vlm.forward(batch).logits
    with ref_intervention(batch, strategy):
        ref = ref_vlm.forward(batch, output_attentions=True)
    assert _maxdiff(ours, ref.logits, batch) <= TOL
    assert _maxdiff(ours, plain, batch) > 1e-4
    for b in range(3):
        off = batch.pad_offsets[b]
        got = run.image_attention(b)[off:]  # (Q, L, H, V) on the sample's own rows
        exp = torch.stack([a[b][:, off:][:, :, batch.image_cols[b]] for a in ref.attentions], dim=1)  # (H, L, Q, V)
        assert (got - exp.permute(2, 1, 0, 3)).abs().max().item() <= TOL


def test_reweight_is_a_log_bias(tiny_vlm):
    """image_reweight x f on a head == that head's post-softmax image weights x f, renormalised."""
    batch = tiny_vlm.prepare(_samples(1))
    with AttentionStation().run(Strategy(), _inputs(batch)) as r0:
        tiny_vlm.forward(batch)
    with AttentionStation().run(Strategy(modify=[[0, 1]], modify_factor=5.0), _inputs(batch)) as r1:
        tiny_vlm.forward(batch)
    # layer 0's input does not depend on the intervention: the reweighting is visible directly
    p0 = r0.image_attention(0)[0, 0, 1]  # (V,) plain image weights of the last query
    p1 = r1.image_attention(0)[0, 0, 1]
    s = p0.sum()
    assert torch.allclose(p1, 5 * p0 / (1 - s + 5 * s), atol=1e-6)
    assert torch.equal(r1.image_attention(0)[0, 0, 0], r0.image_attention(0)[0, 0, 0])  # other heads untouched


@pytest.mark.parametrize("mode", ["image_reweight", "logits_scale"])
def test_modify_factor_one_is_identity(tiny_vlm, mode):
    batch = tiny_vlm.prepare(_samples(3))
    plain = tiny_vlm.forward(batch).logits
    with AttentionStation().run(Strategy(modify=PAIRS, modify_factor=1.0, modify_mode=mode, capture=False), _inputs(batch)):
        ours = tiny_vlm.forward(batch).logits
    assert torch.equal(ours, plain)


def test_interventions_match_reference_gqa(tiny_gqa_ckpt, gqa):
    vlm, _ = gqa
    ref_vlm = load_vlm(str(tiny_gqa_ckpt), device="cpu", dtype="float32", attn_implementation=REF_IMPL)
    batch = vlm.prepare(_samples(3))
    for strategy in (Strategy(maskout=[[0, 1], [2, 5]], maskout_mode="uniform"),
                     Strategy(modify=[[0, 1], [1, 4], [3, 7]], modify_factor=3.0),
                     Strategy(modify=[[0, 1], [1, 4], [3, 7]], modify_factor=0.5, modify_mode="logits_scale")):
        with AttentionStation().run(strategy, _inputs(batch)):
            ours = vlm.model.generate(**batch.inputs, max_new_tokens=3, do_sample=False, eos_token_id=None,
                                      output_logits=True, return_dict_in_generate=True)
        with ref_intervention(batch, strategy):
            ref = ref_vlm.model.generate(**batch.inputs, max_new_tokens=3, do_sample=False, eos_token_id=None,
                                         output_logits=True, return_dict_in_generate=True)
        assert ours.sequences.tolist() == ref.sequences.tolist()
        for a, b in zip(ours.logits, ref.logits):  # decode steps: single query, GQA packed path
            assert (a - b).abs().max().item() <= TOL


# ---- steps: all vs prefill ----------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [
    Strategy(maskout=PAIRS, maskout_mode="zero"),
    Strategy(maskout=PAIRS, maskout_mode="uniform"),
    Strategy(modify=PAIRS, modify_factor=4.0),
    Strategy(modify=PAIRS, modify_factor=3.0, modify_mode="logits_scale"),
], ids=["zero", "uniform", "reweight", "scale"])
def test_steps_prefill_vs_all(tiny_vlm, ref_vlm, strategy):
    batch = tiny_vlm.prepare(_samples(3))
    gen = dict(max_new_tokens=4, do_sample=False, eos_token_id=None, output_logits=True, return_dict_in_generate=True)
    results = {}
    for steps in ("all", "prefill"):
        strategy = dataclasses.replace(strategy, steps=steps)
        with AttentionStation().run(strategy, _inputs(batch)):
            ours = tiny_vlm.model.generate(**batch.inputs, **gen)
        with ref_intervention(batch, strategy):
            ref = ref_vlm.model.generate(**batch.inputs, **gen)
        assert ours.sequences.tolist() == ref.sequences.tolist(), steps
        for a, b in zip(ours.logits, ref.logits):
            assert (a - b).abs().max().item() <= TOL, steps
        results[steps] = ours
    # the first step (prefill) is the same; later steps see different caches/interventions
    assert torch.equal(results["all"].logits[0], results["prefill"].logits[0])
    assert max((a - b).abs().max().item() for a, b in zip(results["all"].logits[1:], results["prefill"].logits[1:])) > 1e-4


# ---- cleanup and validation ----------------------------------------------------------------------
def test_nothing_leaks_after_the_block(tiny_vlm):
    batch = tiny_vlm.prepare(_samples(3))
    plain = tiny_vlm.forward(batch).logits
    station = AttentionStation()
    with station.run(Strategy(maskout=PAIRS, capture=False), _inputs(batch)):
        masked = tiny_vlm.forward(batch).logits
    assert not torch.equal(masked, plain)
    assert torch.equal(tiny_vlm.forward(batch).logits, plain)
    with pytest.raises(KeyboardInterrupt):
        with station.run(Strategy(maskout=PAIRS, modify=[[0, 0]], modify_factor=3.0), _inputs(batch)):
            tiny_vlm.forward(batch)
            raise KeyboardInterrupt
    assert active_sink() is None
    assert torch.equal(tiny_vlm.forward(batch).logits, plain)


def test_nested_runs_do_not_mix_interventions(tiny_vlm):
    batch = tiny_vlm.prepare(_samples(1))
    station = AttentionStation()
    with station.run(Strategy(maskout=PAIRS, capture=False), _inputs(batch)):
        outer = tiny_vlm.forward(batch).logits
        with station.run(Strategy(capture=False), _inputs(batch)):
            inner = tiny_vlm.forward(batch).logits
        again = tiny_vlm.forward(batch).logits
    assert torch.equal(inner, tiny_vlm.forward(batch).logits)
    assert torch.equal(outer, again) and not torch.equal(outer, inner)


def test_collect_with_maskout_records_interventions(tiny_vlm):
    (rec,) = collect(tiny_vlm, _samples(1), Strategy(maskout=[[1, 2]]), max_new_tokens=2)
    assert rec.meta.interventions["maskout"] == [[1, 2]] and rec.meta.interventions["maskout_mode"] == "zero"
    (plain,) = collect(tiny_vlm, _samples(1), Strategy(), max_new_tokens=2)
    assert plain.meta.interventions == {}


@pytest.mark.parametrize("kwargs,needle", [
    (dict(maskout=[[4, 0]]), "strategy.maskout has [4, 0]"),
    (dict(maskout=[[0, 4]]), "strategy.maskout has [0, 4]"),
    (dict(maskout=[[-1, 0]]), "strategy.maskout=[[-1, 0]] must be a list of [layer, head] pairs of integers >= 0"),
    (dict(modify=[[1, 9]], modify_factor=2.0), "strategy.modify has [1, 9]"),
    (dict(layers=[7]), "strategy.layers=[7]"),
    (dict(heads=[4]), "strategy.heads=[4]"),
])
def test_out_of_range_is_a_user_error(tiny_vlm, kwargs, needle):
    with pytest.raises(UserError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        collect(tiny_vlm, _samples(1), Strategy(**kwargs))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(maskout=[[1]]), "strategy.maskout=[[1]] must be a list of [layer, head] pairs"),
    (dict(maskout_mode="half"), "strategy.maskout_mode='half'"),
    (dict(modify_mode="bias"), "strategy.modify_mode='bias'"),
    (dict(modify_factor=-1.0), "strategy.modify_factor=-1.0"),
    (dict(steps="decode"), "strategy.steps='decode'"),
])
def test_bad_strategy_values(kwargs, needle):
    with pytest.raises(UserError) as e:
        Strategy(**kwargs)
    assert needle in str(e.value)


def test_log_bias_identity():
    """The algebra behind image_reweight: softmax(x + log f * 1_img) == renormalised f-weighting."""
    x = torch.randn(7)
    img = torch.tensor([0, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    f = 3.7
    p = torch.softmax(x, -1)
    w = torch.where(img, p * f, p)
    assert torch.allclose(torch.softmax(torch.where(img, x + math.log(f), x), -1), w / w.sum(), atol=1e-7)
