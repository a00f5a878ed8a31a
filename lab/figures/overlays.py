"""Overlays on the original image: one panel per head + combined map with boxes; per-token strips."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.patches import Patch

from lab.analysis.grounding import (
    Grounding,
    cell_validity,
    combine_head_maps,
    coverage_mask,
    iou,
    label_regions,
    predict_box,
)
from lab.figures.base import (
    FONT,
    MAP_CMAP,
    PathLike,
    _as_grid,
    _box_patch,
    _colorbar,
    _coverage_outline,
    _dim_uncovered,
    _display,
    _new_figure,
    _overlay,
    _panel_size,
    _save,
    _show_image,
    _tok,
    _tx,
)
from utils.contracts.layout import ImageLayout


def overlay_heads(
    image: Any,
    layout: ImageLayout,
    head_maps: Mapping[tuple[int, int], Any],
    out_path: PathLike,
    *,
    combined: Any = None,
    pred_box: Sequence[float] | Grounding | None = None,
    gt_box: Sequence[float] | None = None,
    show_components: bool = False,
    title: str | None = None,
    grid: str | None = None,
    sigma: float = 1.0,
    order: int = 1,
    cmap: str = MAP_CMAP,
    alpha: float = 0.8,
    ncols: int | None = None,
    panel_width: float = 3.0,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    max_side: int = 1024,
    combined_label: str = "combined, normalised to [0, 1]",
    head_label: str = "attention (softmax probability)",
    show: bool = False,
) -> Path:
    """Original image + one overlay per head + the combined map with boxes (+ components row).

    head_maps: {(layer, head): [rows, cols] map (or [V] per-token values)}. combined: the
    combined map (default: `combine_head_maps` of the heads with `sigma`). pred_box: (x, y, w, h)
    or a `Grounding` (default: `predict_box` on the combined map). gt_box: (x, y, w, h) if known.
    show_components: add a row with each head's above-mean 8-connected regions (largest outlined),
    each under its head's panel, the colours explained under the image.
    Every map panel has its own colour bar: a head's runs from 0 to its max (`head_label`); the
    combined panel is drawn divided by its maximum, so its bar (`combined_label`) runs from 0 to 1
    whatever the number of heads; the box is computed on the map as given. Colours: `cmap` (a
    perceptual map) with opacity proportional to the value (`base.alpha_cmap`).
    """
    W, H = layout.image_size
    img, disp = _display(image, layout, max_side)
    cov = coverage_mask(disp, grid)
    keys = list(head_maps.keys())
    maps = [_as_grid(head_maps[k], layout, grid) for k in keys]
    if combined is None:
        combined_map = combine_head_maps(np.stack(maps), sigma=sigma) if maps else None
    else:
        combined_map = _as_grid(combined, layout, grid)
    g_pred: Grounding | None = pred_box if isinstance(pred_box, Grounding) else None
    if g_pred is None and pred_box is None and combined_map is not None:
        g_pred = predict_box(combined_map, layout, grid=grid)
    box_pred = g_pred.box_xywh if g_pred is not None else (tuple(pred_box) if pred_box is not None else None)

    n_main = 1 + len(maps) + (1 if combined_map is not None else 0)
    nc = ncols or min(n_main, 6)
    rows_main = math.ceil(n_main / nc)
    rows_comp = rows_main if (show_components and maps) else 0  # each head's regions under its panel
    pw, ph = _panel_size(W, H, panel_width)
    if figsize is None:
        figsize = (nc * (pw + 0.55) + 0.3, (rows_main + rows_comp) * (ph + 0.45) + (0.45 if title else 0.1))
    fig = _new_figure(figsize, dpi, show)
    axes = fig.subplots(rows_main + rows_comp, nc, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    flat_main = list(axes[:rows_main].flat)
    used = {id(a) for a in flat_main[:n_main]}

    # panel 0: the image, gt box, grid coverage
    ax = flat_main[0]
    ax.set_axis_on()
    _show_image(ax, img, W, H)
    _coverage_outline(ax, layout, grid, W, H)
    if gt_box is not None:
        _box_patch(ax, gt_box, color="white", ls="--", label="gt")
    ax.set_title(_tx(f"image {W}x{H} ({layout.aspect})"), fontsize=FONT["title"], wrap=True)

    # one panel per head, each with its own colour scale (0 .. the head's max)
    for i, (k, m) in enumerate(zip(keys, maps)):
        ax = flat_main[1 + i]
        ax.set_axis_on()
        _show_image(ax, img, W, H)
        sm = _overlay(ax, m, disp, cov, W, H, grid=grid, order=order, cmap=cmap, alpha=alpha)
        ax.set_title(_tx(_head_name(k)), fontsize=FONT["title"], wrap=True)
        _colorbar(fig, ax, sm, head_label)

    # combined panel
    if combined_map is not None:
        ax = flat_main[1 + len(maps)]
        ax.set_axis_on()
        _show_image(ax, img, W, H)
        im = _overlay(ax, unit_scale(combined_map), disp, cov, W, H, grid=grid, order=order, cmap=cmap, alpha=alpha,
                      vmin=0.0, vmax=1.0)
        if g_pred is not None and g_pred.grid_mask.any():
            region = disp.to_image(g_pred.grid_mask.astype(float), grid=grid, order=0)
            xs = (np.arange(region.shape[1]) + 0.5) * W / region.shape[1]
            ys = (np.arange(region.shape[0]) + 0.5) * H / region.shape[0]
            if min(region.shape) >= 2 and region.min() < 0.5 < region.max():  # contour needs 2x2 (1-pixel-high images)
                ax.contour(xs, ys, region, levels=[0.5], colors="white", linewidths=1.0)
        if box_pred is not None:
            _box_patch(ax, box_pred, color="lime", label="pred")
        if gt_box is not None:
            _box_patch(ax, gt_box, color="red", ls="--", label="gt")
        if g_pred is not None:
            ax.plot([g_pred.peak_xy[0]], [g_pred.peak_xy[1]], marker="*", color="white", markeredgecolor="black", markersize=11, linestyle="none", label="peak")
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ttl = "combined"
        if box_pred is not None and gt_box is not None:
            ttl += f" (IoU {iou(box_pred, gt_box):.2f})"
        ax.set_title(ttl, fontsize=FONT["title"], wrap=True)
        if box_pred is not None or gt_box is not None:
            ax.legend(loc="upper right", fontsize=7, framealpha=0.6, handlelength=1.5)
        _colorbar(fig, ax, im, combined_label)

    # components row(s): head i's regions under head i's panel; the colours explained under the image
    if rows_comp:
        valid = cell_validity(layout, grid)
        flat_comp = list(axes[rows_main:].flat)
        _components_key(flat_comp[0])
        used.add(id(flat_comp[0]))
        for i, (k, m) in enumerate(zip(keys, maps)):
            ax = flat_comp[1 + i]
            used.add(id(ax))
            ax.set_axis_on()
            _show_image(ax, img, W, H)
            _dim_uncovered(ax, cov, W, H)
            mask = (m > m[valid].mean()) & valid if valid.any() else m > m.mean()
            labels, n = label_regions(mask)
            if n:
                up = disp.to_image(labels.astype(float), grid=grid, order=0)
                up = np.rint(up).astype(int)
                base = colormaps["tab10"].colors
                cm = ListedColormap([base[j % len(base)] for j in range(n)])
                norm = BoundaryNorm(np.arange(0.5, n + 1.5), n)
                ax.imshow(np.ma.masked_where((up == 0) | ~cov, up), extent=(0, W, H, 0), cmap=cm, norm=norm, alpha=0.6, interpolation="nearest")
                sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
                big = (labels == int(np.argmax(sizes)) + 1).astype(float)
                bigu = disp.to_image(big, grid=grid, order=0)
                if min(bigu.shape) >= 2 and bigu.max() > 0.5:
                    xs = (np.arange(bigu.shape[1]) + 0.5) * W / bigu.shape[1]
                    ys = (np.arange(bigu.shape[0]) + 0.5) * H / bigu.shape[0]
                    ax.contour(xs, ys, bigu, levels=[0.5], colors="white", linewidths=1.2)
                ax.set_xlim(0, W)
                ax.set_ylim(H, 0)
            ax.set_title(_tx(f"{_head_name(k)}: {n} region{'s' if n != 1 else ''} above its mean"),
                         fontsize=FONT["title"] - 1, wrap=True)
    for ax in list(axes.flat):
        if id(ax) not in used:
            ax.remove()  # no blank axes
    if title:
        fig.suptitle(_tx(title), fontsize=11, wrap=True)
    return _save(fig, out_path, dpi, show)


def _components_key(ax) -> None:
    """The components row's legend, drawn in the slot under the image panel."""
    base = colormaps["tab10"].colors
    handles = [Patch(facecolor=base[j], alpha=0.6, label=f"region {j + 1}") for j in range(3)]
    handles.append(Patch(facecolor="none", edgecolor="black", linewidth=1.2, label="largest region (white outline)"))
    ax.legend(handles=handles, loc="center", fontsize=7, frameon=False,
              title="below: each head's cells above\nits mean, one colour per\n8-connected region", title_fontsize=7)


def unit_scale(m: np.ndarray) -> np.ndarray:
    """`m / max(m)` (values in [0, 1] for a non-negative map); an all-zero or non-positive map stays as is."""
    m = np.asarray(m, dtype=np.float64)
    top = float(np.max(m)) if m.size else 0.0
    return m / top if top > 0 else m


def _head_name(k: Any) -> str:
    if isinstance(k, tuple) and len(k) == 2:
        return f"L{k[0]} H{k[1]}"
    return str(k)


def token_overlay_strip(
    image: Any,
    layout: ImageLayout,
    maps_per_token: Any,
    tokens: Sequence[str],
    out_path: PathLike,
    max_tokens: int = 12,
    *,
    grid: str | None = None,
    order: int = 1,
    cmap: str = MAP_CMAP,
    alpha: float = 0.8,
    shared_scale: bool = False,
    ncols: int | None = None,
    panel_width: float = 1.8,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    max_side: int = 512,
    value_label: str = "attention",
    show: bool = False,
) -> Path:
    """One small overlay per generated token (the first `max_tokens`), in a strip.

    maps_per_token: `[T, rows, cols]` (or `[T, V]` per-token values). Each panel is scaled to its
    own max (0 .. max) unless `shared_scale`; the panel title is the token; one colour bar
    (`value_label`) beside the strip says so."""
    W, H = layout.image_size
    maps = np.asarray(maps_per_token, dtype=np.float64)
    if maps.ndim == 2 and maps.shape[-1] == layout.num_tokens:
        maps = layout.to_grid(maps, grid)
    if maps.ndim != 3:
        raise ValueError(f"expected [T, rows, cols] maps, got {maps.shape}")
    if len(tokens) != maps.shape[0]:
        raise ValueError(f"{len(tokens)} tokens but {maps.shape[0]} maps")
    T = maps.shape[0]
    n = max(1, min(T, int(max_tokens)))
    img, disp = _display(image, layout, max_side)
    cov = coverage_mask(disp, grid)
    nc = ncols or n
    nr = math.ceil(n / nc)
    pw, ph = _panel_size(W, H, panel_width)
    if figsize is None:
        figsize = (nc * pw + 0.2, nr * (ph + 0.4) + (0.45 if (title or T > n) else 0.05))
    fig = _new_figure(figsize, dpi, show)
    axes = fig.subplots(nr, nc, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    safe = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    vmin, vmax = (min(0.0, float(safe[:n].min())), float(safe[:n].max())) if shared_scale else (None, None)
    sm = None
    for i in range(n):
        ax = axes.flat[i]
        ax.set_axis_on()
        _show_image(ax, img, W, H)
        if T:
            sm = _overlay(ax, _as_grid(safe[i], layout, grid), disp, cov, W, H, grid=grid, order=order, cmap=cmap,
                          alpha=alpha, vmin=vmin, vmax=vmax)
            ax.set_title(_tok(tokens[i]), fontsize=8, wrap=True)
    for ax in list(axes.flat)[n:]:
        ax.remove()  # no blank axes
    if sm is not None:
        if shared_scale:
            _colorbar(fig, list(axes.flat)[:n], sm, value_label, shrink=0.9)
        else:  # one bar for all: every panel runs from 0 to its own max
            sm = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=sm.get_cmap())
            cb = _colorbar(fig, list(axes.flat)[:n], sm, f"{value_label} (each panel: 0 to its max)", shrink=0.9)
            cb.set_ticks([0.0, 0.5, 1.0], labels=["0", "max/2", "max"])
    sup = title or ""
    if T > n:
        sup = (sup + "  " if sup else "") + f"(first {n} of {T} tokens)"
    if sup:
        fig.suptitle(_tx(sup), fontsize=10, wrap=True)
    return _save(fig, out_path, dpi, show)
