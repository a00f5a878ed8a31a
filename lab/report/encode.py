"""Compact encodings for the explorer page: 8-bit maps with a scale per map, float16 tables and
image thumbnails, all base64 so they sit inside one JSON blob (no file beside the page, no request)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def quantize_maps(maps: np.ndarray) -> dict[str, Any]:
    """`[..., V]` non-negative maps -> {"q": base64 uint8 `[..., V]`, "scale": base64 float32 `[...]`,
    "shape": [...]}: value ~= q / 255 * scale, scale = each map's max (error <= scale / 510, plus the
    float32 rounding of the scale).
    Non-finite values become 0; negative values are clipped to 0 (attention weights are >= 0)."""
    a = np.nan_to_num(np.asarray(maps, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    a = np.clip(a, 0.0, None)
    scale = a.max(axis=-1) if a.size else np.zeros(a.shape[:-1])  # (...,)
    safe = np.where(scale > 0, scale, 1.0)[..., None]
    q = np.rint(a / safe * 255.0).astype(np.uint8)
    return {"q": b64(q.tobytes()), "scale": b64(scale.astype("<f4").tobytes()), "shape": list(a.shape)}


def dequantize_maps(enc: dict[str, Any]) -> np.ndarray:
    """Inverse of `quantize_maps` (what the page computes), for tests and notebooks."""
    shape = tuple(enc["shape"])
    q = np.frombuffer(base64.b64decode(enc["q"]), dtype=np.uint8).reshape(shape)
    scale = np.frombuffer(base64.b64decode(enc["scale"]), dtype="<f4").reshape(shape[:-1])
    return q.astype(np.float64) / 255.0 * scale[..., None]


def float16_table(values: np.ndarray) -> dict[str, Any]:
    """Any float array -> {"f16": base64 float16 (NaN/inf kept), "shape": [...]} (3 significant digits)."""
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore"):
        h = a.astype("<f2")
    return {"f16": b64(h.tobytes()), "shape": list(a.shape)}


def float32_table(values: np.ndarray) -> dict[str, Any]:
    """Like `float16_table` at float32 (counts up to 2**24 stay exact): for the run-level tables."""
    a = np.asarray(values, dtype=np.float64)
    return {"f32": b64(a.astype("<f4").tobytes()), "shape": list(a.shape)}


def thumbnail_data_url(path: str | None, size: tuple[int, int], max_side: int) -> tuple[str, bool]:
    """(data URL of the image at `path`, found?). Images no larger than `max_side` that are PNG or
    JPEG files are embedded as they are; larger ones are downscaled (JPEG, quality 85; PNG when the
    image has transparency). A missing or unreadable file gives a grey PNG of the image's aspect."""
    from PIL import Image

    W, H = (max(1, int(v)) for v in size)
    p = Path(path) if path else None
    if p is not None and p.is_file():
        try:
            raw = p.read_bytes()
            with Image.open(io.BytesIO(raw)) as im:
                fmt = (im.format or "").upper()
                if max(im.size) <= max_side and fmt in ("PNG", "JPEG"):
                    return f"data:image/{fmt.lower()};base64,{b64(raw)}", True
                s = min(1.0, max_side / max(im.size))
                small = im.convert("RGBA" if "A" in im.getbands() else "RGB")
                small = small.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.BILINEAR)
            return _encode(small), True
        except (OSError, ValueError, SyntaxError):  # PIL's errors for corrupt files
            pass
    s = min(1.0, 64 / max(W, H))
    grey = Image.new("RGB", (max(1, round(W * s)), max(1, round(H * s))), (128, 128, 128))
    return _encode(grey), False


def _encode(im: Any) -> str:
    buf = io.BytesIO()
    if im.mode == "RGBA":
        im.save(buf, format="PNG", optimize=True)
        return f"data:image/png;base64,{b64(buf.getvalue())}"
    im.save(buf, format="JPEG", quality=85)
    return f"data:image/jpeg;base64,{b64(buf.getvalue())}"
