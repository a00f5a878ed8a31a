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


# ---- naming the visual heads ---------------------------------------------------------------------
RULE = ("a sample counts a head when its image share S_img >= visual_heads.min_ratio; a head is named when it "
        "counts in >= visual_heads.min_share of the samples; ranked by count, then mean S_img (the release's "
        "global top-k by Count, visual_heads.k); kind: localization (selected in this run), global (mean "
        "concentration < visual_heads.global_below: reads the whole image) or focused (docs/visual_heads.md)")
KINDS = ("localization", "global", "focused")


def name_visual_heads(ratio: np.ndarray, concentration: np.ndarray, rule: Any,
                      localization: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The visual heads of a set of samples, ranked (docs/visual_heads.md).

    Args:
        ratio: ``[N, L, H]`` per-sample image share S_img of each head (record axes).
        concentration: ``[N, L, H]`` per-sample concentration (`attention_concentration`).
        rule: the typed `visual_heads` settings (min_ratio, min_share, k, global_below).
        localization: ``[L, H]`` bool, the heads this run selected as localization heads, or None.

    Returns:
        ``[{"layer", "head", "rank", "count", "share", "ratio", "concentration", "kind"}]`` in rank
        order, record-axis indices; [] when no sample is given.
    """
    r = np.asarray(ratio, dtype=np.float64)
    c = np.asarray(concentration, dtype=np.float64)
    if r.ndim != 3 or c.shape != r.shape:
        raise ValueError(f"ratio and concentration must both be [N, L, H]; got {r.shape} and {c.shape}")
    N, L, H = r.shape
    if N == 0:
        return []
    counts = np.sum(np.nan_to_num(r, nan=-1.0) >= float(rule.min_ratio), axis=0)  # [L, H]; NaN never counts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_r, mean_c = np.nanmean(r, axis=0), np.nanmean(c, axis=0)  # [L, H]
    named = counts >= float(rule.min_share) * N
    flat = np.flatnonzero(named.ravel())  # record-axis index l * H + h
    order = sorted(flat, key=lambda i: (-counts.flat[i], -np.nan_to_num(mean_r.flat[i], nan=-1.0), i))
    if rule.k is not None:
        order = order[: int(rule.k)]
    out = []
    for rank, i in enumerate(order, start=1):
        l, h = divmod(int(i), H)
        out.append({"layer": l, "head": h, "rank": rank, "count": int(counts[l, h]),
                    "share": float(counts[l, h] / N), "ratio": float(mean_r[l, h]),
                    "concentration": float(mean_c[l, h]),
                    "kind": _kind(l, h, float(mean_c[l, h]), rule, localization)})
    return out


def _kind(l: int, h: int, conc: float, rule: Any, localization: np.ndarray | None) -> str:
    if localization is not None and bool(localization[l, h]):
        return "localization"
    return "global" if math.isfinite(conc) and conc < float(rule.global_below) else "focused"


def named_block(ratio: np.ndarray, concentration: np.ndarray, groups: Sequence[str | None] | None, rule: Any,
                localization: np.ndarray | None = None) -> dict[str, Any]:
    """visual_heads.json's "named": the rule, its settings, the ranked heads over every sample and
    per group (`name_visual_heads` on the group's samples); record-axis indices."""
    block: dict[str, Any] = {
        "rule": RULE,
        "settings": {"min_ratio": rule.min_ratio, "min_share": rule.min_share, "k": rule.k,
                     "global_below": rule.global_below},
        "n_samples": int(np.shape(ratio)[0]),
        "heads": name_visual_heads(ratio, concentration, rule, localization),
        "by_group": {},
    }
    if groups is not None:
        for g in sorted({g for g in groups if g is not None}, key=str):
            idx = np.array([i for i, x in enumerate(groups) if x == g], dtype=np.int64)
            block["by_group"][str(g)] = {"n_samples": int(idx.size), "heads": name_visual_heads(
                np.asarray(ratio)[idx], np.asarray(concentration)[idx], rule, localization)}
    return block


def kinds_summary(heads: Sequence[dict[str, Any]]) -> str:
    """"21 (3 localization, 6 global, 12 focused)"."""
    parts = [f"{sum(h['kind'] == k for h in heads)} {k}" for k in KINDS if any(h["kind"] == k for h in heads)]
    return f"{len(heads)} ({', '.join(parts)})" if parts else "0"


def format_named(block: dict[str, Any], n_heads: int, shown: int = 10) -> list[str]:
    """The lines printed after a selection: how many visual heads of each kind, the first `shown` of
    each kind in rank order, and the counts per group."""
    heads, s = block["heads"], block["settings"]
    lines = [f"visual heads (docs/visual_heads.md): {kinds_summary(heads)} of {n_heads} put >= {s['min_ratio']:g} "
             f"of their attention on the image in >= {s['min_share']:.0%} of {block['n_samples']} samples"]
    for kind in KINDS:
        mine = [f"L{h['layer']}H{h['head']}" for h in heads if h["kind"] == kind]
        if mine:
            more = f" (+{len(mine) - shown} more)" if len(mine) > shown else ""
            lines.append(f"  {kind}: {', '.join(mine[:shown])}{more}")
    for g, b in block["by_group"].items():
        lines.append(f"  group {g} (n={b['n_samples']}): {kinds_summary(b['heads'])}")
    return lines
