"""The family classes the registry (`llava.families`) and the plug-in modules (idefics3, internvl,
qwen3_vl) build on: `Family` (LLaVA-1.5 behaviour) and the families that need no module of their own.

Registration is one-way: plug-ins import this module, `llava/families/__init__.py` imports both.
"""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image

from llava import compat
from llava.families.layouts import anyres_layout, llava15_layout, resize_grid_layout
from utils.errors import UserError
from utils.contracts.layout import ImageLayout


class Family:
    """LLaVA-1.5 behaviour; subclasses override what differs."""

    name = "llava"
    aspects: tuple[str, ...] = ("resize",)
    nested_images = False  # processor wants images grouped per prompt: [[img], [img], ...]
    processor_class = "LlavaProcessor"  # used when the checkpoint's processor config names none
    unused_inputs: tuple[str, ...] = ("token_type_ids",)  # tokenizer outputs the model does not take (4.x tokenizers add them)

    def load_processor(self, path: str):
        return compat.load_processor(path, self.processor_class)

    def plain_image_text(self, processor) -> str:
        """What stands for the image in prompt_template=plain (`{this}\n{query}`)."""
        return processor.image_token

    def image_token_ids(self, config) -> list[int]:
        tid = getattr(config, "image_token_id", None)
        if tid is None:
            tid = getattr(config, "image_token_index")
        return [int(tid)]

    def grid_side(self, config) -> int | None:
        vc = config.vision_config
        return int(vc.image_size) // int(vc.patch_size)

    def resolve_aspect(self, vlm, requested: str) -> str:
        if requested in ("auto", self.aspects[0]):
            return self.aspects[0]
        raise UserError(f"image_aspect={requested!r} is not valid for {vlm.model_type}: its processor fixes the geometry; "
                        f"use auto or {self.aspects[0]}")

    def fit_image(self, vlm, image: Image.Image) -> tuple[Image.Image, dict]:
        """The image the processor gets and the processor kwargs; every family names the channel axis
        (`compat.CHANNELS_LAST`): 4.x processors otherwise read images 1 or 3 px tall as channels-first."""
        return image, dict(compat.CHANNELS_LAST)

    def layout(self, vlm, enc, b: int, image_size: tuple[int, int], positions: Sequence[int]) -> ImageLayout:
        raise NotImplementedError


class Llava15(Family):
    """One G x G grid; crop (llava-hf) or pad (original LLaVA) geometry."""

    aspects = ("crop", "pad")

    def resolve_aspect(self, vlm, requested: str) -> str:
        if requested == "auto":
            return "pad" if vlm.processor_pads else "crop"
        if requested not in self.aspects:
            raise UserError(f"image_aspect={requested!r} is not valid: use auto, crop or pad")
        return requested

    def fit_image(self, vlm, image: Image.Image) -> tuple[Image.Image, dict]:
        """Apply pad-to-square ourselves when asked for but the processor does not pad."""
        kwargs: dict = dict(compat.CHANNELS_LAST)
        if vlm.image_aspect == "pad" and not vlm.processor_pads:
            w, h = image.size
            m = max(w, h)
            mean = getattr(vlm.processor.image_processor, "image_mean", None) or (0, 0, 0)
            color = tuple(int(x * 255) for x in mean)
            canvas = Image.new("RGB", (m, m), color)
            canvas.paste(image, ((m - w) // 2 if h > w else 0, (m - h) // 2 if w > h else 0))
            return canvas, kwargs
        if vlm.image_aspect == "crop" and vlm.processor_pads:
            kwargs["do_pad"] = False
        return image, kwargs

    def layout(self, vlm, enc, b, image_size, positions):
        ip = vlm.processor.image_processor
        return llava15_layout(image_size, positions, vlm.grid_side, vlm.image_aspect,
                              size=getattr(ip, "size", None), crop_size=getattr(ip, "crop_size", None))


class LlavaNext(Family):
    """Base grid + unpadded high-res grid with one newline per row (see `llava.families.layouts.anyres_layout`)."""

    name = "llava_next"
    aspects = ("anyres",)
    processor_class = "LlavaNextProcessor"

    def _max_patches(self, config) -> int | None:
        return None

    def layout(self, vlm, enc, b, image_size, positions):
        cfg = vlm.model.config
        if getattr(cfg, "vision_feature_select_strategy", "default") not in ("default", "full"):
            raise UserError(f"vision_feature_select_strategy={cfg.vision_feature_select_strategy!r} is not supported")
        hw = enc["image_sizes"][b].tolist()
        if (hw[1], hw[0]) != tuple(image_size):
            raise UserError(f"processor saw an image of {hw[1]}x{hw[0]}, expected {image_size[0]}x{image_size[1]}")
        crop_px = int(cfg.vision_config.image_size)
        return anyres_layout(image_size, positions, vlm.grid_side, crop_px, cfg.image_grid_pinpoints,
                             max_num_patches=self._max_patches(cfg))


class LlavaOnevision(LlavaNext):
    """LLaVA-NeXT's layout with SigLIP grids and anyres_max_N downscaling of the high-res grid."""

    name = "llava_onevision"
    processor_class = "LlavaOnevisionProcessor"

    def _max_patches(self, config) -> int | None:
        ar = getattr(config, "vision_aspect_ratio", "") or ""
        if ar.startswith("anyres_max_"):
            return int(ar[len("anyres_max_"):])
        return None


class QwenVL(Family):
    """Qwen2-VL / Qwen2.5-VL: grid_thw (t, h, w) patches, 2x2 merged -> (h/2) x (w/2) tokens, row-major."""

    name = "qwen_vl"

    def __init__(self, processor_class: str = "Qwen2_5_VLProcessor"):
        self.processor_class = processor_class

    def grid_side(self, config) -> int | None:
        return None

    def plain_image_text(self, processor) -> str:
        # M-RoPE finds images by <|vision_start|>: keep it around the placeholder
        tok = processor.tokenizer
        start = getattr(tok, "vision_start_token", None) or "<|vision_start|>"
        end = getattr(tok, "vision_end_token", None) or "<|vision_end|>"
        return f"{start}{processor.image_token}{end}"

    def layout(self, vlm, enc, b, image_size, positions):
        t, h, w = (int(x) for x in enc["image_grid_thw"][b].tolist())
        m = int(vlm.model.config.vision_config.spatial_merge_size)
        if t != 1:
            raise UserError(f"image {b} has {t} temporal patches; only single images are supported")
        return resize_grid_layout(image_size, positions, h // m, w // m, vlm.model_type)


class Gemma3(Family):
    """Gemma 3: mm_tokens_per_image pooled tokens, one square grid over the resized image (no pan-and-scan)."""

    name = "gemma3"
    nested_images = True
    processor_class = "Gemma3Processor"
    unused_inputs = ()  # token_type_ids mark image tokens (bidirectional attention among them)

    def plain_image_text(self, processor) -> str:
        # the placeholder the processor expands is <start_of_image> on every version; `image_token`
        # names the soft token before 5.15 and <start_of_image> from 5.15 on
        return processor.boi_token

    def grid_side(self, config) -> int | None:
        return int(math.isqrt(int(config.mm_tokens_per_image)))

    def fit_image(self, vlm, image):
        return image, {"do_pan_and_scan": False, **compat.CHANNELS_LAST}

    def layout(self, vlm, enc, b, image_size, positions):
        return resize_grid_layout(image_size, positions, vlm.grid_side, vlm.grid_side, "gemma3")
