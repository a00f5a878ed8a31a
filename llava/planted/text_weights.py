"""The Llama side of the planted model: embeddings, the 1,024 heads, norms and the answer read-out.

Every RMSNorm weight is TEXT_ANCHOR / sqrt(TEXT_WIDTH), so a normalised token equals the raw one
when only the anchor is large (all tokens here: the other features are <= ~3 against an anchor of
8); heads are written in raw feature units. A "score functional" head has a constant query
(sqrt(head_dim) in one still rotary dim, read from the anchor) and a key that is a linear
functional of the key token's features, so its logit on token j is sum_f coef_f * x_j[f]: no
dependence on the query token or on position.
"""

from __future__ import annotations

import math

import torch

from llava.planted import layout as Lo
from llava.planted.weights import (ANSWER_EOS, ANSWER_GAIN, COPY_BOS, COPY_SCORE, FIXED_BOS, LOC_IMAGE, LOC_SCORE, REST_BOS,
                                   VISUAL_SCORE, VISUAL_SPECKLE, Strengths)
from llava.planted.scenes import COLORS

U0 = Lo.STILL_DIMS[0]  # the still rotary dim score-functional heads use


class HeadWriter:
    """Accumulates q/k/v/o matrices of one layer ([heads * head_dim, width] / [width, heads * head_dim])."""

    def __init__(self):
        n = Lo.N_HEADS * Lo.HEAD_DIM
        self.q = torch.zeros(n, Lo.TEXT_WIDTH)
        self.k = torch.zeros(n, Lo.TEXT_WIDTH)
        self.v = torch.zeros(n, Lo.TEXT_WIDTH)
        self.o = torch.zeros(Lo.TEXT_WIDTH, n)

    def functional(self, head: int, coefs: dict[int, float]) -> None:
        """Logit of every key token j = sum coef_f x_j[f] (constant query)."""
        r = head * Lo.HEAD_DIM + U0
        self.q[r, Lo.T_ANCHOR] = math.sqrt(Lo.HEAD_DIM) / Lo.TEXT_ANCHOR
        for f, c in coefs.items():
            self.k[r, f] += float(c)

    def bilinear(self, head: int, q_dims: list[int], k_dims: list[int], gain: float) -> None:
        """Logit = gain * sum_i x_query[q_dims[i]] * x_key[k_dims[i]] (one still dim per pair)."""
        if len(q_dims) > len(Lo.STILL_DIMS):
            raise ValueError(f"{len(q_dims)} pairs but only {len(Lo.STILL_DIMS)} still rotary dims")
        a = math.sqrt(gain * math.sqrt(Lo.HEAD_DIM))
        for i, (qd, kd) in enumerate(zip(q_dims, k_dims)):
            r = head * Lo.HEAD_DIM + Lo.STILL_DIMS[i]
            self.q[r, qd] = a
            self.k[r, kd] = a

    def image_bias(self, head: int, n_pairs: int, bias: float) -> None:
        """Add `bias` to a bilinear head's logit on image tokens, for a query whose first `n_pairs`
        query dims sum to 1 (one colour named): key rows of those pairs also read T_IMG."""
        for i in range(n_pairs):
            r = head * Lo.HEAD_DIM + Lo.STILL_DIMS[i]
            self.k[r, Lo.T_IMG] += bias * math.sqrt(Lo.HEAD_DIM) / float(self.q[r].abs().max())

    def move(self, head: int, src: list[int], dst: list[int]) -> None:
        """The head's output adds its attention-weighted x[src] into dst."""
        for i, (s, d) in enumerate(zip(src, dst)):
            self.v[head * Lo.HEAD_DIM + i, s] = 1.0
            self.o[d, head * Lo.HEAD_DIM + i] = 1.0


def layer_writers(plan: Lo.HeadPlan, st: Strengths) -> list[HeadWriter]:
    """q/k/v/o of all 32 layers, head by head."""
    writers = [HeadWriter() for _ in range(Lo.N_LAYERS)]
    roles = {}
    for lh in plan.localization:
        roles[lh] = ("loc", 0)
    for i, lh in enumerate(plan.visual):
        roles[lh] = ("visual", i)
    for i, lh in enumerate(plan.fixed):
        roles[lh] = ("fixed", i)
    roles[plan.copy] = ("copy", 0)
    tcol = list(range(Lo.T_TCOL, Lo.T_TCOL + Lo.N_COLORS))
    pcol = list(range(Lo.T_PCOL, Lo.T_PCOL + Lo.N_COLORS))
    for layer in range(Lo.N_LAYERS):
        w = writers[layer]
        for head in range(Lo.N_HEADS):
            role, i = roles.get((layer, head), ("rest", 0))
            if role == "copy":
                w.functional(head, {Lo.T_CWORD: COPY_SCORE, Lo.T_BOS: COPY_BOS})
                w.move(head, tcol, tcol)
            elif role == "loc":
                w.bilinear(head, tcol, pcol, LOC_SCORE)
                w.image_bias(head, len(tcol), LOC_IMAGE)
                w.move(head, [Lo.T_ROW, Lo.T_COL], [Lo.T_POS_ROW, Lo.T_POS_COL])
            elif role == "visual":
                a = float(st.visual_angle[i])
                w.functional(head, {Lo.T_IMG: VISUAL_SCORE, Lo.T_SPECKLE: VISUAL_SPECKLE * math.cos(a),
                                    Lo.T_SPECKLE + 1: VISUAL_SPECKLE * math.sin(a)})
            elif role == "fixed":
                s = float(st.fixed_score[i])
                coefs = {Lo.T_FIXED + i: s, Lo.T_BOS: s + FIXED_BOS}
                coefs.update({Lo.T_PCOL + c: s + float(st.fixed_leak[i, c]) for c in range(Lo.N_COLORS)})
                w.functional(head, coefs)
            else:
                w.functional(head, {Lo.T_BOS: REST_BOS, Lo.T_IMG: float(st.rest_image[layer, head]),
                                    Lo.T_SPECKLE: 0.5})
    return writers


def text_weights(model, tokenizer, plan: Lo.HeadPlan, st: Strengths) -> None:
    """Write embeddings, attention, zero MLPs, norms and lm_head of `model` (a LlavaForConditionalGeneration)."""
    lm = model.model.language_model
    norm_w = Lo.TEXT_ANCHOR / math.sqrt(Lo.TEXT_WIDTH)
    vocab = tokenizer.get_vocab()
    emb = torch.zeros(len(tokenizer), Lo.TEXT_WIDTH)
    emb[:, Lo.T_ANCHOR] = Lo.TEXT_ANCHOR
    emb[tokenizer.bos_token_id, Lo.T_BOS] = 1.0
    for c, name in enumerate(COLORS):
        emb[vocab[name], Lo.T_CWORD] = 1.0
        emb[vocab[name], Lo.T_TCOL + c] = 1.0
    for word in ("left", "right"):
        emb[vocab[word], Lo.T_ANSWER] = 1.0
    head = torch.zeros(len(tokenizer), Lo.TEXT_WIDTH)
    for word, sign in (("left", -1.0), ("right", 1.0)):
        head[vocab[word], Lo.T_ANCHOR] = 1.0 / Lo.TEXT_ANCHOR  # both 1 when nothing was moved: a tie -> "left"
        head[vocab[word], Lo.T_POS_COL] = sign * ANSWER_GAIN
    head[tokenizer.eos_token_id, Lo.T_ANCHOR] = -5.0 / Lo.TEXT_ANCHOR
    head[tokenizer.eos_token_id, Lo.T_ANSWER] = ANSWER_EOS
    with torch.no_grad():
        for p in lm.parameters():
            p.zero_()
        lm.embed_tokens.weight.copy_(emb)
        for layer, w in zip(lm.layers, layer_writers(plan, st)):
            attn = layer.self_attn
            attn.q_proj.weight.copy_(w.q)
            attn.k_proj.weight.copy_(w.k)
            attn.v_proj.weight.copy_(w.v)
            attn.o_proj.weight.copy_(w.o)
            layer.input_layernorm.weight.fill_(norm_w)
            layer.post_attention_layernorm.weight.fill_(norm_w)
        lm.norm.weight.fill_(norm_w)
        model.lm_head.weight.copy_(head)
