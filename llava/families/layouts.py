"""ImageLayout builders per model family: from processor settings + token ids to grid geometry.

Each builder answers: which prompt positions are this image's tokens, which 2D grid(s) they
form, and which rectangle of the *original* image each grid spans after the processor's
resize / centre crop / pad-to-square. See `utils/contracts/layout.py` for the geometry model.
"""

from __future__ import annotations

from typing import Sequence

from utils.errors import UserError
from utils.contracts.layout import ImageLayout, square_grid_layout


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


# ---- anyres (LLaVA-NeXT, LLaVA-OneVision) ------------------------------------------------

def select_best_resolution(original_size: tuple[int, int], possible_resolutions) -> tuple[int, int]:
    """transformers' choice of the anyres canvas: (height, width) from (height, width) + pinpoints."""
    from transformers.image_processing_utils import select_best_resolution as _select

    return tuple(int(x) for x in _select(tuple(original_size), [list(p) for p in possible_resolutions]))  # type: ignore[return-value]


def _patch_output_size(h: int, w: int, target_h: int, target_w: int) -> tuple[int, int]:
    """transformers' `get_patch_output_size`: aspect-preserving resize into the canvas."""
    import math

    scale_w, scale_h = target_w / w, target_h / h
    if scale_w < scale_h:
        return min(math.ceil(h * scale_w), target_h), target_w
    return target_h, min(math.ceil(w * scale_h), target_w)


def anyres_geometry(image_size: tuple[int, int], side: int, crop_px: int, pinpoints, max_num_patches: int | None = None) -> dict:
    """Where the high-resolution grid of an anyres model lies in original pixels.

    Follows transformers step by step: canvas = select_best_resolution(H, W); the image is resized
    into it keeping its aspect (`get_patch_output_size`) and centred with padding; the canvas is cut
    into crops of `crop_px` (each `side` x `side` features); features are re-assembled and unpadded
    (`unpad_image`); OneVision then bilinearly shrinks grids above `max_num_patches` crops
    (anyres_max_N). Returns rows, cols (the final grid) and box (its rectangle in original pixels).
    """
    w, h = image_size
    bh, bw = select_best_resolution((h, w), pinpoints)
    nh, nw = _patch_output_size(h, w, bh, bw)
    paste_y, paste_x = (bh - nh) // 2, (bw - nw) // 2
    cur_h, cur_w = (bh // crop_px) * side, (bw // crop_px) * side
    cell_h, cell_w = bh / cur_h, bw / cur_w  # canvas pixels per feature cell
    r0, r1, c0, c1 = 0, cur_h, 0, cur_w
    if w / h > cur_w / cur_h:  # unpad_image: rows of padding top and bottom
        new_h = int(round(h * (cur_w / w), 7))
        pad = (cur_h - new_h) // 2
        r0, r1 = pad, cur_h - pad
    else:
        new_w = int(round(w * (cur_h / h), 7))
        pad = (cur_w - new_w) // 2
        c0, c1 = pad, cur_w - pad
    rows, cols = r1 - r0, c1 - c0
    if max_num_patches is not None:
        import math

        ratio = math.sqrt(rows * cols / (max_num_patches * side**2))
        if ratio > 1.1:
            rows, cols = int(rows // ratio), int(cols // ratio)
    sx, sy = w / nw, h / nh  # canvas -> original pixels
    box = ((c0 * cell_w - paste_x) * sx, (r0 * cell_h - paste_y) * sy, (c1 * cell_w - paste_x) * sx, (r1 * cell_h - paste_y) * sy)
    return {"rows": rows, "cols": cols, "box": box, "canvas": (bh, bw), "crops": (bh // crop_px, bw // crop_px)}


def anyres_layout(
    image_size: tuple[int, int],
    token_positions: Sequence[int],
    side: int,
    crop_px: int,
    pinpoints,
    max_num_patches: int | None = None,
    newline: bool = True,
) -> ImageLayout:
    """LLaVA-NeXT / OneVision: base grid (side x side over the squashed whole image), then the
    unpadded high-res grid row by row, each row followed by one `image_newline` token (a separator).

    V order = prompt order: [base row-major (side*side)] + [row 0 cols, newline, row 1 cols, newline, ...].
    """
    from utils.contracts.layout import Grid

    geo = anyres_geometry(image_size, side, crop_px, pinpoints, max_num_patches)
    rows, cols = geo["rows"], geo["cols"]
    nl = 1 if newline else 0
    expected = side * side + rows * (cols + nl)
    if len(token_positions) != expected:
        raise UserError(
            f"the prompt has {len(token_positions)} image tokens but the anyres layout expects {expected} "
            f"(base {side}x{side} + high-res {rows}x{cols} + {rows * nl} newlines) for an image of {image_size[0]}x{image_size[1]}; "
            "do processor (image_grid_pinpoints, patch_size) and model config agree?"
        )
    w, h = image_size
    base = Grid(name="base", rows=side, cols=side, token_index=tuple(range(side * side)), box=(0.0, 0.0, float(w), float(h)))
    start = side * side
    hi_index = tuple(start + r * (cols + nl) + c for r in range(rows) for c in range(cols))
    seps = tuple(start + r * (cols + nl) + cols for r in range(rows)) if nl else ()
    hi = Grid(name="highres", rows=rows, cols=cols, token_index=hi_index, box=tuple(float(x) for x in geo["box"]))  # type: ignore[arg-type]
    return ImageLayout(
        image_size=(int(w), int(h)),
        token_positions=tuple(int(p) for p in token_positions),
        grids=(base, hi),
        aspect="anyres",
        separator_index=seps,
        default_grid="highres",
        extra={"canvas_hw": list(geo["canvas"]), "crops_hw": list(geo["crops"])},
    )


# ---- one grid over the resized image (Qwen2-VL, Gemma 3) ---------------------------------

def resize_grid_layout(image_size: tuple[int, int], token_positions: Sequence[int], rows: int, cols: int,
                       family: str) -> ImageLayout:
    """A rows x cols row-major grid covering the whole image (the processor resized it, no crop/pad).

    Qwen2-VL: rows, cols = grid_thw h/2, w/2 after the 2x2 merge; Gemma 3: the pooled 16x16 grid.
    """
    from utils.contracts.layout import Grid

    if len(token_positions) != rows * cols:
        raise UserError(f"{family}: the prompt has {len(token_positions)} image tokens but the grid is {rows}x{cols}")
    w, h = image_size
    grid = Grid(name="image", rows=rows, cols=cols, token_index=tuple(range(rows * cols)), box=(0.0, 0.0, float(w), float(h)))
    return ImageLayout(image_size=(int(w), int(h)), token_positions=tuple(int(p) for p in token_positions),
                       grids=(grid,), aspect="resize", default_grid="image")
