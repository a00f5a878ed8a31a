"""ImageLayouts of tiling processors: InternVL (dynamic tiles + thumbnail) and Idefics3 / SmolVLM
(image splitting + global image).

Both processors stretch the whole image onto a canvas of `tile_rows x tile_cols` square tiles (no crop,
no padding), cut it row-major into tiles and, when there is more than one tile, add one more square
image: the whole picture resized to one tile (InternVL's thumbnail, Idefics3's global image). Each
tile goes through the vision tower alone; its `P x P` patch features are pixel-shuffled (a `s x s`
block of neighbouring patches -> one token) into `side x side` tokens, `side = P / s`, row-major.

So V (prompt order) = `[tile (0,0): side*side row-major] + [tile (0,1)] + ... + [global: side*side]`,
and the layout has two grids over the whole image:

* `tiles`: the mosaic of all tiles, `(tile_rows*side) x (tile_cols*side)` cells (the default grid);
  a cell is one token = an `s x s` patch block of one tile;
* `thumbnail` / `global`: `side x side` cells.

A single tile (InternVL on a near-square image, Idefics3 without splitting) gives one grid, `image`.
"""

from __future__ import annotations

from typing import Sequence

from utils.errors import UserError
from utils.contracts.layout import Grid, ImageLayout


def mosaic_index(tile_rows: int, tile_cols: int, side: int) -> tuple[int, ...]:
    """token_index of the tiles mosaic: cell (R, C) -> V index of its token inside tile (R//side, C//side).

    Row-major over the `(tile_rows*side) x (tile_cols*side)` cells.
    """
    per_tile = side * side
    out = []
    for r in range(tile_rows * side):
        for c in range(tile_cols * side):
            tile = (r // side) * tile_cols + c // side
            out.append(tile * per_tile + (r % side) * side + c % side)
    return tuple(out)


def tiled_layout(image_size: tuple[int, int], token_positions: Sequence[int], tile_rows: int, tile_cols: int,
                 side: int, global_name: str, family: str, covered: float = 1.0) -> ImageLayout:
    """The layout of `tile_rows x tile_cols` tiles (+ one global tile when there are several), see the module doc.

    Args:
        image_size: original (W, H).
        token_positions: the V image-token positions in the unpadded prompt.
        tile_rows, tile_cols: the processor's tile grid (1, 1 = a single tile, no global image).
        side: tokens per tile side after pixel shuffle.
        global_name: name of the whole-image grid (`thumbnail` for InternVL, `global` for Idefics3).
        family: named in the error message.
        covered: fraction of a tile's side that its patches cover (`patches * patch_px / tile_px`; < 1 when
            the tile is not a whole number of patches, e.g. SmolVLM's 384 px tiles of 27 x 14 px patches:
            the last 6 px of each tile reach no token).

    The whole-image grids are exact: their box is the covered part of the image. The `tiles` mosaic
    splits its box evenly, so with covered < 1 a cell may be off by up to the uncovered strip of one
    tile (`extra["tile_gap"]`, in tile pixels / tile pixels: 6/384 of a tile = 1/7 of a cell for SmolVLM).
    """
    w, h = image_size
    n_tiles = tile_rows * tile_cols
    extra = 1 if n_tiles > 1 else 0
    expected = (n_tiles + extra) * side * side
    if len(token_positions) != expected:
        raise UserError(f"{family}: the prompt has {len(token_positions)} image tokens but {tile_rows}x{tile_cols} tiles"
                        f"{' + 1 ' + global_name if extra else ''} of {side}x{side} tokens need {expected} for an image "
                        f"of {w}x{h}; do the processor's tile settings and the model config agree?")
    if not 0.5 < covered <= 1.0:
        raise UserError(f"{family}: the patches cover {covered:.3f} of a tile's side; the layout needs more than half")
    whole = (0.0, 0.0, float(w) * covered, float(h) * covered)  # the global image / single tile: exact
    if not extra:
        grids = (Grid(name="image", rows=side, cols=side, token_index=tuple(range(side * side)), box=whole),)
        default = "image"
    else:
        # first tile's left/top and last tile's right/bottom edges exact; cells between evenly spread
        mosaic = (0.0, 0.0, w * (tile_cols - 1 + covered) / tile_cols, h * (tile_rows - 1 + covered) / tile_rows)
        tiles = Grid(name="tiles", rows=tile_rows * side, cols=tile_cols * side,
                     token_index=mosaic_index(tile_rows, tile_cols, side), box=mosaic)
        start = n_tiles * side * side
        glob = Grid(name=global_name, rows=side, cols=side, token_index=tuple(range(start, start + side * side)), box=whole)
        grids = (tiles, glob)
        default = "tiles"
    return ImageLayout(image_size=(int(w), int(h)), token_positions=tuple(int(p) for p in token_positions),
                       grids=grids, aspect="tiles", default_grid=default,
                       extra={"tiles_hw": [int(tile_rows), int(tile_cols)], "tile_gap": round(1.0 - covered, 6)})


# ---- Idefics3 / SmolVLM tile grid ---------------------------------------------------------

IDEFICS3_MAX_IMAGE_SIZE = 4096  # transformers' MAX_IMAGE_SIZE cap on the longest-edge resize


def size_edge(size, key: str = "longest_edge") -> int:
    """size[key] of a dict or SizeDict-like processor setting."""
    return int(size[key] if isinstance(size, dict) else getattr(size, key))


def _longest_edge_size(h: int, w: int, longest: int) -> tuple[int, int]:
    """Idefics3's resize to a longest edge (the other side int(...), rounded up to even), then the 4096 cap."""
    ar = w / h
    if w >= h:
        w, h = longest, int(longest / ar)
        h += h % 2
    else:
        h, w = longest, int(longest * ar)
        w += w % 2
    h, w = max(h, 1), max(w, 1)
    ar = w / h
    if w >= h and w > IDEFICS3_MAX_IMAGE_SIZE:
        w, h = IDEFICS3_MAX_IMAGE_SIZE, int(IDEFICS3_MAX_IMAGE_SIZE / ar)
    elif h > w and h > IDEFICS3_MAX_IMAGE_SIZE:
        h, w = IDEFICS3_MAX_IMAGE_SIZE, int(IDEFICS3_MAX_IMAGE_SIZE * ar)
    return max(h, 1), max(w, 1)


def idefics3_tile_grid(image_processor, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of tiles the Idefics3 / SmolVLM image processor makes of an image; (0, 0) = one image.

    Follows the processor step by step: resize to `size["longest_edge"]`; `resize_for_vision_encoder`
    (each side up to a whole number of tiles, the short side from the aspect); split when a side
    exceeds one tile. tests/test_families_tester_configs.py compares it with the processor's `return_row_col_info`.
    """
    import math

    tile = size_edge(image_processor.max_image_size)
    if not getattr(image_processor, "do_image_splitting", True):
        return 0, 0
    h, w = height, width
    if getattr(image_processor, "do_resize", True):
        h, w = _longest_edge_size(h, w, size_edge(image_processor.size))
    ar = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = math.ceil(int(w / ar) / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = math.ceil(int(h * ar) / tile) * tile
    if h > tile or w > tile:
        return (h - tile) // tile + 1, (w - tile) // tile + 1
    return 0, 0
