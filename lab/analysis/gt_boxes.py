"""Ground-truth boxes against their image, before any is scored (stage=evaluate).

Finite values are guaranteed at validation (utils/row_values.py, `file:line`). Here, with the
image size the record was made from:
* a box that does not intersect the image (no area in common) is an error of that row: it is
  written to the manifest as failed, and the other rows are scored;
* a box partly outside is clipped to the image and counted (`clipped` in metrics.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from utils.data import file_stem
from utils.io import append_jsonl


def clip_to_image(bbox: Sequence[float], image_size: Sequence[int]) -> tuple[list[float] | None, bool]:
    """(the box [x, y, w, h] clipped to the W x H image, whether clipping changed it); None when
    the box and the image share no area."""
    x, y, w, h = (float(v) for v in bbox)
    W, H = float(image_size[0]), float(image_size[1])
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, W), min(y + h, H)
    if not (x1 > x0 and y1 > y0):
        return None, True
    out = [x0, y0, x1 - x0, y1 - y0]
    return out, out != [x, y, w, h]


@dataclass
class BoxScreen:
    """What screening found: rows kept (row, record) with their boxes clipped, failures, clipped ids."""

    kept: list[tuple[Any, Any]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    clipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """metrics.json's keys for the screened boxes: only when a box was refused or clipped (a run
        with good boxes writes the metrics.json it always wrote)."""
        out: dict = {}
        if self.failed:
            out["boxes_outside_image"] = [{"id": i, "reason": r} for i, r in self.failed]
        if self.clipped:
            out["boxes_clipped"] = {"count": len(self.clipped), "ids": self.clipped[:100]}
        return out


def fail_row(manifest: Path | None, row: Any, reason: str) -> None:
    """A row that cannot be scored, written to the manifest (status failed, stage evaluate) with its reason."""
    if manifest is not None:
        append_jsonl(manifest, {"id": row.id, "line": row.line, "file": file_stem(row.id), "status": "failed",
                                "stage": "evaluate", "reason": reason, "image_path": row.image_path})


def screen_gt_boxes(pairs: list[tuple[Any, Any]], manifest: Path | None) -> BoxScreen:
    """Check each (row, record) pair's `row.bbox` against `record.meta.image_size`: clip it in place
    (row.bbox), or fail the row in `manifest` (status failed, stage evaluate) when it misses the image.

    Args:
        pairs: (utils.data.Row with a bbox, lab.records.AttentionRecord) per collected row.
        manifest: the run's manifest file (None: failures are only returned).
    """
    out = BoxScreen()
    for row, rec in pairs:
        if row.bbox is None:  # grounding.output=mask: the target box is the mask's (checked with the mask)
            out.kept.append((row, rec))
            continue
        W, H = rec.meta.image_size
        box, changed = clip_to_image(row.bbox, (W, H))
        if box is None:
            reason = (f"bbox {row.bbox} (x, y, w, h) does not intersect the {W}x{H} image; "
                      f"it cannot be scored (line {row.line} of the data file)")
            out.failed.append((row.id, reason))
            fail_row(manifest, row, reason)
            continue
        if changed:
            out.clipped.append(row.id)
            row.bbox = box
        out.kept.append((row, rec))
    return out
