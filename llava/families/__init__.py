"""Model families: what differs between VLMs once the prompt is built.

A `Family` answers, for one `config.model_type`:
* `load_processor(path)`: the processor (`llava.compat.load_processor`: AutoProcessor, or assembled
  from its parts when transformers cannot build the video processor without torchvision);
* `image_token_ids(config)`: the placeholder ids whose positions are the record's image axis V
  (LLaVA-NeXT's `image_newline` positions carry the same `<image>` id, so they are in V);
* `resolve_aspect(vlm, requested)` / `fit_image(vlm, image)`: how the image is fitted
  (only LLaVA-1.5 offers crop | pad; the others have one processor-defined geometry);
* `layout(vlm, enc, b, image_size, positions)`: the `ImageLayout` of sample b from the processor
  outputs (`image_sizes`, `image_grid_thw`, ...);
* `grid_side(config)`: side of the square base grid, or None.

`FAMILIES` maps model_type -> Family; `llava.model.VLM` holds one and delegates to it.
"""

from __future__ import annotations

from llava.families.base import Family, Gemma3, Llava15, LlavaNext, LlavaOnevision, QwenVL
from llava.families.idefics3 import Idefics3
from llava.families.internvl import InternVL
from llava.families.qwen3_vl import Qwen3VL
from utils.errors import UserError

__all__ = ["FAMILIES", "Family", "Gemma3", "Idefics3", "InternVL", "Llava15", "LlavaNext", "LlavaOnevision",
           "Qwen3VL", "QwenVL", "family_for"]

FAMILIES: dict[str, Family] = {
    "llava": Llava15(),
    "llava_next": LlavaNext(),
    "llava_onevision": LlavaOnevision(),
    "qwen2_vl": QwenVL("Qwen2VLProcessor"),
    "qwen2_5_vl": QwenVL("Qwen2_5_VLProcessor"),
    "gemma3": Gemma3(),
    "internvl": InternVL(),
    "qwen3_vl": Qwen3VL(),
    "idefics3": Idefics3("Idefics3Processor"),
    "smolvlm": Idefics3("SmolVLMProcessor"),
}


def family_for(model_type: str) -> Family:
    """The `Family` registered for `config.model_type`.

    Args:
        model_type: the checkpoint config's `model_type`.
    """
    if model_type not in FAMILIES:
        raise UserError(f"model type {model_type!r} is not supported; supported: {sorted(FAMILIES)}")
    return FAMILIES[model_type]
