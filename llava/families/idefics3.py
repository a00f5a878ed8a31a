"""Idefics3 and SmolVLM: image splitting into square tiles + a global image, pixel shuffle, row/column tokens.

The image processor resizes the image to `size["longest_edge"]` (keeping its aspect), then stretches it
to whole multiples of the tile size `max_image_size["longest_edge"]` (`resize_for_vision_encoder`),
cuts it row-major into `rows x cols` tiles and, with more than one tile, appends the global image (the
whole picture resized to one tile). Each tile: (tile/patch)^2 patches, pixel shuffle by `scale_factor`
-> `image_seq_len` `<image>` tokens per tile, row-major over `scale_factor`^2 patch blocks. The prompt
puts `<fake_token_around_image><row_r_col_c>` before every tile, a newline after every tile row and
`<fake_token_around_image><global-img>` before the global image: none of these is an `<image>` token,
so V holds exactly the image features. Layout: `llava.tile_layouts.tiled_layout`.
"""

from __future__ import annotations

from llava import compat
from llava.families.base import Family
from llava.tile_layouts import idefics3_tile_grid, size_edge, tiled_layout
from utils.errors import UserError


def tile_side(config) -> int:
    """Tokens per tile side: patches per side / scale_factor (SmolVLM: 384/16 / 3 = 8, Idefics3: 364/14 / 2 = 13)."""
    vc = config.vision_config
    per_side = int(vc.image_size) // int(vc.patch_size)
    scale = int(config.scale_factor)
    if per_side % scale:
        raise UserError(f"{config.model_type}: {per_side} patches per side do not shuffle evenly by {scale}")
    return per_side // scale


class Idefics3(Family):
    """Idefics3 / SmolVLM: a `tiles` mosaic grid + a `global` grid (one `image` grid when not split)."""

    name = "idefics3"
    aspects = ("tiles",)
    nested_images = True  # one list of images per prompt

    def __init__(self, processor_class: str = "Idefics3Processor"):
        self.processor_class = processor_class

    def load_processor(self, path: str):
        return compat.chat_without_video(compat.load_processor(path, self.processor_class))


    def grid_side(self, config) -> int | None:
        return None

    def layout(self, vlm, enc, b, image_size, positions):
        cfg = vlm.model.config
        side = tile_side(cfg)
        w, h = image_size
        ip = vlm.processor.image_processor
        rows, cols = idefics3_tile_grid(ip, h, w)
        tile_px = size_edge(ip.max_image_size)
        covered = side * int(cfg.scale_factor) * int(cfg.vision_config.patch_size) / tile_px
        return tiled_layout(image_size, positions, max(rows, 1), max(cols, 1), side, "global", cfg.model_type,
                            covered=covered)
