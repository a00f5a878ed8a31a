"""The capture attention function against transformers' own eager attention (float32, <= 1e-5)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lab.capture.station import AttentionStation, RunInputs, Strategy, collect
from llava.model import load_vlm
from utils.contracts.capture import active_sink

TOL = 1e-5


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def _images():
    return [
        Image.new("RGB", (80, 50), (220, 30, 30)),
        Image.linear_gradient("L").convert("RGB").resize((40, 90)),
        Image.effect_noise((60, 60), 40).convert("RGB"),
    ]


QUERIES = ["what color is the circle ?", "what", "where is the red object on the left of the picture ?"]


def _eager_rows(eager, batch, rows_per_sample):
    out = eager.forward(batch, output_attentions=True)
    res = []
    for b, rows in enumerate(rows_per_sample):
        res.append(torch.stack([a[b][:, rows][:, :, batch.image_cols[b]] for a in out.attentions], dim=1))  # (H, L, Q, V)
    return [r.permute(2, 1, 0, 3) for r in res], out  # (Q, L, H, V)


@pytest.mark.parametrize("n", [1, 3])
def test_last_input_matches_eager(tiny_vlm, tiny_eager, n):
    batch = tiny_vlm.prepare(list(zip(_images()[:n], QUERIES[:n])))
    with AttentionStation().run(Strategy(), RunInputs(batch.attention_mask, batch.image_cols)) as run:
        tiny_vlm.forward(batch)
    last = batch.attention_mask.shape[1] - 1  # left padding: every prompt ends at the last column
    ref, _ = _eager_rows(tiny_eager, batch, [[last]] * n)
    for b in range(n):
        got = run.image_attention(b)
        assert got.shape == (1, tiny_vlm.num_layers, tiny_vlm.num_heads, 16)
        assert (got - ref[b]).abs().max().item() <= TOL
        assert got.sum() > 0


def test_padding_really_happens(tiny_vlm):
    batch = tiny_vlm.prepare(list(zip(_images(), QUERIES)))
    assert len({len(x) for x in batch.input_ids}) == 3
    assert batch.pad_offsets[0] > 0 and min(batch.pad_offsets) == 0


def test_all_input_rows_match_eager(tiny_vlm, tiny_eager):
    batch = tiny_vlm.prepare(list(zip(_images(), QUERIES)))
    recs = collect(tiny_vlm, batch.samples, Strategy(query_positions="all_input"))
    ref, _ = _eager_rows(tiny_eager, batch, [list(range(o, batch.attention_mask.shape[1])) for o in batch.pad_offsets])
    for b, rec in enumerate(recs):
        assert rec.image_attention.shape[0] == len(batch.input_ids[b])
        assert abs(rec.image_attention - ref[b].numpy()).max() <= TOL


def test_gqa_matches_eager(tiny_gqa_ckpt):
    vlm = load_vlm(str(tiny_gqa_ckpt), device="cpu", dtype="float32")
    eager = load_vlm(str(tiny_gqa_ckpt), device="cpu", dtype="float32", attn_implementation="eager")
    assert vlm.model.config.text_config.num_key_value_heads == 2 and vlm.num_heads == 8
    batch = vlm.prepare(list(zip(_images(), QUERIES)))
    with AttentionStation().run(Strategy(), RunInputs(batch.attention_mask, batch.image_cols)) as run:
        vlm.forward(batch)
    last = batch.attention_mask.shape[1] - 1
    ref, _ = _eager_rows(eager, batch, [[last]] * 3)
    for b in range(3):
        assert (run.image_attention(b) - ref[b]).abs().max().item() <= TOL


def test_generated_tokens_match_eager_generate(tiny_vlm, tiny_eager):
    batch = tiny_vlm.prepare(list(zip(_images(), QUERIES)))
    with AttentionStation().run(Strategy(query_positions="generated"), RunInputs(batch.attention_mask, batch.image_cols)) as run:
        ours = tiny_vlm.generate(batch, max_new_tokens=5, eos_token_id=None)
    ref = tiny_eager.model.generate(**batch.inputs, max_new_tokens=5, do_sample=False, eos_token_id=None,
                                    output_attentions=True, return_dict_in_generate=True)
    s = batch.inputs["input_ids"].shape[1]
    assert [o.tolist() for o in ours] == ref.sequences[:, s:].tolist()
    for b in range(3):
        got = run.image_attention(b)
        assert got.shape[0] == 5
        for t, step in enumerate(ref.attentions):
            exp = torch.stack([a[b, :, -1, batch.image_cols[b]] for a in step])  # (L, H, V)
            assert (got[t] - exp).abs().max().item() <= TOL, f"sample {b} step {t}"


def test_capture_does_not_change_logits(tiny_vlm):
    batch = tiny_vlm.prepare(list(zip(_images(), QUERIES)))
    plain = tiny_vlm.forward(batch).logits
    with AttentionStation().run(Strategy(query_positions="all_input"), RunInputs(batch.attention_mask, batch.image_cols)):
        captured = tiny_vlm.forward(batch).logits
    assert torch.equal(plain, captured)


def test_sdpa_logits_agree_with_eager_on_real_tokens(tiny_vlm, tiny_eager):
    batch = tiny_vlm.prepare(list(zip(_images(), QUERIES)))
    ours = tiny_vlm.forward(batch).logits
    ref = tiny_eager.forward(batch).logits
    real = batch.attention_mask.bool()
    assert (ours[real] - ref[real]).abs().max().item() <= 1e-4


def test_vision_tower_untouched_and_only_text_layers_captured(tiny_vlm):
    batch = tiny_vlm.prepare(list(zip(_images()[:1], QUERIES[:1])))
    calls = []
    with AttentionStation().run(Strategy(), RunInputs(batch.attention_mask, batch.image_cols)) as run:
        orig = run.plan
        run.plan = lambda layer_idx, **kw: (calls.append(layer_idx), orig(layer_idx, **kw))[1]
        tiny_vlm.forward(batch)
    assert sorted(calls) == list(range(tiny_vlm.num_layers))
    assert run.layers == list(range(tiny_vlm.num_layers))


def test_layer_and_head_subsets(tiny_vlm, tiny_eager):
    batch = tiny_vlm.prepare(list(zip(_images()[:1], QUERIES[:1])))
    (rec,) = collect(tiny_vlm, batch.samples, Strategy(layers=[1, 3], heads=[0, 2]))
    assert rec.image_attention.shape == (1, 2, 2, 16)
    ref, _ = _eager_rows(tiny_eager, batch, [[batch.attention_mask.shape[1] - 1]])
    exp = ref[0][:, [1, 3]][:, :, [0, 2]]
    assert abs(rec.image_attention - exp.numpy()).max() <= TOL


def test_no_leak_outside_the_context(tiny_vlm):
    batch = tiny_vlm.prepare(list(zip(_images()[:1], QUERIES[:1])))
    station = AttentionStation()
    with pytest.raises(RuntimeError):
        with station.run(Strategy(), RunInputs(batch.attention_mask, batch.image_cols)):
            assert active_sink() is not None
            raise RuntimeError("boom")
    assert active_sink() is None
    outer = Strategy()
    inner = Strategy(layers=[0])
    with station.run(outer, RunInputs(batch.attention_mask, batch.image_cols)) as r1:
        with station.run(inner, RunInputs(batch.attention_mask, batch.image_cols)) as r2:
            tiny_vlm.forward(batch)
        assert active_sink() is r1
        tiny_vlm.forward(batch)
    assert r2.layers == [0] and r1.layers == list(range(tiny_vlm.num_layers))
    assert active_sink() is None
