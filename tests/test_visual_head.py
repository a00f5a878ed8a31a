"""strategy.maskout_mode=visual_head / modify_mode=visual_head / query_positions=first_generated against
a reference attention function written from Bi et al.'s released forward (jing-bi/visual-head 4de0a427,
`llava/model/forward.py` `llama_attn_bforward`, `modify`, `maskout`, `att_mask_image_center`).

The reference follows their order of operations on eager math:
    logits = q k^T / sqrt(d); logits = modify(token_map, logits, mask); logits += mask;
    logits[:, masked heads] = 0; softmax (float32); @ v
with their modify: prefill -> factor where token_map[i] * token_map[j] != 0 and the pair is allowed
(outer product, then zeroed where the additive mask is non-zero); a decoding step -> the token map
right-padded with 0 to the key length, key-only. All heads of all layers. Float32 tiny models.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.clip.modeling_clip import eager_attention_forward as clip_eager
from transformers.models.llama.modeling_llama import repeat_kv

from lab.capture.station import AttentionStation, RunInputs, Strategy, collect
from llava.model import load_vlm
from utils.errors import UserError

TOL = 1e-5
IMPL = "visual_head_reference"


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


class _Bi:
    """Their `Strategy` singleton, reduced to what `maskout` / `modify` read."""

    conf: dict | None = None


def _bi_modify(token_map, attention, causal):
    """Their `modify` with map == "center" (token_map: (B, S0) 0/1)."""
    s = _Bi.conf
    if s["highlight"] in ("visual", "plain"):
        return attention
    mask = token_map
    if attention.size(-2) == 1:
        if s["step"] == "once":
            return attention
        mask = torch.nn.functional.pad(mask, (0, attention.size(-1) - mask.size(-1)), "constant", 0)
        m = mask.unsqueeze(1).unsqueeze(2)  # (B, 1, 1, K): key-only
    else:
        m = mask.unsqueeze(2)
        m = m * m.transpose(1, 2)  # (B, S, S): m_i * m_j
        m = m.unsqueeze(1).clone()  # (B, 1, S, S)
        m[causal != 0] = 0
    factor = torch.where(m != 0, torch.tensor(s["value"]), torch.tensor(1.0))
    return attention * factor


def _bi_maskout(attention, layer_idx):
    s = _Bi.conf
    if "maskout" not in s["name"]:
        return attention
    heads = [h for l, h in s["heads"] if l == layer_idx]
    if heads:
        attention[:, heads, :, :] = 0
    return attention


def _reference(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    layer = getattr(module, "layer_idx", None)
    if layer is None:  # vision tower
        return clip_eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    k = repeat_kv(key, module.num_key_value_groups)
    v = repeat_kv(value, module.num_key_value_groups)
    attn = torch.matmul(query, k.transpose(2, 3)) * scaling  # (B, H, q, S)
    causal = attention_mask[:, :, :, : k.shape[-2]] if attention_mask is not None else torch.zeros_like(attn[:, :1])
    if _Bi.conf is not None:
        attn = _bi_modify(_Bi.conf.get("token_map"), attn, causal)
    attn = attn + causal
    if _Bi.conf is not None:
        attn = _bi_maskout(attn, layer)
    attn = torch.softmax(attn, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(attn, v).transpose(1, 2).contiguous(), attn


AttentionInterface.register(IMPL, _reference)
AttentionMaskInterface.register(IMPL, eager_mask)


@contextmanager
def bi_strategy(**conf):
    highlight = "imagetoken" if "token_map" in conf else "plain"  # "plain": their modify is off
    _Bi.conf = {"name": "", "heads": [], "highlight": highlight, "step": "all", "value": 1.0, **conf}
    try:
        yield
    finally:
        _Bi.conf = None


@pytest.fixture(scope="module")
def ref_vlm(tiny_ckpt):
    return load_vlm(str(tiny_ckpt), device="cpu", dtype="float32", attn_implementation=IMPL)


def _token_map(batch, cells=None) -> torch.Tensor:
    """(B, S) 0/1: 1 on the image tokens (all, or the V indices in `cells`), as their `highlight_mask`."""
    ids = batch.inputs["input_ids"]
    m = torch.zeros(ids.shape, dtype=torch.long)
    for b, cols in enumerate(batch.image_cols):
        chosen = cols if cells is None else cols[list(cells)]
        m[b, chosen] = 1
    return m


_IMG = Image.fromarray(np.random.default_rng(3).integers(0, 255, (56, 56, 3), dtype=np.uint8))
ONE = [(_IMG, "what color is the circle ?")]
TWO = [(_IMG, "what color is the circle on the left of the picture ?"),
       (Image.new("RGB", (80, 50), (220, 30, 30)), "what")]  # left padding in row 1


def _real_max(a, b, batch):
    real = batch.attention_mask.bool()
    return (a[real] - b[real]).abs().max().item()


@pytest.mark.parametrize("pairs", [[[0, 1], [0, 3]], [[1, 0], [2, 2], [3, 1]]])
def test_maskout_visual_head_equals_reference_one_sample(tiny_vlm, ref_vlm, pairs):
    batch = tiny_vlm.prepare(ONE)
    strategy = Strategy(maskout=pairs, maskout_mode="visual_head", query_positions="all_input")
    with AttentionStation().run(strategy, RunInputs(batch.attention_mask, batch.image_cols)) as run:
        ours = tiny_vlm.forward(batch).logits
    with bi_strategy(name="maskout", heads=pairs):
        ref_out = ref_vlm.forward(batch, output_attentions=True)
    assert _real_max(ours, ref_out.logits, batch) <= TOL
    # captured rows = their post-softmax weights on the image columns: uniform 1/S on every row of a masked head
    att = run.image_attention(0)  # (Q, L, H, V)
    cols = batch.image_cols[0]
    for layer in range(tiny_vlm.num_layers):
        ref_att = ref_out.attentions[layer][0][:, :, cols]  # (H, S, V)
        assert (att[:, layer] - ref_att.permute(1, 0, 2)).abs().max().item() <= TOL
    layer, head = pairs[0]
    S = batch.inputs["input_ids"].shape[1]
    assert torch.allclose(att[:, layer, head], torch.full_like(att[:, layer, head], 1.0 / S))
    # not "uniform" (over visible keys only): the rows before the last differ, the last row agrees
    with AttentionStation().run(Strategy(maskout=pairs, maskout_mode="uniform"),
                                RunInputs(batch.attention_mask, batch.image_cols)):
        uni = tiny_vlm.forward(batch).logits
    assert (uni[0, :-1] - ours[0, :-1]).abs().max().item() > 1e-3


def test_maskout_visual_head_leaks_into_padding_keys(tiny_vlm, ref_vlm):
    """Layer-0 heads: padding keys' values are the same embeddings in both runs, so the leak is comparable."""
    pairs = [[0, 0], [0, 2]]
    batch = tiny_vlm.prepare(TWO)
    assert int(batch.attention_mask[1].sum()) < batch.attention_mask.shape[1]  # row 1 is padded
    with AttentionStation().run(Strategy(maskout=pairs, maskout_mode="visual_head", capture=False),
                                RunInputs(batch.attention_mask, batch.image_cols)):
        ours = tiny_vlm.forward(batch).logits
    with bi_strategy(name="maskout", heads=pairs):
        ref = ref_vlm.forward(batch).logits
    assert _real_max(ours, ref, batch) <= TOL
    alone = tiny_vlm.prepare(TWO[1:])
    with AttentionStation().run(Strategy(maskout=pairs, maskout_mode="visual_head", capture=False),
                                RunInputs(alone.attention_mask, alone.image_cols)):
        unpadded = tiny_vlm.forward(alone).logits
    assert (unpadded[0, -1] - ours[1, -1]).abs().max().item() > 1e-4  # padding changed the answer's logits


@pytest.mark.parametrize("step", ["all", "once"])
def test_modify_visual_head_all_heads_during_generate(tiny_vlm, ref_vlm, step):
    batch = tiny_vlm.prepare(ONE)
    strategy = Strategy(modify_mode="visual_head", modify_factor=3.0, steps="all" if step == "all" else "prefill",
                        capture=False)
    with AttentionStation().run(strategy, RunInputs(batch.attention_mask, batch.image_cols, batch.layouts)):
        ours = tiny_vlm.model.generate(**batch.inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4,
                                       output_logits=True, return_dict_in_generate=True)
    with bi_strategy(value=3.0, step=step, token_map=_token_map(batch)):
        ref = ref_vlm.model.generate(**batch.inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4,
                                     output_logits=True, return_dict_in_generate=True)
    plain = tiny_vlm.model.generate(**batch.inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4,
                                    output_logits=True, return_dict_in_generate=True)
    assert torch.equal(ours.sequences, ref.sequences)
    for a, b in zip(ours.logits, ref.logits):
        assert (a - b).abs().max().item() <= TOL
    assert max((a - b).abs().max().item() for a, b in zip(ours.logits[1:], plain.logits[1:])) > 1e-3


def test_modify_visual_head_leaves_text_rows_alone_in_prefill(tiny_vlm):
    """Prefill: only image->image pairs are scaled, so the last (text) row's attention to the image,
    in layer 0 (whose input is the same), is untouched."""
    batch = tiny_vlm.prepare(ONE)
    inputs = RunInputs(batch.attention_mask, batch.image_cols, batch.layouts)
    with AttentionStation().run(Strategy(), inputs) as run:
        tiny_vlm.forward(batch)
    plain = run.image_attention(0)
    with AttentionStation().run(Strategy(modify_mode="visual_head", modify_factor=20.0), inputs) as run:
        tiny_vlm.forward(batch)
    mod = run.image_attention(0)
    assert (mod[0, 0] - plain[0, 0]).abs().max().item() <= TOL
    assert (mod[0, 1:] - plain[0, 1:]).abs().max().item() > 1e-4  # later layers see changed image states


def test_modify_visual_head_highlight_box_equals_reference(tiny_vlm, ref_vlm):
    """56x56 image, centre crop = identity, 4x4 grid of 14 px cells: [0, 0, 20, 20] overlaps the top-left
    2x2 cells (token indices 0, 1, 4, 5); [14, 0, 14, 14] exactly one cell (touching edges do not count)."""
    batch = tiny_vlm.prepare(ONE)
    for box, cells in (([0, 0, 20, 20], [0, 1, 4, 5]), ([14, 0, 14, 14], [1])):
        strategy = Strategy(modify_mode="visual_head", modify_factor=5.0, highlight_box=box, capture=False)
        with AttentionStation().run(strategy, RunInputs(batch.attention_mask, batch.image_cols, batch.layouts)) as run:
            ours = tiny_vlm.forward(batch).logits
        assert run.highlight[0].nonzero().flatten().tolist() == cells
        with bi_strategy(value=5.0, token_map=_token_map(batch, cells)):
            ref = ref_vlm.forward(batch).logits
        assert _real_max(ours, ref, batch) <= TOL


def test_first_generated_is_the_first_decoding_query(tiny_vlm):
    samples = ONE
    (first,) = collect(tiny_vlm, samples, Strategy(query_positions="first_generated"), max_new_tokens=3)
    (gen,) = collect(tiny_vlm, samples, Strategy(query_positions="generated"), max_new_tokens=3)
    assert first.meta.query_mode == "first_generated"
    assert first.image_attention.shape[0] == 1
    assert first.meta.query_positions == [len(first.input_ids)]
    assert first.meta.query_tokens == [gen.meta.generated_tokens[0]]
    assert np.abs(first.image_attention[0] - gen.image_attention[1]).max() <= TOL


def test_visual_head_options_validate():
    with pytest.raises(UserError, match="maskout_mode"):
        Strategy(maskout_mode="leaky")
    with pytest.raises(UserError, match="highlight_box"):
        Strategy(highlight_box=[0, 0, 10, 10])  # needs modify_mode=visual_head
    with pytest.raises(UserError, match="w, h > 0"):
        Strategy(modify_mode="visual_head", highlight_box=[0, 0, 0, 10])
    assert Strategy(modify_mode="visual_head", modify_factor=2.0).modify_all_heads
    assert not Strategy(modify_mode="visual_head", modify_factor=2.0, modify=[[1, 0]]).modify_all_heads


def test_visual_head_maskout_in_padded_batches_says_so(capsys):
    """One warning line for Bi et al.'s maskout with batch_size > 1 (its answers depend on padding);
    none for batch_size=1, for the project's own modes, or without masked heads."""
    from lab.capture.station import warn_visual_head_padding

    line = warn_visual_head_padding("visual_head", True, 8, "ablation")
    assert line and line.startswith("warning: ablation.maskout_mode=visual_head with batch_size=8") and "batch_size=1" in line
    assert capsys.readouterr().out == line + "\n"
    assert [warn_visual_head_padding(*a) for a in (("visual_head", True, 1), ("zero", True, 8), ("uniform", True, 8),
                                                    ("visual_head", False, 8))] == [None] * 4
    assert capsys.readouterr().out == ""
