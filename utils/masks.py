"""Ground-truth masks of JSONL rows: COCO RLE or polygons, in original-image pixels.

A row's optional `"mask"` is one of

* COCO RLE: `{"size": [H, W], "counts": "<compressed string>"}` (what pycocotools' `encode` writes
  and COCO's `iscrowd` annotations hold) or `{"size": [H, W], "counts": [n0, n1, ...]}` (uncompressed:
  alternating runs of 0 and 1 pixels in column-major order, starting with 0s);
* polygons: `[[x0, y0, x1, y1, ...], ...]` (COCO `segmentation` of a non-crowd object: one or
  more rings of at least 3 points each, pixel coordinates).

`check_mask` validates the structure when the JSONL is loaded (before any model): a compressed
string is decoded here, character by character, because pycocotools reads past the end of a
malformed one (an empty string decodes to garbage), and its runs must cover exactly H x W pixels.
`decode_mask` turns a checked mask into a bool `[H, W]` array for an image of a given size;
`encode_mask` is the inverse (compressed RLE), used by the converters and the toy world.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_SIDE = 1 << 16  # an RLE size beyond this is a typo, not an image
MAX_COUNTS_CHARS = 1 << 24
MAX_POLYGON_VALUES = 1 << 20


def _rle_counts_from_string(s: str) -> list[int] | None:
    """The runs of a COCO compressed RLE string (pycocotools' rleFrString), or None if malformed."""
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None  # the string ends inside a number
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _size_error(size: Any) -> str | None:
    ok = (isinstance(size, list) and len(size) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in size))
    return None if ok else f'"mask" RLE "size" must be [height, width] of positive integers <= {MAX_SIDE}, got {str(size)[:60]}'


def rle_counts(mask: dict) -> list[int]:
    """The run lengths of a checked RLE dict (compressed or not)."""
    c = mask["counts"]
    return list(c) if isinstance(c, list) else (_rle_counts_from_string(c) or [])


def _check_rle(mask: dict) -> str | None:
    if set(mask) != {"size", "counts"}:
        return f'"mask" as RLE needs exactly the keys "size" and "counts", got {sorted(mask)[:6]}'
    err = _size_error(mask["size"])
    if err:
        return err
    h, w = mask["size"]
    c = mask["counts"]
    if isinstance(c, str):
        if len(c) > MAX_COUNTS_CHARS:
            return f'"mask" RLE "counts" is {len(c)} characters long; at most {MAX_COUNTS_CHARS}'
        counts = _rle_counts_from_string(c)
        if counts is None:
            return '"mask" RLE "counts" is not a COCO compressed RLE string (characters 0x30-0x6f, complete numbers)'
    elif isinstance(c, list):
        if len(c) > h * w + 1 or not all(isinstance(v, int) and not isinstance(v, bool) for v in c):
            return f'"mask" RLE "counts" must be at most {h * w + 1} integers (runs), got {str(c)[:60]}'
        counts = c
    else:
        return f'"mask" RLE "counts" must be a string or a list of integers, got {type(c).__name__}'
    if any(v < 0 for v in counts):
        return '"mask" RLE "counts" has a negative run'
    total = sum(counts)
    if total != h * w:
        return f'"mask" RLE runs cover {total} pixels but "size" {h}x{w} has {h * w}'
    return None


def _check_polygons(mask: list) -> str | None:
    if not mask:
        return '"mask" as polygons needs at least one [x0, y0, x1, y1, x2, y2, ...] ring'
    total = 0
    for i, ring in enumerate(mask):
        if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
            return f'"mask" polygon {i} must be a flat list [x0, y0, x1, y1, ...] of at least 3 points, got {str(ring)[:60]}'
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in ring):
            return f'"mask" polygon {i} holds a value that is not a finite number: {str(ring)[:60]}'
        total += len(ring)
        if total > MAX_POLYGON_VALUES:
            return f'"mask" polygons hold more than {MAX_POLYGON_VALUES} numbers'
    return None


def check_mask(mask: Any) -> str | None:
    """None if `mask` is a well-formed RLE dict or polygon list, else a one-line reason."""
    if isinstance(mask, dict):
        return _check_rle(mask)
    if isinstance(mask, list):
        return _check_polygons(mask)
    return f'"mask" must be COCO RLE {{"size": [H, W], "counts": ...}} or polygons [[x0, y0, ...], ...], got {type(mask).__name__}'


def decode_mask(mask: Any, image_size: tuple[int, int]) -> np.ndarray:
    """bool `[H, W]` of a checked mask for an image of `image_size = (W, H)`.

    Raises ValueError (with both sizes) when an RLE's size is not the image's."""
    from pycocotools import mask as coco

    w, h = int(image_size[0]), int(image_size[1])
    if isinstance(mask, dict):
        mh, mw = mask["size"]
        if (mh, mw) != (h, w):
            raise ValueError(f"the mask's RLE size is {mw}x{mh} (W x H) but the image is {w}x{h}")
        runs = np.asarray(rle_counts(mask), dtype=np.int64)
        values = np.zeros(len(runs), dtype=bool)
        values[1::2] = True  # runs alternate 0, 1, 0, ... starting with 0s
        flat = np.repeat(values, runs)  # column-major pixels
        return flat.reshape(w, h).T.copy()  # (W, H) Fortran order -> [H, W]
    rles = coco.frPyObjects([[float(v) for v in ring] for ring in mask], h, w)
    return coco.decode(coco.merge(rles)).astype(bool)


def encode_mask(mask: np.ndarray) -> dict:
    """COCO compressed RLE `{"size": [H, W], "counts": str}` of a bool `[H, W]` array."""
    from pycocotools import mask as coco

    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    if m.ndim != 2:
        raise ValueError(f"encode_mask takes a [H, W] array, got shape {m.shape}")
    rle = coco.encode(m)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_box_xywh(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight pixel box (x, y, w, h) of a bool `[H, W]` mask; all zeros when the mask is empty."""
    m = np.asarray(mask, dtype=bool)
    rows, cols = np.any(m, axis=1), np.any(m, axis=0)
    if not rows.any():
        return 0.0, 0.0, 0.0, 0.0
    y0, y1 = np.nonzero(rows)[0][[0, -1]]
    x0, x1 = np.nonzero(cols)[0][[0, -1]]
    return float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)
