"""InternVL (`InternVLForConditionalGeneration`, the `-hf` checkpoints): dynamic 448 px tiles + a thumbnail.

The processor (`GotOcr2ImageProcessor` with `crop_to_patches`) picks the tile grid whose aspect is
closest to the image's (`get_optimal_tiled_canvas`, between `min_patches` and `max_patches` tiles),
stretches the image onto it, cuts it row-major and, with more than one tile, appends a thumbnail (the
whole image resized to one tile). Each tile: (448/14)^2 = 32x32 patches (CLS dropped), pixel shuffle
0.5 -> 16x16 = 256 `<IMG_CONTEXT>` tokens, row-major over 2x2 patch blocks. The prompt wraps them in
`<img>` ... `</img>`, which are not in V. Layout: `llava.tile_layouts.tiled_layout`.
"""

from __future__ import annotations

from llava import compat
from llava.families.base import Family
from llava.tile_layouts import tiled_layout
from utils.errors import UserError


def _pair(x) -> tuple[int, int]:
    """(height, width) of an int or [h, w] config value."""
    return (int(x), int(x)) if isinstance(x, (int, float)) else (int(x[0]), int(x[1]))


def tile_side(config) -> int:
    """Tokens per tile side: patches per side x downsample_ratio (448/14 x 0.5 = 16)."""
    (ih, iw), (ph, pw) = _pair(config.vision_config.image_size), _pair(config.vision_config.patch_size)
    if ih != iw or ph != pw:
        raise UserError(f"internvl: non-square tiles ({iw}x{ih} px, patches {pw}x{ph}) are not supported")
    side = ih // ph * float(config.downsample_ratio)
    if side != int(side):
        raise UserError(f"internvl: {ih // ph} patches per side do not shuffle evenly by {config.downsample_ratio}")
    return int(side)


class InternVL(Family):
    """InternVL 2.5 / 3 in transformers' format; one `tiles` mosaic grid + a `thumbnail` grid."""

    name = "internvl"
    aspects = ("tiles",)
    processor_class = "InternVLProcessor"


    def grid_side(self, config) -> int | None:
        return None  # no single square base grid

    def layout(self, vlm, enc, b, image_size, positions):
        cfg = vlm.model.config
        if getattr(cfg, "vision_feature_select_strategy", "default") != "default":
            raise UserError(f"internvl: vision_feature_select_strategy={cfg.vision_feature_select_strategy!r} is not "
                            "supported (its CLS token would make a tile's tokens no square grid)")
        side = tile_side(cfg)
        ip = vlm.processor.image_processor
        th, tw = int(ip.size["height"]), int(ip.size["width"])
        rows = cols = 1
        if len(positions) > side * side:  # several tiles: the processor's grid for this image
            w, h = image_size
            cols, rows = compat.optimal_tiled_canvas((h, w), (th, tw), int(ip.min_patches), int(ip.max_patches))
        patch = _pair(cfg.vision_config.patch_size)[0]
        covered = (_pair(cfg.vision_config.image_size)[0] // patch) * patch / th
        return tiled_layout(image_size, positions, rows, cols, side, "thumbnail", "internvl", covered=covered)
