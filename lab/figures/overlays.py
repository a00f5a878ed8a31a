"""Overlays on the original image: one panel per head + combined map with boxes; per-token strips."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.patches import Patch

from lab.analysis.grounding import Grounding, above_mean_regions, coverage_mask
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
    grounding: Grounding | None = None,
    gt_box: Sequence[float] | None = None,
    iou: float | None = None,
    show_components: bool = False,
    title: str | None = None,
    grid: str | None = None,
    style: OverlayStyle | None = None,
    show: bool = False,
) -> Path:
    """Original image + one overlay per head + the combined map with boxes (+ components row).

    Draws the numbers it is given and computes none (`lab.analysis.record_numbers` does, with the
    run's settings): head_maps: {(layer, head): [rows, cols] map (or [V] per-token values)};
    grounding: the heads' combined map, region, box and peak (`record_numbers.ground`; None: no
    combined panel); gt_box: (x, y, w, h) if known; iou: the IoU of the two, in the combined panel's
    title. `style.order`: 0 draws grid cells (as the explorer page does), 1 interpolates between
    cell centres. show_components: add a row with each
    head's above-mean 8-connected regions (`grounding.above_mean_regions`; the 3 largest coloured),
    each under its head's panel, the colours explained under the image. Every map panel has its own
    colour bar: a head's runs from 0 to its max (`style.head_label`); the combined panel is drawn
    divided by its maximum, so its bar (`style.combined_label`) runs from 0 to 1. Colours: `style.cmap` (a
    perceptual map) with opacity proportional to the value (`base.alpha_cmap`).
    """
    st = style or OverlayStyle()
    W, H = layout.image_size
    img, disp = _display(image, layout, st.max_side)
    cov = coverage_mask(disp, grid)
    keys = list(head_maps.keys())
    maps = [_as_grid(head_maps[k], layout, grid) for k in keys]
    n_main = 1 + len(maps) + (1 if grounding is not None else 0)
    nc = st.ncols or min(n_main, 6)
    rows_main = math.ceil(n_main / nc)
    rows_comp = rows_main if (show_components and maps) else 0  # each head's regions under its panel
    pw, ph = _panel_size(W, H, st.panel_width)
    figsize = st.figsize or (nc * (pw + 0.55) + 0.3, (rows_main + rows_comp) * (ph + 0.45) + (0.45 if title else 0.1))
    fig = _new_figure(figsize, st.dpi, show)
    axes = fig.subplots(rows_main + rows_comp, nc, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    flat_main = list(axes[:rows_main].flat)
    used = {id(a) for a in flat_main[:n_main]}
    draw = _Panels(fig, img, disp, cov, layout, grid, st)
    draw.image(flat_main[0], gt_box)
    for i, (k, m) in enumerate(zip(keys, maps)):  # each with its own colour scale (0 .. the head's max)
        draw.head(flat_main[1 + i], m, _head_name(k))
    if grounding is not None:
        draw.combined(flat_main[1 + len(maps)], grounding, gt_box, iou)
    if rows_comp:  # head i's regions under head i's panel; the colours explained under the image
        flat_comp = list(axes[rows_main:].flat)
        _components_key(flat_comp[0])
        used.add(id(flat_comp[0]))
        for i, (k, m) in enumerate(zip(keys, maps)):
            used.add(id(flat_comp[1 + i]))
            draw.components(flat_comp[1 + i], m, _head_name(k))
    for ax in list(axes.flat):
        if id(ax) not in used:
            ax.remove()  # no blank axes
    if title:
        fig.suptitle(_tx(title), fontsize=11, wrap=True)
    return _save(fig, out_path, st.dpi, show)


@dataclass(frozen=True)
class OverlayStyle:
    """How `overlay_heads` lays out and colours its panels (none of it changes a number)."""

    cmap: str = MAP_CMAP
    alpha: float = 0.8
    ncols: int | None = None
    panel_width: float = 3.0
    figsize: tuple[float, float] | None = None
    dpi: float = 100
    max_side: int = 1024
    order: int = 0  # 0: grid cells, as the explorer page draws them; 1: interpolated between cell centres
    box_label: str = "pred"
    combined_label: str = "combined (smoothed), / its max"
    head_label: str = "attention per grid cell (softmax prob.)"


STRIP_STYLE = OverlayStyle(panel_width=1.8, max_side=512, order=1)  # token strips: small panels, interpolated


N_COLOURED = 3  # the components row colours this many largest regions; the others are grey
_OTHER = (0.6, 0.6, 0.6)


@dataclass
class _Panels:
    """The panels of one overlay figure (image, head, combined, components), sharing its display."""

    fig: Any
    img: Any
    disp: ImageLayout
    cov: np.ndarray
    layout: ImageLayout
    grid: str | None
    style: OverlayStyle

    def _base(self, ax) -> None:
        ax.set_axis_on()
        W, H = self.layout.image_size
        _show_image(ax, self.img, W, H)

    def _map(self, ax, m, **kw):
        W, H = self.layout.image_size
        return _overlay(ax, m, self.disp, self.cov, W, H, grid=self.grid, order=self.style.order, cmap=self.style.cmap,
                        alpha=self.style.alpha, **kw)

    def _outline(self, ax, mask: np.ndarray, width: float) -> None:
        """White contour around the cells of a bool grid mask (needs 2 x 2 display pixels)."""
        W, H = self.layout.image_size
        up = self.disp.to_image(mask.astype(float), grid=self.grid, order=0)
        if min(up.shape) >= 2 and up.min() < 0.5 < up.max():
            xs = (np.arange(up.shape[1]) + 0.5) * W / up.shape[1]
            ys = (np.arange(up.shape[0]) + 0.5) * H / up.shape[0]
            ax.contour(xs, ys, up, levels=[0.5], colors="white", linewidths=width)

    def image(self, ax, gt_box) -> None:
        """Panel 0: the image, the ground-truth box, the grid's coverage."""
        W, H = self.layout.image_size
        self._base(ax)
        _coverage_outline(ax, self.layout, self.grid, W, H)
        if gt_box is not None:
            _box_patch(ax, gt_box, color="white", ls="--", label="gt")
        ax.set_title(_tx(f"image {W}x{H} ({self.layout.aspect})"), fontsize=FONT["title"], wrap=True)

    def head(self, ax, m, name: str) -> None:
        self._base(ax)
        sm = self._map(ax, m)
        ax.set_title(_tx(name), fontsize=FONT["title"], wrap=True)
        _colorbar(self.fig, ax, sm, self.style.head_label)

    def combined(self, ax, g: Grounding, gt_box, iou: float | None) -> None:
        """The combined map (divided by its max), its region, the boxes, the peak, the IoU given."""
        W, H = self.layout.image_size
        self._base(ax)
        im = self._map(ax, unit_scale(_as_grid(g.combined, self.layout, self.grid)), vmin=0.0, vmax=1.0)
        if g.grid_mask.any():
            self._outline(ax, g.grid_mask, 1.0)
        _box_patch(ax, g.box_xywh, color="lime", label=self.style.box_label)
        if gt_box is not None:
            _box_patch(ax, gt_box, color="red", ls="--", label="gt")
        ax.plot([g.peak_xy[0]], [g.peak_xy[1]], marker="*", color="white", markeredgecolor="black", markersize=11,
                linestyle="none", label="peak")
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.set_title("combined" + (f" (IoU {iou:.2f})" if iou is not None else ""), fontsize=FONT["title"], wrap=True)
        ax.legend(loc="upper right", fontsize=7, framealpha=0.6, handlelength=1.5)
        _colorbar(self.fig, ax, im, self.style.combined_label)

    def components(self, ax, m, name: str) -> None:
        """One head's above-mean regions: the N_COLOURED largest in colour (largest outlined), the rest grey."""
        W, H = self.layout.image_size
        self._base(ax)
        _dim_uncovered(ax, self.cov, W, H)
        labels, sizes = above_mean_regions(m, self.layout, self.grid)
        n = len(sizes)
        if n:
            up = np.rint(self.disp.to_image(np.minimum(labels, N_COLOURED + 1).astype(float), grid=self.grid, order=0)).astype(int)
            base = colormaps["tab10"].colors
            cm = ListedColormap([base[j] for j in range(N_COLOURED)] + [_OTHER])
            norm = BoundaryNorm(np.arange(0.5, N_COLOURED + 2.5), N_COLOURED + 1)
            ax.imshow(np.ma.masked_where((up == 0) | ~self.cov, up), extent=(0, W, H, 0), cmap=cm, norm=norm, alpha=0.6,
                      interpolation="nearest")
            self._outline(ax, labels == 1, 1.2)
            ax.set_xlim(0, W)
            ax.set_ylim(H, 0)
        ax.set_title(_tx(f"{name}: {_regions_text(n)}"), fontsize=FONT["title"] - 1, wrap=True)


def _regions_text(n: int) -> str:
    """'26 regions above its mean' said so that a legend of 3 colours matches it."""
    if n > N_COLOURED:
        return f"{N_COLOURED} largest of {n} regions above its mean"
    return f"{n} region{'s' if n != 1 else ''} above its mean"


def _components_key(ax) -> None:
    """The components row's legend, drawn in the slot under the image panel."""
    base = colormaps["tab10"].colors
    names = ["largest region", "2nd largest", "3rd largest"][:N_COLOURED]
    handles = [Patch(facecolor=base[j], alpha=0.6, label=names[j]) for j in range(N_COLOURED)]
    handles.append(Patch(facecolor=_OTHER, alpha=0.6, label="smaller regions"))
    handles.append(Patch(facecolor="none", edgecolor="black", linewidth=1.2, label="largest region (white outline)"))
    ax.legend(handles=handles, loc="center", fontsize=7, frameon=False,
              title="below: each head's grid cells above\nits mean, one colour per\n8-connected region", title_fontsize=7)


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
    shared_scale: bool = False,
    title: str | None = None,
    value_label: str = "attention",
    style: OverlayStyle | None = None,
    show: bool = False,
) -> Path:
    """One small overlay per generated token (the first `max_tokens`), in a strip.

    maps_per_token: `[T, rows, cols]` (or `[T, V]` per-token values). Each panel is scaled to its
    own max (0 .. max) unless `shared_scale`; the panel title is the token; one colour bar
    (`value_label`) beside the strip says so. `style`: panels' colours and sizes (`STRIP_STYLE` when None)."""
    st = style or STRIP_STYLE
    cmap, alpha, order, figsize, dpi = st.cmap, st.alpha, st.order, st.figsize, st.dpi
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
    img, disp = _display(image, layout, st.max_side)
    cov = coverage_mask(disp, grid)
    nc = st.ncols or n
    nr = math.ceil(n / nc)
    pw, ph = _panel_size(W, H, st.panel_width)
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
