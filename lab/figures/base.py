"""Plot plumbing shared by every figure: Agg figures, atomic PNG saves, image + map overlay drawing.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot state, nothing to
leak); `show=True` opens a pyplot window as well. Geometry goes through
`utils.contracts.layout.ImageLayout`: a `[rows, cols]` map is resampled onto the original image with
`layout.to_image` and drawn with the image's own extent `(0, W, H, 0)`, so pad-to-square grids
(extending beyond the image) and centre-crop grids (a central square) land on the right pixels.
"""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import matplotlib

if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # headless by default; notebooks set MPLBACKEND and keep theirs

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from utils.contracts.layout import ImageLayout

PathLike = str | os.PathLike


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


MAP_CMAP = "inferno"  # perceptual and dark-to-bright: it does not read like the image's own colours (jet did)
FONT = {"title": 9, "cbar_label": 8, "cbar_ticks": 7}  # readable at 100 dpi


def alpha_cmap(cmap: str, alpha: float) -> ListedColormap:
    """`cmap` with opacity proportional to the value: 0 (transparent) at the bottom, `alpha` at the
    top, so low attention lets the image show through. The overlay and its colour bar share it."""
    rgba = colormaps[cmap](np.linspace(0.0, 1.0, 256))
    rgba[:, 3] = np.linspace(0.0, float(alpha), 256)
    return ListedColormap(rgba, name=f"{cmap}_alpha")


def _overlay(ax, m: np.ndarray, disp: ImageLayout, cov: np.ndarray, W: int, H: int, *, grid, order, cmap, alpha, vmin=None, vmax=None):
    """Draw map `m` over the image: colour from `cmap`, opacity proportional to the value (0 at
    `vmin`, `alpha` at `vmax`; `alpha_cmap`) so the image stays readable where attention is low;
    pixels the grid does not cover are dimmed grey. vmin defaults to 0 for a non-negative map (an
    attention map's colour scale starts at zero attention), vmax to the map's max. Returns a
    ScalarMappable for a colorbar (the same colours and opacities)."""
    from matplotlib.cm import ScalarMappable

    up = disp.to_image(m, grid=grid, order=order)
    lo = min(0.0, float(np.min(m))) if vmin is None else float(vmin)
    hi = float(np.max(m)) if vmax is None else float(vmax)
    if not hi > lo:
        hi = lo + 1e-12
    norm = Normalize(vmin=lo, vmax=hi)
    t = np.clip((up - lo) / (hi - lo), 0.0, 1.0)
    cm = alpha_cmap(cmap, alpha)
    rgba = cm(t)
    rgba[..., 3] = np.where(cov, rgba[..., 3], 0.0)
    if not cov.all():
        rgba[~cov] = _UNCOVERED
    ax.imshow(rgba, extent=(0, W, H, 0), interpolation="nearest")
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    return ScalarMappable(norm=norm, cmap=cm)


def tick_labels(values: Sequence[float], digits: int = 3) -> list[str]:
    """Tick labels with one number of decimals: enough for `digits` significant digits of the largest
    magnitude (0, 0.5, 1 -> 0.00, 0.50, 1.00; 0, 0.0137, 0.0274 -> 0.0000, 0.0137, 0.0274)."""
    top = max((abs(float(v)) for v in values if np.isfinite(v)), default=0.0)
    decimals = max(0, digits - 1 - int(np.floor(np.log10(top)))) if top > 0 else 0
    return [f"{float(v):.{decimals}f}" for v in values]


def _colorbar(fig, ax, mappable, label: str, **kw):
    """A colour bar beside `ax` with a readable label (FONT) and three ticks: bottom, middle, top
    (few ticks keep it legible in a small panel, and cheap to lay out)."""
    cb = fig.colorbar(mappable, ax=ax, shrink=kw.pop("shrink", 0.85), pad=kw.pop("pad", 0.02), **kw)
    cb.set_label(_tx(label), fontsize=FONT["cbar_label"])
    lo, hi = float(mappable.norm.vmin), float(mappable.norm.vmax)
    ticks = [lo, (lo + hi) / 2, hi]
    cb.set_ticks(ticks, labels=tick_labels(ticks))
    cb.ax.tick_params(labelsize=FONT["cbar_ticks"])
    return cb


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
