"""ImageLayout builders per model family: from processor settings + token ids to grid geometry.

Each builder answers: which prompt positions are this image's tokens, which 2D grid(s) they
form, and which rectangle of the *original* image each grid spans after the processor's
resize / centre crop / pad-to-square. See `utils/layout.py` for the geometry model.
"""

from __future__ import annotations

from typing import Sequence

from utils.errors import UserError
from utils.layout import ImageLayout, square_grid_layout


def _size_of(d, key):
    if d is None:
        return None
    if isinstance(d, dict):
        return d.get(key)
    return getattr(d, key, None)


def crop_box(image_size: tuple[int, int], size, crop_size) -> tuple[float, float, float, float]:
    """Rectangle of the original image kept by 'resize shortest edge, then centre crop'.

    Follows transformers' arithmetic: the long edge becomes int(S * long / short), the crop offset
    is (resized - crop) // 2. A processor that resizes straight to (height, width) keeps everything.
    """
    w, h = image_size
    shortest = _size_of(size, "shortest_edge")
    if shortest:
        if w <= h:
            nw, nh = shortest, int(shortest * h / w)
        else:
            nh, nw = shortest, int(shortest * w / h)
    else:
        nh, nw = _size_of(size, "height"), _size_of(size, "width")
        if not nh or not nw:
            raise UserError(f"unsupported image processor size {size!r}: expected shortest_edge or height/width")
    ch = _size_of(crop_size, "height") or nh
    cw = _size_of(crop_size, "width") or nw
    top, left = (nh - ch) // 2, (nw - cw) // 2
    sx, sy = w / nw, h / nh
    return left * sx, top * sy, (left + cw) * sx, (top + ch) * sy


def pad_box(image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Rectangle (in original pixels) of the centred square that pad-to-square builds around the image."""
    w, h = image_size
    m = max(w, h)
    left = (m - w) // 2 if h > w else 0
    top = (m - h) // 2 if w > h else 0
    return -float(left), -float(top), float(m - left), float(m - top)


def llava15_layout(
    image_size: tuple[int, int],
    token_positions: Sequence[int],
    grid_side: int,
    aspect: str,
    size=None,
    crop_size=None,
) -> ImageLayout:
    """LLaVA-1.5: one G x G row-major patch grid; aspect 'pad' (original LLaVA) or 'crop' (llava-hf)."""
    if len(token_positions) != grid_side * grid_side:
        raise UserError(
            f"the prompt has {len(token_positions)} image tokens but the vision tower makes a {grid_side}x{grid_side} grid; "
            "is the processor's patch_size / vision_feature_select_strategy consistent with the model?"
        )
    if aspect == "pad":
        box = pad_box(image_size)
    elif aspect == "crop":
        box = crop_box(image_size, size, crop_size)
    else:
        raise UserError(f"image_aspect={aspect!r} is not valid for LLaVA-1.5: use crop, pad or auto")
    return square_grid_layout(image_size, token_positions, grid_side, box, aspect)
