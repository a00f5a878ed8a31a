"""Referring segmentation from the heads' combined map: region -> mask, SAM prompts, mask metrics.

One region decides everything: `lab.grounding.predict_box` binarises the combined map and picks
the region (`Grounding.grid_mask`, hull-filled with `grounding.hull=true`); the REC box is that
region's cell box and the map-only mask is the same cells painted onto the original image through
the record's `ImageLayout` (`region_mask`), so the mask's tight box is the REC box (up to the
pixel grid) under every layout: pad-to-square (cells in the padding fall off the image), centre
crop (nothing outside the crop), anyres (the chosen grid's cells).

With `grounding.refine=sam`, `sam_prompts` turns the same region into SAM prompts in original
pixels (the region's box, and/or the centres of its highest cells as positive points); the model
layer's segmenter (handed in by the entry point) returns a mask at the original size.

Metrics (`MaskMetrics`): mIoU = mean of per-sample IoU; cIoU = sum of intersections / sum of
unions over the samples (as RES papers report it); P@0.5 / 0.7 / 0.9 = share of samples with IoU
at or above the cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lab.analysis.grounding import Grounding, coverage_mask, grid_mask_to_image
from utils.contracts.layout import ImageLayout

PRECISION_AT = (0.5, 0.7, 0.9)


def region_mask(g: Grounding, layout: ImageLayout, grid: str | None = None, edges: str = "smooth",
                hull: bool = False) -> np.ndarray:
    """bool `[H, W]`: the grounding's chosen region on the original image.

    Args:
        edges: "cells" paints the region's cells (exact cell membership: the mask's tight box is
            the REC box); "smooth" (default) cuts the combined map, resampled bilinearly onto the
            image (`layout.to_image`), at the region's own threshold inside the region's cells,
            so the region's border
            cells are trimmed where the map falls below the threshold between cell centres: the
            mask never leaves the region and its box lies inside the REC box. (Letting it grow a
            cell beyond the region was tried: better on sharp planted maps, worse on the toy
            model's maps at the paper's mean threshold, mIoU 0.316 vs 0.439; docs/toy.md.)
        hull: (`grounding.hull`, the region was hull-filled) also fill the smooth mask's convex hull.
    """
    cells = grid_mask_to_image(g.grid_mask, layout, grid)
    if edges == "cells" or not cells.any():
        return cells
    if edges != "smooth":
        raise ValueError(f"edges must be 'smooth' or 'cells', not {edges!r}")
    fine = (layout.to_image(g.combined, grid=grid, order=1) > g.threshold) & cells & coverage_mask(layout, grid)
    if not fine.any():
        return cells
    return _fill_hull(fine) & coverage_mask(layout, grid) if hull else fine


def _fill_hull(mask: np.ndarray) -> np.ndarray:
    """The pixels whose centres lie in the convex hull of a bool mask's pixel squares."""
    from matplotlib.path import Path as MplPath
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask)
    pts = np.unique(np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]), axis=0)
    try:
        hull = MplPath(pts[ConvexHull(pts).vertices].astype(np.float64))
    except QhullError:
        return mask
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    Y, X = np.mgrid[y0:y1, x0:x1]
    inside = hull.contains_points(np.stack([X.ravel() + 0.5, Y.ravel() + 0.5], 1), radius=1e-9).reshape(Y.shape)
    out = mask.copy()
    out[y0:y1, x0:x1] |= inside
    return out


def top_cells(g: Grounding, n: int) -> list[tuple[int, int]]:
    """The `n` cells of the chosen region with the highest combined-map values, highest first
    (ties: row-major order); the first is the region's peak. Empty region: the map's peak cell."""
    rr, cc = np.nonzero(g.grid_mask)
    if rr.size == 0:
        return [tuple(g.peak_cell)]
    vals = g.combined[rr, cc]
    order = np.lexsort((np.arange(rr.size), -vals))[: max(int(n), 1)]
    return [(int(rr[i]), int(cc[i])) for i in order]


def sam_prompts(g: Grounding, layout: ImageLayout, prompt: str, num_points: int, grid: str | None = None) -> dict:
    """SAM prompts in original pixels from the grounding's region.

    Args:
        prompt: "box" (the REC box as x0, y0, x1, y1), "points" (the centres of the region's
            `num_points` highest cells, each clipped into the image, all positive) or "box+points".
    Returns: {"box": [x0, y0, x1, y1] or None, "points": [[x, y], ...] or None}.
    """
    if prompt not in ("box", "points", "box+points"):
        raise ValueError(f"prompt must be box, points or box+points, not {prompt!r}")
    w, h = layout.image_size
    box = None
    if "box" in prompt:
        x, y, bw, bh = g.box_xywh
        box = [float(x), float(y), float(x + bw), float(y + bh)]
    points = None
    if "points" in prompt:
        points = []
        for r, c in top_cells(g, num_points):
            px, py = layout.cell_center(r, c, grid=grid)
            points.append([float(min(max(px, 0.0), w - 1.0)), float(min(max(py, 0.0), h - 1.0))])
    return {"box": box, "points": points}


def mask_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two bool `[H, W]` masks of one size."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"predicted mask {pred.shape} and ground truth {gt.shape} differ in size")
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two bool masks; 0 when both are empty."""
    inter, union = mask_counts(pred, gt)
    return inter / union if union else 0.0


@dataclass
class MaskMetrics:
    """Per-sample intersections and unions; `summary()` gives mIoU, cIoU and P@0.5/0.7/0.9."""

    inters: list[int] = field(default_factory=list)
    unions: list[int] = field(default_factory=list)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """Record one sample; returns its IoU."""
        inter, union = mask_counts(pred, gt)
        self.inters.append(inter)
        self.unions.append(union)
        return inter / union if union else 0.0

    def summary(self) -> dict[str, float]:
        i = np.asarray(self.inters, dtype=np.float64)
        u = np.asarray(self.unions, dtype=np.float64)
        ious = np.divide(i, u, out=np.zeros_like(i), where=u > 0)
        nan = float("nan")
        out = {"miou": float(ious.mean()) if ious.size else nan,
               "ciou": float(i.sum() / u.sum()) if u.sum() > 0 else nan}
        for t in PRECISION_AT:
            out[f"p@{t:g}"] = float((ious >= t).mean()) if ious.size else nan
        out["n"] = int(ious.size)
        return out


def spread(summaries: list[dict]) -> dict:
    """Mean and std over random-head draws of each mask metric."""
    if not summaries:
        return {"n": 0, "draws": 0}
    keys = [k for k in summaries[0] if k != "n"]
    out = {k: float(np.mean([s[k] for s in summaries])) for k in keys}
    out.update({f"{k}_std": float(np.std([s[k] for s in summaries])) for k in keys})
    out["n"] = summaries[0]["n"]
    out["draws"] = len(summaries)
    return out


def write_mask_png(path: Path, mask: np.ndarray) -> Path:
    """A bool `[H, W]` mask as an 8-bit grey PNG (0 / 255) at the original size; atomic
    (`utils.io.atomic_write_bytes`: a failed write, e.g. a full disk, leaves no temp file behind)."""
    import io

    from PIL import Image

    from utils.io import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def read_mask_png(path: Path) -> np.ndarray:
    """bool `[H, W]` of a mask PNG written by `write_mask_png`."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127
