"""The constructed weights: every matrix of the planted LLaVA, written from llava/planted/layout.py.

Nothing here is trained. The vision tower passes each patch's mean colour and a position code
through (its attention and MLP outputs are zero); the projector turns the colour into six
detector responses (linear - GELU - linear, one-vs-rest separators found by a linear program) and
moves the position features into the text residual stream; the Llama heads read and write named
coordinates. docs/planted.md explains each part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from llava.planted import layout as Lo
from llava.planted.scenes import COLORS

DETECTOR_GAIN = 10.0  # projector's colour units: GELU(z) - GELU(z - 1), z = gain * (w.m - t) + 0.5: ~0/1 (a step)
PASS_OFFSET = 8.0  # projector's pass-through units: GELU(x + 8) - 8 = x for |x| < 3
COPY_SCORE, COPY_BOS = 14.0, 7.0
LOC_SCORE = 5.0  # localization heads: logit = LOC_SCORE * (target colour . patch colour) + LOC_IMAGE on image tokens
LOC_IMAGE = 5.0  # ... so the object holds ~70-95% of the image mass, the rest spread thinly (as real heads leak)
VISUAL_SCORE, VISUAL_SPECKLE = 6.0, 1.0
FIXED_SCORE = 7.0
FIXED_LEAK = (-2.5, 0.5)  # fixed heads' logit on every object colour, relative to their region's
FIXED_BOS = -1.0  # ... and on <s>
REST_BOS = 10.0
ANSWER_GAIN, ANSWER_EOS = 2.0, 20.0


@dataclass
class Strengths:
    """Per-head seeded numbers: fixed heads' region scores and colour leaks, rest heads' image bias."""

    fixed_score: np.ndarray  # [N_FIXED]
    fixed_leak: np.ndarray  # [N_FIXED, N_COLORS]
    visual_angle: np.ndarray  # [n_visual]
    rest_image: np.ndarray  # [N_LAYERS, N_HEADS]


def strengths(seed: int, n_visual: int) -> Strengths:
    rng = np.random.default_rng(seed)
    return Strengths(
        fixed_score=rng.uniform(FIXED_SCORE - 1.0, FIXED_SCORE + 1.0, Lo.N_FIXED),
        fixed_leak=rng.uniform(*FIXED_LEAK, (Lo.N_FIXED, Lo.N_COLORS)),
        visual_angle=rng.uniform(0.0, 2 * math.pi, n_visual),
        rest_image=rng.uniform(-4.0, 1.0, (Lo.N_LAYERS, Lo.N_HEADS)),
    )


def colour_detectors() -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest linear separators ``w[C, 3], t[C]`` on a patch's mean RGB in [0, 1]:
    ``w_c . m - t_c >= 1`` on colour c, ``<= -1`` on the other five, the padding grey and a box of
    near-grey backgrounds (the ones llava/planted/scenes.py draws). Minimum-L1 weights (scipy LP)."""
    import itertools

    from scipy.optimize import linprog

    neg = [(122, 116, 104)]  # LLaVA's pad colour (the image processor's mean)
    for level in (158, 200, 252):
        for tint in itertools.product((-12, 12), repeat=3):
            neg.append(tuple(min(255, level + d) for d in tint))
    ws, ts = [], []
    for name, rgb in COLORS.items():
        p = np.asarray(rgb) / 255.0
        others = [np.asarray(q) / 255.0 for q in neg] + [np.asarray(q) / 255.0 for n, q in COLORS.items() if n != name]
        a_ub = [np.r_[-p, p, 1.0]] + [np.r_[q, -q, -1.0] for q in others]  # vars: w+ [3], w- [3], t
        res = linprog(np.r_[np.ones(6), 0.0], A_ub=np.asarray(a_ub), b_ub=-np.ones(len(a_ub)),
                      bounds=[(0, None)] * 6 + [(None, None)], method="highs")
        if res.status != 0:
            raise RuntimeError(f"colour {name} is not linearly separable from the others: {res.message}")
        ws.append(res.x[:3] - res.x[3:6])
        ts.append(res.x[6])
    return np.asarray(ws), np.asarray(ts)


def speckle(seed: int) -> np.ndarray:
    """``[N_SPECKLE, N_PATCHES]`` seeded N(0, 1) codes, clipped to +-2.5."""
    return np.clip(np.random.default_rng(seed + 1).standard_normal((Lo.N_SPECKLE, Lo.N_PATCHES)), -2.5, 2.5)


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


# ---- vision tower ------------------------------------------------------------------------------

def vision_weights(tower, image_mean, image_std, seed: int) -> float:
    """Pass-through CLIP: patch embedding = mean RGB; position embedding = anchor, colour offset,
    row / column codes, fixed-region indicators, speckle; attention and MLP outputs zero. Returns
    the LayerNorm's nominal scale (the std of an anchor-only token) the projector divides out."""
    from llava.compat import clip_transformer

    vt = clip_transformer(tower)
    emb = vt.embeddings
    D, P = Lo.VISION_WIDTH, emb.patch_embedding.kernel_size[0]
    conv = torch.zeros(D, 3, P, P)
    for c in range(3):  # normalised pixel (m - mean) / std, averaged: (m_c - mean_c)
        conv[Lo.V_RGB + c, c] = float(image_std[c]) / (P * P)
        conv[Lo.V_RGB + 3 + c, c] = -float(image_std[c]) / (P * P)
    pos = np.zeros((Lo.N_PATCHES + 1, D))
    pos[:, Lo.V_ANCHOR], pos[:, Lo.V_ANCHOR + 1] = Lo.VISION_ANCHOR, -Lo.VISION_ANCHOR
    idx = np.arange(Lo.N_PATCHES)
    rows, cols = idx // Lo.GRID, idx % Lo.GRID
    feats = np.zeros((Lo.N_PATCHES, D))  # [576, D], row-major patches
    for c in range(3):
        feats[:, Lo.V_RGB + c], feats[:, Lo.V_RGB + 3 + c] = image_mean[c], -image_mean[c]
    half = (Lo.GRID - 1) / 2
    feats[:, Lo.V_ROW], feats[:, Lo.V_ROW + 1] = (rows - half) / half, -(rows - half) / half
    feats[:, Lo.V_COL], feats[:, Lo.V_COL + 1] = (cols - half) / half, -(cols - half) / half
    masks = Lo.region_masks()  # [F, 576]
    feats[:, Lo.V_FIXED:Lo.V_FIXED + Lo.N_FIXED] = masks.T
    feats[:, Lo.V_FIXED + Lo.N_FIXED:Lo.V_FIXED + 2 * Lo.N_FIXED] = -masks.T
    sp = speckle(seed)  # [S, 576]
    feats[:, Lo.V_SPECKLE:Lo.V_SPECKLE + Lo.N_SPECKLE] = sp.T
    feats[:, Lo.V_SPECKLE + Lo.N_SPECKLE:Lo.V_SPECKLE + 2 * Lo.N_SPECKLE] = -sp.T
    pos[1:] += feats
    with torch.no_grad():
        for p in vt.parameters():
            p.zero_()
        emb.patch_embedding.weight.copy_(conv)
        emb.position_embedding.weight.copy_(_t(pos))
        emb.class_embedding.zero_()
        for ln in [vt.pre_layrnorm, vt.post_layernorm, *[m for layer in vt.encoder.layers
                                                         for m in (layer.layer_norm1, layer.layer_norm2)]]:
            ln.weight.fill_(1.0)
    return math.sqrt(2 * Lo.VISION_ANCHOR ** 2 / D)


# ---- projector -------------------------------------------------------------------------------

def projector_weights(proj, ln_scale: float) -> None:
    """linear_1 -> GELU -> linear_2: six colour detectors into T_PCOL; row, column, fixed-region
    and speckle features passed through (offset into GELU's linear range and back); biases put the
    anchor and the image marker on every image token."""
    w, t = colour_detectors()
    pass_src = [Lo.V_ROW, Lo.V_COL, *range(Lo.V_FIXED, Lo.V_FIXED + Lo.N_FIXED),
                *range(Lo.V_SPECKLE, Lo.V_SPECKLE + Lo.N_SPECKLE)]
    pass_dst = [Lo.T_ROW, Lo.T_COL, *range(Lo.T_FIXED, Lo.T_FIXED + Lo.N_FIXED),
                *range(Lo.T_SPECKLE, Lo.T_SPECKLE + Lo.N_SPECKLE)]
    hidden = proj.linear_1.out_features
    if hidden < 2 * Lo.N_COLORS + len(pass_src):
        raise ValueError(f"projector hidden {hidden} < {2 * Lo.N_COLORS + len(pass_src)} units")
    w1 = torch.zeros(hidden, Lo.VISION_WIDTH)
    b1 = torch.zeros(hidden)
    w2 = torch.zeros(Lo.TEXT_WIDTH, hidden)
    b2 = torch.zeros(Lo.TEXT_WIDTH)
    for c in range(Lo.N_COLORS):  # units 2c, 2c+1: GELU(z) - GELU(z - 1), z = gain * (w_c . m - t_c) + 0.5
        for u, shift in ((2 * c, 0.5), (2 * c + 1, -0.5)):
            for ch in range(3):  # the LayerNorm divided the colour by ln_scale: multiply it back
                w1[u, Lo.V_RGB + ch] = DETECTOR_GAIN * float(w[c, ch]) * ln_scale
            b1[u] = -DETECTOR_GAIN * float(t[c]) + shift
        w2[Lo.T_PCOL + c, 2 * c] = 1.0
        w2[Lo.T_PCOL + c, 2 * c + 1] = -1.0
    for j, (src, dst) in enumerate(zip(pass_src, pass_dst)):
        u = 2 * Lo.N_COLORS + j
        w1[u, src] = ln_scale
        b1[u] = PASS_OFFSET
        w2[dst, u] = 1.0
        b2[dst] -= PASS_OFFSET
    b2[Lo.T_ANCHOR] += Lo.TEXT_ANCHOR
    b2[Lo.T_IMG] += 1.0
    with torch.no_grad():
        proj.linear_1.weight.copy_(w1)
        proj.linear_1.bias.copy_(b1)
        proj.linear_2.weight.copy_(w2)
        proj.linear_2.bias.copy_(b2)
