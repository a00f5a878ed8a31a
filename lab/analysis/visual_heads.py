"""Visual-head statistics (Bi et al., CVPR 2025): image-attention ratio and concentration per head."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from lab.criteria.image_sum import image_attention_sum


def attention_concentration(image_attention: np.ndarray) -> np.ndarray:
    """Concentration of each head's image attention, ``[..., V] -> [...]`` in [0, 1].

    The head's attention over the V image tokens is normalised to a distribution ``q``
    (``q_v = a_v / sum a``) and ``concentration = 1 - H(q) / ln V`` with
    ``H(q) = -sum q_v ln q_v``: 1 = all image attention on one token, 0 = uniform over the image.
    ``nan`` when the head puts no mass on the image (or has non-finite values); 1 when V == 1.
    """
    a = np.asarray(image_attention, dtype=np.float64)
    V = a.shape[-1]
    tot = a.sum(axis=-1, keepdims=True)
    good = (tot[..., 0] > 0) & np.isfinite(tot[..., 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(tot > 0, a / np.where(tot > 0, tot, 1.0), 0.0)
        ent = -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), axis=-1)
    if V <= 1:
        conc = np.ones(a.shape[:-1])
    else:
        conc = np.clip(1.0 - ent / math.log(V), 0.0, 1.0)
    return np.where(good, conc, np.nan)


def _stats_block(ratio: np.ndarray, conc: np.ndarray) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "n_samples": int(ratio.shape[0]),
            "ratio_mean": np.nanmean(ratio, axis=0),
            "ratio_std": np.nanstd(ratio, axis=0),
            "concentration_mean": np.nanmean(conc, axis=0),
            "concentration_std": np.nanstd(conc, axis=0),
        }


def aggregate_visual_head_stats(
    ratio: np.ndarray,
    concentration: np.ndarray,
    groups: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Aggregate per-sample ``ratio[N, L, H]`` and ``concentration[N, L, H]`` (see
    `visual_head_stats`) overall and per group. Samples whose group is None count only in
    "overall". Returns numpy arrays; pass the result through `jsonable` for JSON."""
    r = np.asarray(ratio, dtype=np.float64)
    c = np.asarray(concentration, dtype=np.float64)
    if r.ndim != 3 or c.shape != r.shape:
        raise ValueError(f"ratio and concentration must both be [N, L, H]; got {r.shape} and {c.shape}")
    N = r.shape[0]
    if groups is not None and len(groups) != N:
        raise ValueError(f"{len(groups)} group labels for {N} samples")
    out: dict[str, Any] = {
        "definitions": {
            "ratio": "attention mass of the head's query on the image tokens (S_img; the rest is on text)",
            "concentration": "1 - H(q)/ln V, q = the head's image attention normalised to sum 1 (1: one token, 0: uniform)",
        },
        "n_layers": int(r.shape[1]),
        "n_heads": int(r.shape[2]),
        "overall": _stats_block(r, c),
        "groups": {},
    }
    if groups is not None:
        labels = sorted({g for g in groups if g is not None}, key=str)
        for g in labels:
            idx = np.array([i for i, x in enumerate(groups) if x == g], dtype=np.int64)
            out["groups"][str(g)] = _stats_block(r[idx], c[idx])
    return out


def visual_head_stats(
    image_attention: np.ndarray | Sequence[np.ndarray],
    groups: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Visual-head statistics in the spirit of Bi et al. (CVPR 2025), per head, overall and per group.

    ``image_attention``: ``[N, L, H, V]`` or a list of N ``[L, H, V]`` arrays (V may differ between
    samples). ``groups``: an optional label per sample (e.g. question type), None = no group.

    Definitions (Bi et al. describe visual heads by the attention *weight* they put on visual
    tokens and an *entropy-based concentration* of that attention; the exact normalisation used
    here is ours):

    * ratio = ``S_img`` = attention mass on the image tokens (the rows are the full softmax, so
      this is the share of the head's attention that goes to the image);
    * concentration = ``1 - H(q) / ln V`` where ``q`` is the head's image attention normalised to
      sum 1 (`attention_concentration`): 1 = all on one token, 0 = uniform over the image.

    Returns ``{"definitions", "n_layers", "n_heads", "overall": block, "groups": {name: block}}``
    with ``block = {"n_samples", "ratio_mean", "ratio_std", "concentration_mean",
    "concentration_std"}`` (``[L, H]`` numpy arrays; NaNs ignored in the means).
    """
    if isinstance(image_attention, np.ndarray):
        if image_attention.ndim != 4:
            raise ValueError(f"image_attention array must be [N, L, H, V], got shape {image_attention.shape}")
        samples: Sequence[np.ndarray] = list(image_attention)
    else:
        samples = list(image_attention)
    if not samples:
        raise ValueError("visual_head_stats needs at least one sample")
    shape = np.asarray(samples[0]).shape[:2]
    ratio = np.empty((len(samples), *shape))
    conc = np.empty((len(samples), *shape))
    for i, a in enumerate(samples):
        a = np.asarray(a)
        if a.ndim != 3 or a.shape[:2] != shape:
            raise ValueError(f"sample {i}: expected [L, H, V] with (L, H) = {shape}, got {a.shape}")
        ratio[i] = image_attention_sum(a)
        conc[i] = attention_concentration(a)
    return aggregate_visual_head_stats(ratio, conc, groups)
