"""model.prompt_template=referseg: Kang et al.'s released prompt and its lone-space strip.

The release (llava/conversation.py referseg, collector.py, lab/capture/station.py prompt_segments) feeds
``system "\\n" <image> "\\n" expression`` with every LLaMA "▁" token (id 29871) removed, so the query
token is the expression's last piece. The toy tokenizer has no such token; a SentencePiece-like
(Metaspace, digits split like LLaMA's) word tokenizer built here has one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab.capture.station import Strategy, collect
from llava.model import VLM, load_vlm
from llava.prompts import REFERSEG_SYSTEM, lone_space_ids, strip_tokens

TOY = str(Path(__file__).resolve().parents[1] / "llava" / "toy" / "checkpoint")
IMG = Image.fromarray(np.random.default_rng(5).integers(0, 255, (40, 70, 3), dtype=np.uint8))


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


@pytest.fixture(scope="module")
def metaspace_vlm(tiny_vlm):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlavaProcessor, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "\u2581", "2", "\u2581the", "\u2581red", "\u2581one", "\u2581cup"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    p = tiny_vlm.processor
    proc = LlavaProcessor(image_processor=p.image_processor, tokenizer=fast, patch_size=p.patch_size,
                          vision_feature_select_strategy=p.vision_feature_select_strategy, num_additional_image_tokens=1)
    assert proc.tokenizer.convert_tokens_to_ids("<image>") == tiny_vlm.image_token_id
    return lambda template: VLM(tiny_vlm.model, proc, model_id="metaspace", prompt_template=template)


def test_lone_spaces_are_stripped_and_the_query_is_the_last_word(metaspace_vlm):
    vlm = metaspace_vlm("referseg")
    assert lone_space_ids(vlm.processor.tokenizer) == [5]
    (rec,) = collect(vlm, [(IMG, "the red 2")], Strategy())
    assert 5 not in rec.input_ids.tolist()
    assert rec.meta.query_tokens == ["2"]
    assert rec.meta.prompt == f"{REFERSEG_SYSTEM}\n<image>\nthe red 2"
    (plain,) = collect(metaspace_vlm("plain"), [(IMG, "the red 2")], Strategy())
    assert plain.input_ids.tolist().count(5) >= 1  # " 2" -> "▁", "2" is kept without the strip
    assert rec.input_ids.tolist()[-3:] == [1, 8, 6]  # "\nthe" (unknown), "▁red", "2": the "▁" before 2 is gone


def test_strip_keeps_a_padded_batch_equal_to_single_samples(metaspace_vlm):
    vlm = metaspace_vlm("referseg")
    queries = ["the red 2", "the 2 red 2 one 2 cup"]
    batch = vlm.prepare([(IMG, q) for q in queries])
    logits = vlm.forward(batch).logits
    for b, q in enumerate(queries):
        alone = vlm.prepare([(IMG, q)])
        assert torch.equal(batch.input_ids[b], alone.input_ids[0])
        assert 5 not in alone.input_ids[0].tolist()
        ref = vlm.forward(alone).logits
        assert (logits[b, -1] - ref[0, -1]).abs().max().item() <= 1e-5
    am = batch.attention_mask
    assert am[1].all() and not am[0].all()  # the longer row fills the width; left padding in front of the other


def test_strip_tokens_unit():
    enc = {"input_ids": torch.tensor([[0, 7, 5, 6], [7, 5, 8, 5]]), "attention_mask": torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])}
    out = strip_tokens(enc, [5], pad_id=0)
    assert out["input_ids"].tolist() == [[7, 6], [7, 8]] and out["attention_mask"].tolist() == [[1, 1], [1, 1]]
    same = strip_tokens(enc, [99], pad_id=0)
    assert same is enc


def test_toy_referseg_captures_the_expression_last_word():
    vlm = load_vlm(TOY, device="cpu", dtype="float32", prompt_template="referseg")
    recs = collect(vlm, [(IMG, "the red one"), (IMG, "purple square")], Strategy())
    assert [r.meta.query_tokens for r in recs] == [["one"], ["square"]]
    chat = load_vlm(TOY, device="cpu", dtype="float32")
    (c,) = collect(chat, [(IMG, "the red one")], Strategy())
    assert c.meta.query_tokens == [":"]  # the chat template's "ASSISTANT:"
