"""Where every feature lives: the vision tower's and the text model's residual coordinates, and the heads.

The construction (docs/planted.md) writes a handful of named features into fixed coordinates of
the CLIP residual stream (width `VISION_WIDTH`) and of the Llama residual stream (width
`TEXT_WIDTH`); every weight matrix of llava/planted/weights.py reads and writes these names only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GRID = 24  # 336 px / patch 14
N_PATCHES = GRID * GRID
N_COLORS = 6
N_FIXED = 12
N_SPECKLE = 2

# ---- vision residual (CLIP, before pre_layrnorm): every feature has a negated twin, so the
# LayerNorm mean is exactly 0 and the norm is dominated by the anchor pair.
V_ANCHOR = 0  # +A, twin at V_ANCHOR + 1 (-A)
V_RGB = 2  # 3 dims: mean R, G, B of the patch in [0, 1]; twins at V_RGB + 3
V_ROW = 8  # (row - 11.5) / 11.5; twin 9
V_COL = 10  # (col - 11.5) / 11.5; twin 11
V_FIXED = 12  # N_FIXED indicator dims; twins at V_FIXED + N_FIXED
V_SPECKLE = V_FIXED + 2 * N_FIXED  # N_SPECKLE seeded N(0, 1) codes per patch; twins after
VISION_WIDTH = V_SPECKLE + 2 * N_SPECKLE
VISION_ANCHOR = 20.0

# ---- text residual (Llama)
T_ANCHOR = 0  # every token: TEXT_ANCHOR
T_BOS = 1  # <s>
T_IMG = 2  # image tokens
T_CWORD = 3  # colour words
T_TCOL = 4  # N_COLORS: the colour a token names (colour words; copied to later tokens by the copy head)
T_PCOL = T_TCOL + N_COLORS  # N_COLORS: the colour a patch shows (image tokens, projector's detectors)
T_ROW = T_PCOL + N_COLORS  # image tokens: row code
T_COL = T_ROW + 1  # image tokens: column code
T_FIXED = T_COL + 1  # N_FIXED: fixed-region indicators of image tokens
T_SPECKLE = T_FIXED + N_FIXED  # N_SPECKLE: per-patch speckle codes
T_POS_ROW = T_SPECKLE + N_SPECKLE  # written by the localization heads at the query: attended row code
T_POS_COL = T_POS_ROW + 1  # ... attended column code (the answer path reads it)
T_ANSWER = T_POS_COL + 1  # answer words (left, right): the next token is </s>
TEXT_WIDTH = 64  # transformers requires a multiple of the head count
TEXT_ANCHOR = 8.0

HEAD_DIM = 8
N_LAYERS = 32
N_HEADS = 32
ROPE_THETA = 1e30
# rotary pairs (i, i + HEAD_DIM/2) turn by position * ROPE_THETA^(-2i/HEAD_DIM): pair 0 turns by one
# radian per token, pairs 1-3 by < 1e-7; scores are built in the still dims only.
STILL_DIMS = (1, 2, 3, 5, 6, 7)

# fixed-head regions on the 24 x 24 grid: (name, rows, cols)
FIXED_REGIONS: list[tuple[str, slice, slice]] = [
    ("corner_top_left", slice(0, 3), slice(0, 3)),
    ("corner_top_right", slice(0, 2), slice(21, 24)),
    ("corner_bottom_left", slice(21, 24), slice(0, 2)),
    ("corner_bottom_right", slice(22, 24), slice(22, 24)),
    ("bottom_row", slice(23, 24), slice(0, 24)),
    ("bottom_row_right", slice(23, 24), slice(16, 22)),
    ("top_row", slice(0, 1), slice(4, 20)),
    ("sink_5_18", slice(5, 6), slice(18, 19)),
    ("sink_12_3", slice(12, 13), slice(3, 4)),
    ("sink_17_11", slice(17, 18), slice(11, 12)),
    ("sink_8_9", slice(8, 9), slice(9, 10)),
    ("sink_20_20", slice(20, 21), slice(20, 21)),
]
assert len(FIXED_REGIONS) == N_FIXED


def region_masks() -> np.ndarray:
    """``[N_FIXED, GRID * GRID]`` 0/1 indicators of the fixed regions (row-major patches)."""
    out = np.zeros((N_FIXED, GRID, GRID), dtype=np.float32)
    for i, (_, rows, cols) in enumerate(FIXED_REGIONS):
        out[i, rows, cols] = 1.0
    return out.reshape(N_FIXED, N_PATCHES)  # [F, 24, 24] -> [F, 576]


@dataclass
class HeadPlan:
    """Which (layer, head) plays which role."""

    copy: tuple[int, int] = (0, 0)
    localization: list[tuple[int, int]] = field(default_factory=lambda: [(14, 13), (14, 24), (17, 5)])
    visual: list[tuple[int, int]] = field(default_factory=list)
    fixed: list[tuple[int, int]] = field(default_factory=list)

    def planted(self) -> set[tuple[int, int]]:
        return {self.copy, *self.localization, *self.visual, *self.fixed}


def plan_heads(localization: list[tuple[int, int]] | None, seed: int) -> HeadPlan:
    """Place the copy head at (0, 0), the localization heads where asked, and 6 visual + 12 fixed
    heads at seeded positions in layers 2..31 that no other role takes."""
    plan = HeadPlan() if localization is None else HeadPlan(localization=list(localization))
    for lh in plan.localization:
        if not (2 <= lh[0] < N_LAYERS and 0 <= lh[1] < N_HEADS):
            raise ValueError(f"localization head {lh} outside layers 2..{N_LAYERS - 1} x heads 0..{N_HEADS - 1}")
    if len(set(plan.localization)) != len(plan.localization):
        raise ValueError(f"localization heads repeat: {plan.localization}")
    rng = np.random.default_rng(seed + 7)
    taken = set(plan.planted())
    free = [(l, h) for l in range(2, N_LAYERS) for h in range(N_HEADS) if (l, h) not in taken]
    picks = rng.choice(len(free), size=6 + N_FIXED, replace=False)
    chosen = sorted(free[int(i)] for i in picks[:6])
    plan.visual = chosen
    plan.fixed = [free[int(i)] for i in picks[6:]]
    return plan
