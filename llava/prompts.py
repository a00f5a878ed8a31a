"""Prompt forms that are not the processor's chat template: Kang et al.'s released "referseg" prompt.

The released collector (seilk/LocalizationHeads `llava/conversation.py` referseg + `collector.py`)
builds ``system + "\\n" + "<image>" + "\\n" + expression`` with no assistant turn, so the last
input token (the query token whose attention is analysed) is the expression's last piece. Its
tokenizer step (`lab/capture/station.py` prompt_segments) then removes *every* lone whitespace token
(LLaMA's "▁", id 29871) from the whole sequence: the one SentencePiece puts before the "\\n" that
follows the image, and any other, e.g. before a digit (" 2" -> "▁", "2").

`referseg_prompt` builds the text; `lone_space_ids` finds a tokenizer's lone-space tokens (the
pieces "▁", "Ġ" or " "); `strip_tokens` removes given ids from a left-padded processor output.
"""

from __future__ import annotations

from typing import Iterable

import torch

REFERSEG_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
LONE_SPACE_PIECES = ("\u2581", "\u0120", " ")  # SentencePiece "▁", byte-level BPE "Ġ", a plain space


def referseg_prompt(query: str, image_text: str) -> str:
    """The released referseg prompt: system sentence, newline, the image, newline, the expression."""
    return f"{REFERSEG_SYSTEM}\n{image_text}\n{query}"


def lone_space_ids(tokenizer) -> list[int]:
    """Ids of the tokens whose piece is a lone space ("▁" / "Ġ" / " "), e.g. [29871] for LLaMA."""
    vocab = tokenizer.get_vocab()
    return sorted({int(vocab[p]) for p in LONE_SPACE_PIECES if p in vocab})


def strip_tokens(enc: dict, drop: Iterable[int], pad_id: int) -> dict:
    """Remove every token in `drop` from a left-padded batch (`input_ids`, `attention_mask`, and any
    other per-token tensor of the same shape) and left-pad the rows again to their new longest length."""
    drop_t = torch.tensor(sorted(set(int(d) for d in drop)), dtype=torch.long)
    ids, am = enc["input_ids"], enc["attention_mask"]
    if drop_t.numel() == 0:
        return enc
    keep = am.bool() & ~torch.isin(ids, drop_t)  # (B, S)
    if bool((keep == am.bool()).all()):
        return enc
    lengths = keep.sum(-1)
    width = int(lengths.max())
    per_token = [k for k, v in enc.items() if isinstance(v, torch.Tensor) and v.shape == ids.shape]
    out = dict(enc)
    for k in per_token:
        fill = pad_id if k == "input_ids" else 0
        new = torch.full((ids.shape[0], width), fill, dtype=enc[k].dtype)
        for b in range(ids.shape[0]):
            row = enc[k][b][keep[b]]
            new[b, width - row.numel():] = row
        out[k] = new
    return out
