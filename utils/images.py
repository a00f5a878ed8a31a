"""The one image loader: every stage, the model's `prepare`, the figures and the chat open images here.

What a user sees in an image viewer is what the model gets:

* only regular files are opened (`utils.files.open_regular`: FIFOs, devices, folders are refused,
  symlinks are followed and their target checked);
* a pixel limit (`max_image_pixels`, default 100 megapixels; the config key of every entry point
  sets it) checked on the header's size *before* decoding: a decompression bomb is one clear error;
* EXIF orientation applied (`PIL.ImageOps.exif_transpose`, as transformers' `load_image` does),
  so sizes, boxes (JSONL `bbox`) and figures are in the upright image's pixels;
* high bit depths scaled to 8 bits by their range, not clipped:
  `I;16*` (16-bit grey): v / 257 (65535 -> 255, what viewers show);
  `I` (32-bit integer): v / 257 when all values fit 16 bits (how 16-bit files often arrive),
  else min-max to 0..255;
  `F` (float): v * 255 when all values lie in [0, 1] (the float-image convention), else min-max;
  non-finite float pixels are an error; a constant image outside those ranges becomes mid grey;
* palette, grey and CMYK images converted to RGB; transparency composited on white (as
  transformers' `convert_to_rgb` does before a processor sees the image).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from utils.errors import UserError
from utils.files import open_regular
from utils.row_values import image_path_problem

DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
_LIMIT = {"max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS}


def set_max_image_pixels(n: int) -> None:
    """The pixel limit of every later `load_image` (the entry points set it from `max_image_pixels=`)."""
    if int(n) < 1:
        raise UserError(f"max_image_pixels={n} must be >= 1")
    _LIMIT["max_image_pixels"] = int(n)


def max_image_pixels() -> int:
    return _LIMIT["max_image_pixels"]


def load_image(path: str | os.PathLike, max_pixels: int | None = None):
    """Open an image as an upright 8-bit RGB PIL image; any problem is a UserError naming the path."""
    from PIL import Image

    cap = int(max_pixels or _LIMIT["max_image_pixels"])
    url = image_path_problem(str(path))  # utils/row_values.py: URLs are not read
    if url:
        raise UserError(url.replace('"image_path" ', "image ", 1))
    fd = open_regular(path, "image")
    with os.fdopen(fd, "rb") as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None  # our own limit is checked below, on the header's size
                try:
                    im = Image.open(f)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
        except Exception as e:  # noqa: BLE001 - any decoder failure means "not a readable image"
            raise UserError(f"cannot read image {path}: {_reason(e)} (is it a valid PNG/JPEG?)") from None
        with im:
            w, h = im.size
            if w < 1 or h < 1:
                raise UserError(f"image {path} is {w}x{h} pixels: nothing to look at")
            if w * h > cap:
                raise UserError(f"image {path} is {w}x{h} = {w * h / 1e6:.1f} megapixels, above the limit "
                                f"max_image_pixels={cap}; downscale it or raise max_image_pixels=")
            try:
                orientation, announced = _orientation(im), im.size  # before load: some decoders consume the tag
                im.load()
                return to_rgb8(_upright(im, orientation, announced), str(path))
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - truncated data, bad EXIF, unsupported mode, ...
                raise UserError(f"cannot read image {path}: {_reason(e)}") from None


def _reason(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
              7: "TRANSVERSE", 8: "ROTATE_90"}


def _orientation(im) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if int(value) in _TRANSPOSE else 1
    except Exception:  # noqa: BLE001 - unreadable EXIF: no orientation to apply
        return 1


def _upright(im, orientation: int = 1, announced: tuple[int, int] | None = None):
    """The image as a viewer shows it: EXIF orientation applied (a no-op without the tag).

    `ImageOps.exif_transpose` when the tag is still there after decoding. Pillow's TIFF reader
    consumes the tag while loading and announces the upright size, but for some modes (L, I;16,
    RGBA, CMYK) hands back the stored pixels: then the pixels are turned here."""
    from PIL import Image, ImageOps

    if orientation == 1:
        return im
    if _orientation(im) == orientation:
        return ImageOps.exif_transpose(im) or im
    if announced is not None and im.size != announced:  # tag consumed, pixels not turned
        return im.transpose(getattr(Image.Transpose, _TRANSPOSE[orientation]))
    return im


def _scaled8(arr: np.ndarray, where: str) -> np.ndarray:
    """A 2-D integer or float array -> uint8 by its range (see the module docstring)."""
    a = arr.astype(np.float64)
    if arr.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise UserError(f"cannot read image {where}: float pixels include NaN or infinity")
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            return np.rint(a * 255.0).astype(np.uint8)
    elif arr.dtype == np.uint16 or (a.size and a.min() >= 0 and a.max() <= 65535):
        return np.rint(a / 257.0).astype(np.uint8)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if hi <= lo:
        return np.full(a.shape, 128, dtype=np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_rgb8(im, where: str = "image"):
    """Any PIL mode -> 8-bit RGB without clipping high bit depths or dropping alpha onto black."""
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = Image.fromarray(_scaled8(np.asarray(im), where), mode="L")
        return grey.convert("RGB")
    if mode == "RGB":
        return im.copy()
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info) \
        or (mode in ("L", "RGB", "1") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")
