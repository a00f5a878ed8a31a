"""Charts: layer x head heatmaps, the elbow curve, per-token image share, bar charts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.patches import Rectangle

from lab.figures.base import PathLike, _new_figure, _save, _tok, _tx


def layer_head_heatmap(
    values: Any,
    out_path: PathLike,
    *,
    title: str = "",
    marked: Sequence[tuple[int, int]] = (),
    cbar_label: str = "",
    cmap: str = "viridis",
    log: bool = False,
    marker: str = "box",
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    show: bool = False,
) -> Path:
    """Layer (rows, 0 at top) x head (columns) heatmap; NaN/inf cells grey; `marked` heads outlined
    in red (`marker="box"`) or crossed (`marker="x"`)."""
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 2:
        raise ValueError(f"values must be [layers, heads], got {vals.shape}")
    L, Hh = vals.shape
    if figsize is None:
        figsize = (min(max(0.26 * Hh + 2.4, 4.5), 20.0), min(max(0.2 * L + 1.4, 3.5), 16.0))
    fig = _new_figure(figsize, dpi, show)
    ax = fig.subplots()
    data = np.ma.masked_invalid(vals)
    cm = colormaps[cmap].with_extremes(bad="0.75")
    finite = vals[np.isfinite(vals)]
    norm = None
    if log and finite.size and (finite > 0).any():
        pos = finite[finite > 0]
        data = np.ma.masked_where(~np.isfinite(vals) | (vals <= 0), vals)
        norm = LogNorm(vmin=float(pos.min()), vmax=float(pos.max()))
    elif finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
    im = ax.imshow(data, cmap=cm, norm=norm, aspect="auto", interpolation="nearest", origin="upper")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(_ticks(Hh))
    ax.set_yticks(_ticks(L))
    ax.tick_params(labelsize=7)
    marked = [(int(l), int(h)) for l, h in marked]
    for l, h in marked:
        if not (0 <= l < L and 0 <= h < Hh):
            continue
        if marker == "x":
            ax.plot([h], [l], marker="x", color="red", markersize=7, markeredgewidth=2, linestyle="none")
        else:
            ax.add_patch(Rectangle((h - 0.5, l - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.0))
    if marked:  # said in the title rather than a legend that would cover cells
        title = f"{title}  (red {'boxes' if marker != 'x' else 'crosses'}: {len(marked)} selected)".strip()
    if not finite.size:
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center")
    cb = fig.colorbar(im, ax=ax, shrink=0.9)
    cb.set_label(_tx(cbar_label or "value"), fontsize=8)  # every colour bar says what it shows
    cb.ax.tick_params(labelsize=7)
    if (~np.isfinite(vals)).any():
        ax.text(1.0, -0.06, "grey: NaN / inf", transform=ax.transAxes, ha="right", va="top", fontsize=7, color="0.35")
    if title:
        ax.set_title(_tx(title), fontsize=10, wrap=True)
    return _save(fig, out_path, dpi, show)


def _ticks(n: int) -> list[int]:
    step = 1 if n <= 16 else (2 if n <= 32 else max(1, int(math.ceil(n / 16))))
    return list(range(0, n, step))


def elbow_curve(
    sorted_values: Any,
    threshold: float,
    out_path: PathLike,
    *,
    knee_index: int | None = None,
    title: str = "S_img per head (sorted)",
    ylabel: str = "S_img",
    xlabel: str = "rank",
    figsize: tuple[float, float] = (6.0, 4.0),
    dpi: float = 100,
    show: bool = False,
) -> Path:
    """The sorted S_img curve (plotted in the given order; non-finite values dropped) with the
    threshold line and, if given, the knee marker."""
    v = np.asarray(sorted_values, dtype=np.float64).ravel()
    x = np.arange(v.size)
    ok = np.isfinite(v)
    fig = _new_figure(figsize, dpi, show)
    ax = fig.subplots()
    ax.plot(x[ok], v[ok], color="tab:blue", linewidth=1.5, label="heads")
    if threshold is not None and np.isfinite(threshold):
        n_above = int((v[ok] >= threshold).sum())
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.3g} ({n_above} heads \u2265)")
    if knee_index is not None and 0 <= int(knee_index) < v.size:
        k = int(knee_index)
        ax.axvline(k, color="tab:green", linestyle=":", linewidth=1.2)
        if np.isfinite(v[k]):
            ax.plot([k], [v[k]], marker="o", color="tab:green", markersize=8, linestyle="none", label=f"knee (rank {k})")
    ax.set_xlabel(_tx(xlabel))
    ax.set_ylabel(_tx(ylabel))
    ax.set_title(_tx(title), fontsize=10, wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_path, dpi, show)


def token_attention_curve(
    tokens: Sequence[str],
    shares: Any,
    out_path: PathLike,
    *,
    title: str = "attention on image tokens per generated token",
    ylabel: str = "share of attention on image",
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    max_labels: int = 60,
    show: bool = False,
) -> Path:
    """Share of attention on image tokens for each generated token (tokens on the x axis)."""
    s = np.asarray(shares, dtype=np.float64).ravel()
    if len(tokens) != s.size:
        raise ValueError(f"{len(tokens)} tokens but {s.size} shares")
    T = s.size
    if figsize is None:
        figsize = (min(max(0.3 * min(T, max_labels) + 1.8, 6.0), 24.0), 4.0)
    fig = _new_figure(figsize, dpi, show)
    ax = fig.subplots()
    x = np.arange(T)
    ax.plot(x, s, marker="o", markersize=4, linewidth=1.3, color="tab:purple")
    step = max(1, int(math.ceil(T / max_labels))) if T else 1
    ax.set_xticks(x[::step])
    ax.set_xticklabels([_tok(t) for t in list(tokens)[::step]], rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    top = float(np.nanmax(s)) if T and np.isfinite(s).any() else 1.0
    ax.set_ylim(0, max(top * 1.1, 1e-6) if top <= 1 else top * 1.05)
    ax.set_xlim(-0.5, max(T - 0.5, 0.5))
    ax.set_ylabel(_tx(ylabel))
    ax.set_xlabel("generated token")
    ax.set_title(_tx(title), fontsize=10, wrap=True)
    ax.grid(alpha=0.3)
    return _save(fig, out_path, dpi, show)


def bar_chart(
    labels: Sequence[str],
    values: Any,
    errors: Any,
    out_path: PathLike,
    *,
    title: str = "",
    ylabel: str = "",
    colors: Sequence[Any] | None = None,
    annotate: bool = True,
    hline: float | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    show: bool = False,
) -> Path:
    """Bars with optional error bars (`errors`: None, or one per bar; NaN = none). NaN values are
    drawn as empty bars labelled n/a."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(labels) != v.size:
        raise ValueError(f"{len(labels)} labels but {v.size} values")
    e = None
    if errors is not None:
        e = np.array([np.nan if x is None else float(x) for x in np.asarray(errors, dtype=object).ravel()], dtype=np.float64)
        if e.size != v.size:
            raise ValueError(f"{e.size} errors for {v.size} values")
    n = v.size
    long_labels = max((len(str(l)) for l in labels), default=0) > 8 or n > 8
    if figsize is None:
        figsize = (min(max(0.8 * n + 1.8, 4.5), 20.0), 4.2 if long_labels else 3.8)
    fig = _new_figure(figsize, dpi, show)
    ax = fig.subplots()
    x = np.arange(n)
    vv = np.where(np.isfinite(v), v, 0.0)
    bars = ax.bar(x, vv, color=colors if colors is not None else "tab:blue", edgecolor="black", linewidth=0.6)
    if e is not None:
        ok = np.isfinite(e) & np.isfinite(v)
        if ok.any():
            ax.errorbar(x[ok], v[ok], yerr=e[ok], fmt="none", ecolor="black", capsize=4, linewidth=1.2)
    if hline is not None:
        ax.axhline(hline, color="0.3", linestyle="--", linewidth=1)
    if annotate:
        for xi, b, val, err in zip(x, bars, v, (e if e is not None else [np.nan] * n)):
            txt = "n/a" if not np.isfinite(val) else f"{val:.3g}"
            top = (val if np.isfinite(val) else 0.0) + (err if np.isfinite(err) else 0.0)
            ax.annotate(txt, (xi, max(top, 0.0)), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    if long_labels:
        ax.set_xticklabels([_tx(l) for l in labels], rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    else:
        ax.set_xticklabels([_tx(l) for l in labels], fontsize=9)
    ax.set_ylabel(_tx(ylabel))
    if title:
        ax.set_title(_tx(title), fontsize=10, wrap=True)
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_path, dpi, show)
