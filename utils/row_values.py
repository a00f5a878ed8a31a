"""Row checks beyond the shape of a row (utils/data.py `_check_row`): values that parse but cannot be
right. Each returns a problem message or None; the reader adds `file:line`."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def bbox_problem(bbox: Sequence[float] | None) -> str | None:
    """A ground-truth box [x, y, w, h] must be finite numbers, and so must its far corner (x + w,
    y + h): NaN, Infinity, or values whose sum overflows are refused (IoU and pointing would be
    silently wrong). Whether it meets the image is checked when the image size is known
    (lab/analysis/gt_boxes.py)."""
    if bbox is None:
        return None
    vals = [float(v) for v in bbox]
    bad = [name for name, v in zip("xywh", vals) if not math.isfinite(v)]
    if bad:
        return f'"bbox" {list(bbox)!r} has non-finite {", ".join(bad)}; give [x, y, w, h] as finite pixel numbers'
    if not (math.isfinite(vals[0] + vals[2]) and math.isfinite(vals[1] + vals[3])):
        return f'"bbox" {list(bbox)!r}: x + w or y + h is not a finite number; give [x, y, w, h] in pixels'
    return None


def image_path_problem(value: Any) -> str | None:
    """`image_path` must be a local path: URLs (http://, https://, file://, s3://, ...) are not read."""
    if isinstance(value, str) and _URL.match(value.strip()):
        return f'"image_path" {value[:80]!r} is a URL; URLs are not read; give a local path'
    return None


def row_value_problem(obj: dict, bbox: Sequence[float] | None) -> str | None:
    """Every value check of one row that `_check_row` has accepted; the first problem or None."""
    return image_path_problem(obj.get("image_path")) or bbox_problem(bbox)
