"""Visual grounding from localization heads (Kang et al., CVPR 2025).

"Your Large Vision-Language Model Only Needs A Few Attention Heads For Visual Grounding":
the attention maps of a few selected heads (text query -> image tokens) are each smoothed with a
Gaussian, summed, binarised at the mean, and the largest connected region gives the box (or, with
its convex hull filled, a mask).

Everything here is model-agnostic numpy/scipy. Geometry goes through `utils.contracts.layout.ImageLayout`:
grid cells -> original-image pixels via `layout.cells_box` / `layout.cell_center` /
`layout.to_image`, so the LLaVA-1.5 pad-to-square grid (extends beyond the image) and the llava-hf
centre-crop grid (covers a central square) both land on the right pixels.

Conventions: boxes are `(x, y, w, h)` in original-image pixels (floats); grid boxes are
`(r0, c0, r1, c1)` with exclusive ends; maps are `[rows, cols]` (or `[K, rows, cols]` for K heads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np
from scipy import ndimage

from utils.contracts.layout import ImageLayout

Threshold = Union[str, float, Callable[[np.ndarray], float]]

# 8-connectivity for scipy.ndimage.label
_EIGHT = np.ones((3, 3), dtype=bool)


# ---------------------------------------------------------------------------------------------
# small layout helpers (things ImageLayout does not provide directly)
# ---------------------------------------------------------------------------------------------
def cell_validity(layout: ImageLayout, grid: str | None = None, image_cells_only: bool = False) -> np.ndarray:
    """bool `[rows, cols]`: cells that hold a token (token_index >= 0) and, with
    `image_cells_only`, whose pixel box overlaps the original image (drops pad-to-square padding
    cells)."""
    g = layout.grid(grid)
    valid = (np.asarray(g.token_index) >= 0).reshape(g.rows, g.cols)
    if image_cells_only:
        for r in range(g.rows):
            for c in range(g.cols):
                x0, y0, x1, y1 = layout.cell_box(r, c, grid=grid, clip=True)
                if x1 - x0 <= 0 or y1 - y0 <= 0:
                    valid[r, c] = False
    return valid


def coverage_mask(layout: ImageLayout, grid: str | None = None) -> np.ndarray:
    """bool `[H, W]`: image pixels covered by the grid (all of them in pad mode, the central
    square in centre-crop mode)."""
    g = layout.grid(grid)
    return layout.to_image(np.ones((g.rows, g.cols)), grid=grid, order=0) > 0.5


def grid_mask_to_image(mask: np.ndarray, layout: ImageLayout, grid: str | None = None) -> np.ndarray:
    """bool `[H, W]`: a cell mask painted onto the original image (exact cell membership)."""
    return layout.to_image(np.asarray(mask, dtype=np.float64), grid=grid, order=0) > 0.5


def _check_map(m: np.ndarray, layout: ImageLayout, grid: str | None) -> np.ndarray:
    g = layout.grid(grid)
    m = np.asarray(m, dtype=np.float64)
    if m.shape[-2:] != (g.rows, g.cols):
        raise ValueError(f"map of shape {m.shape} does not match the {g.rows}x{g.cols} grid {g.name!r}")
    return m


# ---------------------------------------------------------------------------------------------
# combining heads
# ---------------------------------------------------------------------------------------------
def _normalize_one(m: np.ndarray, how: str | None) -> np.ndarray:
    if how in (None, "none"):
        return m
    if how == "sum":
        s = m.sum()
        return m / s if s > 0 else m
    if how == "max":
        s = np.abs(m).max()
        return m / s if s > 0 else m
    if how == "minmax":
        lo, hi = m.min(), m.max()
        return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    raise ValueError(f"normalize must be None, 'none', 'sum', 'max' or 'minmax', not {how!r}")


def combine_head_maps(maps: np.ndarray, sigma: float = 1.0, normalize: str | None = None) -> np.ndarray:
    """Sum of per-head Gaussian-smoothed maps: `[K, rows, cols] -> [rows, cols]`.

    sigma: Gaussian std in grid cells (0 = no smoothing). normalize (applied per head, *before*
    smoothing): None/"none" (raw attention, the paper's setting), "sum" (each head sums to 1),
    "max" (peak 1) or "minmax" (to [0, 1]). A `[rows, cols]` input is treated as one head.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"expected [K, rows, cols] maps, got shape {maps.shape}")
    if maps.shape[0] == 0:
        raise ValueError("no head maps to combine")
    maps = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    out = np.zeros(maps.shape[1:], dtype=np.float64)
    for m in maps:
        m = _normalize_one(m, normalize)
        if sigma and sigma > 0:
            m = ndimage.gaussian_filter(m, sigma=float(sigma), mode="reflect")
        out += m
    return out


# ---------------------------------------------------------------------------------------------
# binarisation, regions, boxes
# ---------------------------------------------------------------------------------------------
def threshold_value(combined: np.ndarray, threshold: Threshold = "mean", valid: np.ndarray | None = None) -> float:
    """The cut-off t for `combined > t`, computed over the valid cells: "mean" (the paper),
    "median", "frac:<x>" (x times the max), a number (used as is) or a callable (gets the valid
    values as a 1-D array, returns t)."""
    vals = np.asarray(combined, dtype=np.float64)
    if valid is not None:
        vals = vals[valid]
    vals = vals.ravel()
    if vals.size == 0:
        return float("nan")
    if callable(threshold):
        return float(threshold(vals))
    if isinstance(threshold, str):
        if threshold == "mean":
            return float(vals.mean())
        if threshold == "median":
            return float(np.median(vals))
        if threshold.startswith("frac:"):
            return float(float(threshold[5:]) * vals.max())
        raise ValueError(f"unknown threshold {threshold!r} (mean, median, frac:<x>, a number or a callable)")
    return float(threshold)


def binarize(combined: np.ndarray, threshold: Threshold = "mean", valid: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(`combined > t` restricted to valid cells, t). If nothing is strictly above t (a flat map)
    the cells equal to t are kept, so the result is empty only when no cell is valid."""
    combined = np.asarray(combined, dtype=np.float64)
    if valid is None:
        valid = np.ones(combined.shape, dtype=bool)
    t = threshold_value(combined, threshold, valid)
    mask = (combined > t) & valid
    if not mask.any():
        mask = (combined >= t) & valid
    return mask, t


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a bool mask: (labels int [rows, cols], n)."""
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=_EIGHT)
    return labels, int(n)


def above_mean_regions(m: np.ndarray, layout: ImageLayout, grid: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One head's cells above its mean (over the cells the grid's image covers), as 8-connected
    regions numbered by size: (labels int [rows, cols], 1 = the largest, 0 = below the mean;
    sizes int [n], descending). What the figures' components row draws.

    Args:
        m: [rows, cols] map of one head.
    """
    m = np.asarray(m, dtype=np.float64)
    valid = cell_validity(layout, grid)
    mask = (m > m[valid].mean()) & valid if valid.any() else m > m.mean()
    labels, n = label_regions(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")  # region order[i] + 1 becomes i + 1
    rank = np.zeros(n + 1, dtype=int)
    rank[order + 1] = np.arange(1, n + 1)
    return rank[labels], sizes[order]


def select_region(mask: np.ndarray, combined: np.ndarray, region: str = "largest") -> np.ndarray:
    """Pick cells of `mask`: "largest" (most cells; ties -> larger summed map), "mass" (largest
    summed map value), "peak" (the component holding the highest above-threshold cell) or "all"."""
    mask = np.asarray(mask, dtype=bool)
    if region == "all" or not mask.any():
        return mask.copy()
    labels, n = label_regions(mask)
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum(np.ones_like(combined), labels, idx)
    masses = ndimage.sum(combined, labels, idx)
    if region == "largest":
        order = np.lexsort((-masses, -sizes))  # primary: size desc, then mass desc
        k = idx[order[0]]
    elif region == "mass":
        k = idx[int(np.argmax(masses))]
    elif region == "peak":
        vals = np.where(mask, combined, -np.inf)
        k = labels.flat[int(np.argmax(vals))]
    else:
        raise ValueError(f"region must be 'largest', 'mass', 'peak' or 'all', not {region!r}")
    return labels == k


def fill_convex_hull(mask: np.ndarray) -> np.ndarray:
    """The cells whose centres lie in the convex hull of the mask's cells (corners included);
    always a superset of `mask`."""
    from matplotlib.path import Path as MplPath
    from scipy.spatial import ConvexHull

    mask = np.asarray(mask, dtype=bool)
    rr, cc = np.nonzero(mask)
    if rr.size == 0:
        return mask.copy()
    # corners of every cell in (col, row) continuous coords; cell (r, c) spans [c, c+1] x [r, r+1]
    offs = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float64)
    pts = (np.stack([cc, rr], axis=1)[:, None, :] + offs[None]).reshape(-1, 2)
    pts = np.unique(pts, axis=0)
    hull = ConvexHull(pts)
    poly = MplPath(pts[hull.vertices])
    rows, cols = mask.shape
    R, C = np.mgrid[0:rows, 0:cols]
    centres = np.stack([C.ravel() + 0.5, R.ravel() + 0.5], axis=1)
    inside = poly.contains_points(centres, radius=1e-9).reshape(rows, cols)
    return inside | mask


def tight_grid_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(r0, c0, r1, c1), exclusive ends, of the True cells; None if there are none."""
    rr, cc = np.nonzero(np.asarray(mask, dtype=bool))
    if rr.size == 0:
        return None
    return int(rr.min()), int(cc.min()), int(rr.max()) + 1, int(cc.max()) + 1


def grid_box_to_xywh(grid_box: tuple[int, int, int, int], layout: ImageLayout, grid: str | None = None) -> tuple[float, float, float, float]:
    """Pixel (x, y, w, h) of a grid box, clipped to the image (via `layout.cells_box`)."""
    x0, y0, x1, y1 = layout.cells_box(*grid_box, grid=grid, clip=True)
    return float(x0), float(y0), float(max(x1 - x0, 0.0)), float(max(y1 - y0, 0.0))


def stretched_box_xywh(grid_box: tuple[int, int, int, int], image_size: Sequence[int], rows: int, cols: int) -> tuple[float, float, float, float]:
    """Pixel (x, y, w, h) of a grid box with the grid stretched over the whole original image, as
    Kang et al.'s release maps it (it ignores pad-to-square padding and centre crops): cell column c
    starts at pixel ``int(c * W / cols)``, the box's last pixel is
    ``int(min(W - 1, c1 * W / cols - 1))`` (c1 = exclusive end), same for rows; the inclusive
    pixel box becomes ``w = x1 - x0 + 1``."""
    r0, c0, r1, c1 = grid_box
    W, H = float(image_size[0]), float(image_size[1])
    sx, sy = W / cols, H / rows
    x0, y0 = int(c0 * sx), int(r0 * sy)
    x1, y1 = int(min(W - 1, c1 * sx - 1)), int(min(H - 1, r1 * sy - 1))
    return float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)


def _argmax_cell(combined: np.ndarray, valid: np.ndarray) -> tuple[int, int]:
    vals = np.where(valid, combined, -np.inf)
    if not np.isfinite(vals).any():
        vals = np.asarray(combined, dtype=np.float64)
    r, c = np.unravel_index(int(np.argmax(vals)), vals.shape)
    return int(r), int(c)


@dataclass
class Grounding:
    """The result of `predict_box`."""

    box_xywh: tuple[float, float, float, float]  # original-image pixels, clipped to the image
    grid_box: tuple[int, int, int, int] | None  # (r0, c0, r1, c1), exclusive ends
    grid_mask: np.ndarray  # bool [rows, cols]: the selected region (hull-filled if asked)
    combined: np.ndarray  # [rows, cols] combined (smoothed, summed) map
    peak_xy: tuple[float, float]  # pixel centre of the argmax cell (not clipped)
    peak_cell: tuple[int, int] = (0, 0)
    threshold: float = float("nan")

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.box_xywh
        return x, y, x + w, y + h


def predict_box(
    maps: np.ndarray,
    layout: ImageLayout,
    *,
    sigma: float = 1.0,
    threshold: Threshold = "mean",
    region: str = "largest",
    hull: bool = False,
    grid: str | None = None,
    normalize: str | None = None,
    image_cells_only: bool = False,
    geometry: str = "layout",
) -> Grounding:
    """Box from head maps, the paper's way.

    maps: `[K, rows, cols]` per-head maps (smoothed with `sigma`, normalised per `normalize`,
    summed) or an already combined `[rows, cols]` map (used as is: no smoothing; pass a
    `[1, rows, cols]` array to smooth a single head). The combined map is binarised at
    `threshold` (default: its mean over valid cells), `region` picks the 8-connected component
    ("largest" by default), `hull=True` fills its convex hull (changes `grid_mask`, never the box),
    and the tight cell box is mapped to pixels with `layout.cells_box` (clipped to the image).
    `image_cells_only=True` ignores cells that lie entirely in pad-to-square padding.
    `geometry="stretch"` maps the grid box as Kang et al.'s release does (`stretched_box_xywh`:
    the grid stretched over the original image); "layout" (default) places it through the layout.
    """
    if geometry not in ("layout", "stretch"):
        raise ValueError(f"geometry must be 'layout' or 'stretch', not {geometry!r}")
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 3:
        combined = combine_head_maps(maps, sigma=sigma, normalize=normalize)
    elif maps.ndim == 2:
        combined = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    else:
        raise ValueError(f"expected [K, rows, cols] or [rows, cols] maps, got shape {maps.shape}")
    combined = _check_map(combined, layout, grid)
    valid = cell_validity(layout, grid, image_cells_only)
    mask, t = binarize(combined, threshold, valid)
    sel = select_region(mask, combined, region)
    if hull:
        sel = fill_convex_hull(sel) & valid
    gb = tight_grid_box(sel)
    if gb is None:
        box = (0.0, 0.0, 0.0, 0.0)
    elif geometry == "stretch":
        g = layout.grid(grid)
        box = stretched_box_xywh(gb, layout.image_size, g.rows, g.cols)
    else:
        box = grid_box_to_xywh(gb, layout, grid)
    pr, pc = _argmax_cell(combined, valid)
    px, py = layout.cell_center(pr, pc, grid=grid)
    return Grounding(
        box_xywh=box,
        grid_box=gb,
        grid_mask=sel,
        combined=combined,
        peak_xy=(float(px), float(py)),
        peak_cell=(pr, pc),
        threshold=t,
    )


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def iou(box_a_xywh: Sequence[float], box_b_xywh: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes; 0 when the union is empty. A non-finite
    value is a ValueError (never an answer that depends on the argument order)."""
    ax, ay, aw, ah = (float(v) for v in box_a_xywh)
    bx, by, bw, bh = (float(v) for v in box_b_xywh)
    if not np.isfinite([ax, ay, aw, ah, bx, by, bw, bh]).all():
        raise ValueError(f"iou of boxes with non-finite values: {list(box_a_xywh)} and {list(box_b_xywh)}")
    aw, ah, bw, bh = max(aw, 0.0), max(ah, 0.0), max(bw, 0.0), max(bh, 0.0)
    # (x + w) - x is not always w in floating point: the overlap is clipped to either side, and the
    # ratio to 1 (two equal boxes at x=127 gave 1.0000000000000215)
    iw = min(max(0.0, min(ax + aw, bx + bw) - max(ax, bx)), aw, bw)
    ih = min(max(0.0, min(ay + ah, by + bh) - max(ay, by)), ah, bh)
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return min(1.0, float(inter / union)) if union > 0 else 0.0


def point_in_box(xy: Sequence[float], box_xywh: Sequence[float]) -> bool:
    x, y = float(xy[0]), float(xy[1])
    bx, by, bw, bh = (float(v) for v in box_xywh)
    return bx <= x <= bx + bw and by <= y <= by + bh


def summarize(ious: Iterable[float], hits: Iterable[bool] | None = None, iou_threshold: float = 0.5) -> dict[str, float]:
    """{"acc@0.5": share of IoU >= 0.5, "miou": mean IoU, "pointing": share of hits, "n"}.
    Empty input gives NaNs and n = 0; `hits=None` gives pointing NaN."""
    ious = np.asarray(list(ious), dtype=np.float64)
    hit_arr = None if hits is None else np.asarray(list(hits), dtype=bool)
    if hit_arr is not None and hit_arr.size and ious.size and hit_arr.size != ious.size:
        raise ValueError(f"{ious.size} IoUs but {hit_arr.size} pointing hits")
    key = f"acc@{iou_threshold:g}"
    return {
        key: float((ious >= iou_threshold).mean()) if ious.size else float("nan"),
        "miou": float(ious.mean()) if ious.size else float("nan"),
        "pointing": float(hit_arr.mean()) if hit_arr is not None and hit_arr.size else float("nan"),
        "n": int(ious.size if ious.size else (hit_arr.size if hit_arr is not None else 0)),
    }


# The numbers REC papers report (issue 31): lmms-eval's refcoco*_bbox_rec_* tasks
# (lmms_eval/tasks/refcoco/utils_rec.py) and the IoU thresholds of evaluate_boxes.py (the
# liu-hanyu-97/LocalizationHeads fork of Kang et al.'s code).
LMMS_EVAL_ACC_AT = (0.1, 0.3, 0.5, 0.7, 0.9)
IOU_THRESHOLDS = (0.25, 0.5, 0.75)


def normalized_xyxy(box_xywh: Sequence[float], image_size: Sequence[int]) -> tuple[float, float, float, float]:
    """A pixel (x, y, w, h) box as lmms-eval's normalized [x1, y1, x2, y2]: ``[x/W, y/H, (x+w)/W,
    (y+h)/H]`` (its process_docs), no clipping, no reordering."""
    x, y, w, h = (float(v) for v in box_xywh)
    W, H = float(image_size[0]), float(image_size[1])
    if not (W > 0 and H > 0):
        raise ValueError(f"image size {list(image_size)} must be positive to normalize the box {list(box_xywh)}")
    return x / W, y / H, (x + w) / W, (y + h) / H


def _lmms_iou(gt: Sequence[float], pred: Sequence[float]) -> float:
    """lmms-eval's compute_iou on xyxy boxes: continuous, areas not clamped; an empty union (where
    lmms-eval raises ZeroDivisionError) gives 0."""
    iw = max(0.0, min(gt[2], pred[2]) - max(gt[0], pred[0]))
    ih = max(0.0, min(gt[3], pred[3]) - max(gt[1], pred[1]))
    inter = iw * ih
    union = (gt[2] - gt[0]) * (gt[3] - gt[1]) + (pred[2] - pred[0]) * (pred[3] - pred[1]) - inter
    return inter / union if union > 0 else 0.0


def benchmark_metrics(pred_boxes_xywh: Sequence[Sequence[float] | None], gt_boxes_xywh: Sequence[Sequence[float]],
                      image_sizes: Sequence[Sequence[int]]) -> dict[str, dict[str, float]]:
    """The REC numbers other tools report, from per-sample pixel boxes: means over all samples.

    Args:
        pred_boxes_xywh: predicted (x, y, w, h) per sample, original-image pixels; None for a
            sample without a prediction: it counts as lmms-eval counts a parse failure,
            [0, 0, 0, 0] (IoU 0; its centre (0, 0) hits only a box starting at (0, 0)).
        gt_boxes_xywh: ground-truth (x, y, w, h) per sample, same pixels.
        image_sizes: (W, H) per sample, to normalize both boxes as lmms-eval does.
    Returns: {"lmms_eval": {"IoU": mean IoU, "ACC@0.1" .. "ACC@0.9": share of IoU >= t,
        "Center_ACC": share of predicted-box centres inside the gt box, bounds inclusive},
        "iou_thresholds": {"0.25", "0.5", "0.75": share of pixel IoU (`iou`) >= t}}; NaN when empty.
        evaluate_boxes.py skips samples without a prediction; here they count as misses.
    """
    n = len(gt_boxes_xywh)
    if len(pred_boxes_xywh) != n or len(image_sizes) != n:
        raise ValueError(f"{len(pred_boxes_xywh)} predicted boxes, {n} ground-truth boxes, {len(image_sizes)} image sizes")
    ious, centers, pixel = [], [], []
    for pred, gt, size in zip(pred_boxes_xywh, gt_boxes_xywh, image_sizes):
        pred = (0.0, 0.0, 0.0, 0.0) if pred is None else pred
        g, p = normalized_xyxy(gt, size), normalized_xyxy(pred, size)
        ious.append(_lmms_iou(g, p))
        cx, cy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
        centers.append(g[0] <= cx <= g[2] and g[1] <= cy <= g[3])
        pixel.append(iou(pred, gt))

    def share(values: list) -> float:
        return float(np.mean(values)) if n else float("nan")

    lmms = {"IoU": share(ious), **{f"ACC@{t:g}": share([v >= t for v in ious]) for t in LMMS_EVAL_ACC_AT},
            "Center_ACC": share(centers)}
    return {"lmms_eval": lmms, "iou_thresholds": {f"{t:g}": share([v >= t for v in pixel]) for t in IOU_THRESHOLDS}}


def benchmark_table(rows: Sequence[tuple[str, Mapping]]) -> str:
    """The console table of `benchmark_metrics` (header + one line per (label, summary) row that
    holds them); "" when none does."""
    rows = [(label, m) for label, m in rows if "lmms_eval" in m]
    if not rows:
        return ""
    lm_keys, th_keys = list(rows[0][1]["lmms_eval"]), list(rows[0][1]["iou_thresholds"])
    width = max(len("lmms-eval REC"), *(len(label) for label, _ in rows))
    lines = [f"{'lmms-eval REC':{width}s} " + " ".join(f"{k:>10s}" for k in lm_keys + [f"IoU>={k}" for k in th_keys])]
    for label, m in rows:
        values = [m["lmms_eval"][k] for k in lm_keys] + [m["iou_thresholds"][k] for k in th_keys]
        lines.append(f"{label:{width}s} " + " ".join(f"{v:10.3f}" for v in values))
    return "\n".join(lines)


class GroundingMetrics:
    """Accumulates per-sample IoU and pointing results; `summary()` -> `summarize(...)`, plus
    `benchmark_metrics(...)` when every sample was added with its image size."""

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = iou_threshold
        self.ious: list[float] = []
        self.hits: list[bool] = []
        self.boxes: list[tuple[tuple[float, ...], tuple[float, ...], tuple[int, int] | None]] = []  # (pred, gt, (W, H))

    def add(self, pred_box_xywh: Sequence[float], gt_box_xywh: Sequence[float], hit: bool | None = None,
            image_size: Sequence[int] | None = None) -> float:
        """Record one sample (pred vs gt box, the pointing hit if known, the image's (W, H) if
        known); returns its IoU."""
        v = iou(pred_box_xywh, gt_box_xywh)
        self.ious.append(v)
        if hit is not None:
            self.hits.append(bool(hit))
        size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.boxes.append((tuple(float(x) for x in pred_box_xywh), tuple(float(x) for x in gt_box_xywh), size))
        return v

    def add_grounding(self, g: Grounding, gt_box_xywh: Sequence[float], image_size: Sequence[int] | None = None) -> float:
        """Record a `Grounding` (its box, and its peak for pointing)."""
        return self.add(g.box_xywh, gt_box_xywh, point_in_box(g.peak_xy, gt_box_xywh), image_size)

    def subset(self, idx: Sequence[int]) -> "GroundingMetrics":
        """The samples at `idx` (e.g. one row group), as a new accumulator."""
        out = GroundingMetrics(self.iou_threshold)
        out.ious = [self.ious[i] for i in idx]
        out.hits = [self.hits[i] for i in idx] if self.hits else []
        out.boxes = [self.boxes[i] for i in idx]
        return out

    def __len__(self) -> int:
        return len(self.ious)

    def summary(self) -> dict:
        hits = self.hits if len(self.hits) == len(self.ious) and self.hits else None
        out: dict = summarize(self.ious, hits, self.iou_threshold)
        if self.boxes and all(size is not None for _, _, size in self.boxes):
            pred, gt, sizes = zip(*self.boxes)
            out.update(benchmark_metrics(pred, gt, sizes))
        return out


# ---------------------------------------------------------------------------------------------
# random-heads baseline
# ---------------------------------------------------------------------------------------------
def random_head_sets(
    n_layers: int,
    n_heads: int,
    k: int,
    draws: int,
    seed: int,
    exclude_layers: Iterable[int] = (),
    exclude_heads: Iterable[tuple[int, int]] = (),
) -> list[list[tuple[int, int]]]:
    """`draws` sets of `k` distinct (layer, head) pairs, uniformly without replacement from heads
    outside `exclude_layers` / `exclude_heads` (e.g. the selected localization heads). Seeded
    (numpy default_rng): the same arguments give the same sets. Each set is sorted."""
    ex_l = {int(l) for l in exclude_layers}
    ex_h = {(int(l), int(h)) for l, h in exclude_heads}
    pool = [(l, h) for l in range(n_layers) if l not in ex_l for h in range(n_heads) if (l, h) not in ex_h]
    if k < 0 or draws < 0:
        raise ValueError("k and draws must be >= 0")
    if k > len(pool):
        raise ValueError(f"cannot draw {k} heads from a pool of {len(pool)}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        idx = rng.choice(len(pool), size=k, replace=False)
        out.append(sorted(pool[int(i)] for i in idx))
    return out
