"""Figures for localization-head analyses: head overlays on the original image, layer x head
heatmaps, the S_img elbow, per-token attention, ablation bars, and an index.html per run.

Every function saves one PNG at `out_path` (parent folders created, written atomically) and
returns that path as a `pathlib.Path`. Figures are built with matplotlib's object API on the Agg
canvas (no pyplot state, nothing to leak); `show=True` opens a pyplot window as well.

Geometry goes through `utils.layout.ImageLayout`: a `[rows, cols]` map is resampled onto the
original image with `layout.to_image` and drawn with the image's own extent `(0, W, H, 0)`, so
pad-to-square grids (extending beyond the image) and centre-crop grids (a central square) land on
the right pixels. Pixels the grid does not cover are left transparent.
"""

from __future__ import annotations

import html
import math
import os
import sys
import uuid
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import matplotlib

if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # headless by default; notebooks set MPLBACKEND and keep theirs

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lab.grounding import Grounding, cell_validity, coverage_mask, label_regions, predict_box
from utils.layout import ImageLayout

PathLike = str | os.PathLike

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}


# ---------------------------------------------------------------------------------------------
# plumbing
# ---------------------------------------------------------------------------------------------
def _interactive_pyplot():
    """pyplot on an interactive backend if one can be had (we default to Agg)."""
    import matplotlib.pyplot as plt

    if matplotlib.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template"):
        for cand in ("QtAgg", "TkAgg", "MacOSX", "GTK4Agg", "GTK3Agg", "WXAgg"):
            try:
                plt.switch_backend(cand)
                break
            except Exception:  # noqa: BLE001 - any failure means "not this one"
                continue
        else:
            warnings.warn("show=True but no interactive matplotlib backend is available; only saving", stacklevel=3)
    return plt


def _tmp_name(path: Path) -> str:
    return str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _new_figure(figsize: tuple[float, float], dpi: float, show: bool) -> Figure:
    if show:
        plt = _interactive_pyplot()
        return plt.figure(figsize=figsize, dpi=dpi, layout="constrained")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_path: PathLike, dpi: float, show: bool) -> Path:
    """Save as PNG atomically (temp file + os.replace), then show or release the figure."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(out)
    try:
        with open(tmp, "xb") as f:  # plain open: permissions follow the umask (mkstemp's are 0600)
            fig.savefig(f, format="png", dpi=dpi)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if show:
        import matplotlib.pyplot as plt

        plt.show()
        plt.close(fig)
    else:
        fig.clear()
    return out


def _tx(s: Any) -> str:
    """Text safe for matplotlib: a literal `$` never starts mathtext."""
    return str(s).replace("$", r"\$")


def _tok(s: Any) -> str:
    """A token as a label: blank or control-character tokens shown as their repr ('\\n', ' ')."""
    s = str(s)
    if s.strip() == "" or any(not ch.isprintable() for ch in s):
        s = repr(s)
    return _tx(s)


def _rgb(image: Any) -> np.ndarray:
    """PIL image or array -> uint8/float RGB array."""
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr


def _display(image: Any, layout: ImageLayout, max_side: int) -> tuple[np.ndarray, ImageLayout]:
    """The image as RGB and a layout to resample maps with, both downscaled if the image is larger
    than `max_side` (the layout is scaled exactly: same geometry, fewer pixels)."""
    W, H = layout.image_size
    if hasattr(image, "size") and hasattr(image, "convert"):
        iw, ih = image.size
    else:
        ih, iw = np.asarray(image).shape[:2]
    if (iw, ih) != (W, H):
        if abs(iw / ih - W / H) > 0.02:
            raise ValueError(f"image is {iw}x{ih} but the layout describes a {W}x{H} image")
        warnings.warn(f"image is {iw}x{ih}, layout says {W}x{H}: drawing it stretched to the layout size", stacklevel=3)
    s = min(1.0, float(max_side) / max(W, H))
    if s >= 1.0:
        return _rgb(image), layout
    w2, h2 = max(1, int(round(W * s))), max(1, int(round(H * s)))
    sx, sy = w2 / W, h2 / H
    grids = tuple(replace(g, box=(g.box[0] * sx, g.box[1] * sy, g.box[2] * sx, g.box[3] * sy)) for g in layout.grids)
    small = replace(layout, image_size=(w2, h2), grids=grids)
    if hasattr(image, "resize"):
        from PIL import Image

        img = _rgb(image.resize((w2, h2), Image.BILINEAR))
    else:
        img = _rgb(image)
    return img, small


def _as_grid(m: Any, layout: ImageLayout, grid: str | None) -> np.ndarray:
    """A `[rows, cols]` map, or per-token values `[V]` reshaped with `layout.to_grid`."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim == 1:
        m = layout.to_grid(m, grid)
    g = layout.grid(grid)
    if m.shape != (g.rows, g.cols):
        raise ValueError(f"map of shape {m.shape} for the {g.rows}x{g.cols} grid {g.name!r}")
    return np.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)


def _show_image(ax, img: np.ndarray, W: int, H: int) -> None:
    ax.imshow(img, extent=(0, W, H, 0), interpolation="bilinear" if max(img.shape[:2]) > 64 else "nearest")
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _overlay(ax, m: np.ndarray, disp: ImageLayout, cov: np.ndarray, W: int, H: int, *, grid, order, cmap, alpha, vmin=None, vmax=None):
    """Draw map `m` over the image: colour from `cmap`, opacity growing with the value (from
    alpha/4 at the minimum to alpha at the maximum) so the image stays readable; pixels the grid
    does not cover are dimmed grey. Returns a ScalarMappable for a colorbar."""
    from matplotlib.cm import ScalarMappable

    up = disp.to_image(m, grid=grid, order=order)
    lo = float(np.min(m)) if vmin is None else float(vmin)
    hi = float(np.max(m)) if vmax is None else float(vmax)
    if not hi > lo:
        hi = lo + 1e-12
    norm = Normalize(vmin=lo, vmax=hi)
    t = np.clip((up - lo) / (hi - lo), 0.0, 1.0)
    rgba = colormaps[cmap](t)
    rgba[..., 3] = np.where(cov, alpha * (0.25 + 0.75 * t), 0.0)
    if not cov.all():
        rgba[~cov] = _UNCOVERED
    ax.imshow(rgba, extent=(0, W, H, 0), interpolation="nearest")
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    return ScalarMappable(norm=norm, cmap=colormaps[cmap])


_UNCOVERED = (0.25, 0.25, 0.25, 0.45)  # dims pixels no grid cell covers (centre crop)


def _dim_uncovered(ax, cov: np.ndarray, W: int, H: int) -> None:
    if not cov.all():
        rgba = np.zeros(cov.shape + (4,))
        rgba[~cov] = _UNCOVERED
        ax.imshow(rgba, extent=(0, W, H, 0), interpolation="nearest")


def _box_patch(ax, box_xywh, *, color, ls="-", lw=2.0, label=None):
    x, y, w, h = (float(v) for v in box_xywh)
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, linestyle=ls, linewidth=lw, label=label))


def _coverage_outline(ax, layout: ImageLayout, grid, W, H) -> None:
    """Dashed outline of the grid's coverage when it does not span the whole image (centre crop)."""
    x0, y0, x1, y1 = layout.grid(grid).box
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if cx0 > 0 or cy0 > 0 or cx1 < W or cy1 < H:
        ax.add_patch(
            Rectangle((cx0, cy0), cx1 - cx0, cy1 - cy0, fill=False, edgecolor="yellow", linestyle=":", linewidth=1.5, label="grid coverage")
        )


def _panel_size(W: int, H: int, width: float) -> tuple[float, float]:
    h = width * H / W
    return width, float(min(max(h, 0.45 * width), 2.2 * width))


# ---------------------------------------------------------------------------------------------
# overlays
# ---------------------------------------------------------------------------------------------
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
    cmap: str = "jet",
    alpha: float = 0.7,
    ncols: int | None = None,
    panel_width: float = 3.0,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    max_side: int = 1024,
    show: bool = False,
) -> Path:
    """Original image + one overlay per head + the combined map with boxes (+ components row).

    head_maps: {(layer, head): [rows, cols] map (or [V] per-token values)}. combined: the
    combined map (default: `combine_head_maps` of the heads with `sigma`). pred_box: (x, y, w, h)
    or a `Grounding` (default: `predict_box` on the combined map). gt_box: (x, y, w, h) if known.
    show_components: add a row with each head's above-mean 8-connected regions (largest outlined).
    """
    from lab.grounding import combine_head_maps

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
    rows_comp = math.ceil(len(maps) / nc) if (show_components and maps) else 0
    pw, ph = _panel_size(W, H, panel_width)
    if figsize is None:
        figsize = (nc * pw + 0.3, (rows_main + rows_comp) * (ph + 0.45) + (0.45 if title else 0.1))
    fig = _new_figure(figsize, dpi, show)
    axes = fig.subplots(rows_main + rows_comp, nc, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    flat_main = list(axes[:rows_main].flat)

    # panel 0: the image, gt box, grid coverage
    ax = flat_main[0]
    ax.set_axis_on()
    _show_image(ax, img, W, H)
    _coverage_outline(ax, layout, grid, W, H)
    if gt_box is not None:
        _box_patch(ax, gt_box, color="white", ls="--", label="gt")
    ax.set_title(_tx(f"image {W}x{H} ({layout.aspect})"), fontsize=9)

    # one panel per head
    for i, (k, m) in enumerate(zip(keys, maps)):
        ax = flat_main[1 + i]
        ax.set_axis_on()
        _show_image(ax, img, W, H)
        _overlay(ax, m, disp, cov, W, H, grid=grid, order=order, cmap=cmap, alpha=alpha)
        ax.set_title(_tx(_head_name(k)), fontsize=9)

    # combined panel
    if combined_map is not None:
        ax = flat_main[1 + len(maps)]
        ax.set_axis_on()
        _show_image(ax, img, W, H)
        im = _overlay(ax, combined_map, disp, cov, W, H, grid=grid, order=order, cmap=cmap, alpha=alpha)
        if g_pred is not None and g_pred.grid_mask.any():
            region = disp.to_image(g_pred.grid_mask.astype(float), grid=grid, order=0)
            xs = (np.arange(region.shape[1]) + 0.5) * W / region.shape[1]
            ys = (np.arange(region.shape[0]) + 0.5) * H / region.shape[0]
            if region.min() < 0.5 < region.max():
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
            from lab.grounding import iou

            ttl += f" (IoU {iou(box_pred, gt_box):.2f})"
        ax.set_title(ttl, fontsize=9)
        if box_pred is not None or gt_box is not None:
            ax.legend(loc="upper right", fontsize=6, framealpha=0.6, handlelength=1.5)
        fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02).ax.tick_params(labelsize=6)

    # components row(s)
    if rows_comp:
        valid = cell_validity(layout, grid)
        flat_comp = list(axes[rows_main:].flat)
        for i, (k, m) in enumerate(zip(keys, maps)):
            ax = flat_comp[i]
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
                if bigu.max() > 0.5:
                    xs = (np.arange(bigu.shape[1]) + 0.5) * W / bigu.shape[1]
                    ys = (np.arange(bigu.shape[0]) + 0.5) * H / bigu.shape[0]
                    ax.contour(xs, ys, bigu, levels=[0.5], colors="white", linewidths=1.2)
                ax.set_xlim(0, W)
                ax.set_ylim(H, 0)
            ax.set_title(_tx(f"{_head_name(k)}: {n} region{'s' if n != 1 else ''}"), fontsize=8)
    if title:
        fig.suptitle(_tx(title), fontsize=11)
    return _save(fig, out_path, dpi, show)


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
    cmap: str = "jet",
    alpha: float = 0.7,
    shared_scale: bool = False,
    ncols: int | None = None,
    panel_width: float = 1.8,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    max_side: int = 512,
    show: bool = False,
) -> Path:
    """One small overlay per generated token (the first `max_tokens`), in a strip.

    maps_per_token: `[T, rows, cols]` (or `[T, V]` per-token values). Each panel is scaled to its
    own max unless `shared_scale`; the panel title is the token."""
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
    vmin, vmax = (float(safe[:n].min()), float(safe[:n].max())) if shared_scale else (None, None)
    for i in range(n):
        ax = axes.flat[i]
        ax.set_axis_on()
        _show_image(ax, img, W, H)
        if T:
            _overlay(ax, _as_grid(safe[i], layout, grid), disp, cov, W, H, grid=grid, order=order, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
            ax.set_title(_tok(tokens[i]), fontsize=8)
    sup = title or ""
    if T > n:
        sup = (sup + "  " if sup else "") + f"(first {n} of {T} tokens)"
    if sup:
        fig.suptitle(_tx(sup), fontsize=10)
    return _save(fig, out_path, dpi, show)


# ---------------------------------------------------------------------------------------------
# charts
# ---------------------------------------------------------------------------------------------
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
    cb.set_label(_tx(cbar_label), fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if (~np.isfinite(vals)).any():
        ax.text(1.0, -0.06, "grey: NaN / inf", transform=ax.transAxes, ha="right", va="top", fontsize=7, color="0.35")
    if title:
        ax.set_title(_tx(title), fontsize=10)
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
    ax.set_title(_tx(title), fontsize=10)
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
    ax.set_title(_tx(title), fontsize=10)
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
        ax.set_title(_tx(title), fontsize=10)
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_path, dpi, show)


# ---------------------------------------------------------------------------------------------
# index.html
# ---------------------------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    try:
        from utils.io import atomic_write_text  # type: ignore[import-not-found]
    except ImportError:
        atomic_write_text = None
    if atomic_write_text is not None:
        atomic_write_text(path, text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def write_index_html(
    run_dir: PathLike,
    title: str,
    sections: Mapping[str, Sequence[PathLike]],
    metrics: Mapping[str, Any] | None = None,
    *,
    filename: str = "index.html",
) -> Path:
    """Write `run_dir/index.html`: a metrics table and, per section, every figure embedded
    (`<img>` with a relative path, linked to itself) or linked (other files). Paths are relative to
    `run_dir` (absolute ones inside it are made relative); missing files are listed, not linked."""
    run_dir = Path(run_dir)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1600px}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 8px;text-align:left}"
        "td.num{text-align:right;font-family:monospace}"
        "figure{display:inline-block;margin:6px;vertical-align:top}"
        "figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:small;color:#444}"
        ".missing{color:#a00}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if metrics:
        parts.append("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>")
        for k, v in _flatten(metrics):
            cls = ' class="num"' if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else ""
            parts.append(f"<tr><td>{esc(str(k))}</td><td{cls}>{esc(_fmt(v))}</td></tr>")
        parts.append("</table>")
    for name, paths in sections.items():
        parts.append(f"<h2>{esc(str(name))}</h2><div>")
        for p in paths:
            p = Path(p)
            full = p if p.is_absolute() else run_dir / p
            try:
                rel = os.path.relpath(full, run_dir)
            except ValueError:  # other drive (Windows)
                rel = str(full)
            rel = rel.replace(os.sep, "/")
            href = esc(quote(rel), quote=True)
            if not full.exists():
                parts.append(f'<p class="missing">{esc(rel)} (missing)</p>')
            elif full.suffix.lower() in IMAGE_EXTS:
                parts.append(f'<figure><a href="{href}"><img src="{href}" alt="{esc(rel, quote=True)}" loading="lazy"></a><figcaption>{esc(rel)}</figcaption></figure>')
            else:
                parts.append(f'<p><a href="{href}">{esc(rel)}</a></p>')
        parts.append("</div>")
    parts.append("</body></html>")
    out = run_dir / filename
    _atomic_write_text(out, "\n".join(parts) + "\n")
    return out
