"""SAM (transformers' SamModel / SamProcessor; SAM 2 through Sam2Model / Sam2Processor) as a
prompt -> mask callable for `grounding.refine=sam`.

The entry point builds `sam_loader(cfg.grounding.sam)` and hands it to the stages
(`StageContext.sam_loader`); lab/ only ever calls the `Segmenter` it returns:

    mask, score = segmenter(image, box=[x0, y0, x1, y1] | None, points=[[x, y], ...] | None, multimask=bool)

Prompts are in original-image pixels and the mask (bool `[H, W]`) is at the original size: the
processor maps the prompts into SAM's resized frame (longest side -> its `size.longest_edge`,
`SamProcessor._normalize_coordinates`) and `post_process_masks` maps the low-resolution logits back
(upsample to the padded input, crop the padding, resize to the original size, logits > 0).
With `multimask=True` SAM returns 3 candidates and the one with the highest predicted IoU
(`iou_scores`) is taken; with False the single-mask output. SAM 2 (transformers 4.57 and 5.x both
have it) needs torchvision for its image processor (no PIL variant exists); SAM works without it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np

from utils.errors import UserError

log = logging.getLogger("lhf")

FAMILIES = {"sam": ("SamModel", "SamProcessor", "SamImageProcessor"),
            "sam2": ("Sam2Model", "Sam2Processor", "Sam2ImageProcessor")}


class Segmenter:
    """A loaded SAM model + processor: prompts in original pixels -> (bool [H, W] mask, predicted IoU)."""

    def __init__(self, model: Any, processor: Any, family: str = "sam") -> None:
        self.model = model.eval()
        self.processor = processor
        self.family = family
        self._cache: tuple[Any, Any] | None = None  # (image object, its image embeddings)

    def embeddings(self, image, pixel_values):
        """The vision encoder's output for `image`, computed once while the same image object is
        prompted again (stage=evaluate prompts each image once per head set)."""
        import torch

        if self._cache is None or self._cache[0] is not image:
            dtype = next(self.model.parameters()).dtype
            with torch.inference_mode():
                self._cache = (image, self.model.get_image_embeddings(pixel_values.to(self.device, dtype)))
        return self._cache[1]

    @property
    def device(self):
        return next(self.model.parameters()).device

    def inputs(self, image, box: Sequence[float] | None, points: Sequence[Sequence[float]] | None) -> Any:
        """The processor's tensors for one image and one object (its box and/or positive points)."""
        if box is None and not points:
            raise ValueError("SAM needs a box or at least one point")
        kw: dict[str, Any] = {}
        if box is not None:
            kw["input_boxes"] = [[[float(v) for v in box]]]  # [image, box, 4]
        if points:
            kw["input_points"] = [[[[float(x), float(y)] for x, y in points]]]  # [image, object, point, 2]
            kw["input_labels"] = [[[1] * len(points)]]  # [image, object, point]: all positive
        return self.processor(images=image.convert("RGB"), return_tensors="pt", **kw)

    def __call__(self, image, box: Sequence[float] | None = None, points: Sequence[Sequence[float]] | None = None,
                 multimask: bool = False) -> tuple[np.ndarray, float]:
        import torch

        enc = self.inputs(image, box, points)
        feed = {k: v.to(self.device) for k, v in enc.items() if k in ("input_points", "input_labels", "input_boxes")}
        with torch.inference_mode():
            out = self.model(image_embeddings=self.embeddings(image, enc["pixel_values"]), **feed,
                             multimask_output=bool(multimask))
        logits = out.pred_masks.float().cpu()  # [1, objects=1, masks (3 or 1), h, w]
        scores = out.iou_scores.float().cpu()[0, 0]  # [masks]
        if self.family == "sam":
            masks = self.processor.image_processor.post_process_masks(
                [logits[0]], enc["original_sizes"], enc["reshaped_input_sizes"])[0]  # [1, masks, H, W]
        else:
            masks = self.processor.post_process_masks([logits[0]], enc["original_sizes"])[0]
        k = int(torch.argmax(scores)) if multimask else 0
        w, h = image.size
        mask = masks[0, k].numpy().astype(bool)
        if mask.shape != (h, w):
            raise RuntimeError(f"SAM returned a {mask.shape[1]}x{mask.shape[0]} mask for a {w}x{h} image")
        return mask, float(scores[k])


def _processor(path: str, family: str) -> Any:
    import transformers

    from llava.compat import pil_image_processor, processor_from_parts

    _, pname, ipname = FAMILIES[family]
    pcls = getattr(transformers, pname)
    try:
        return pcls.from_pretrained(path)
    except (ImportError, AttributeError, ValueError, TypeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    try:  # without torchvision: the PIL image processor, assembled by hand
        ip = pil_image_processor(ipname).from_pretrained(path)
        return processor_from_parts(pcls, image_processor=ip)
    except (ImportError, AttributeError, ValueError, TypeError, OSError, UserError) as e:
        raise UserError(f"cannot load the SAM processor of {path} ({first}; from its parts: {e}); "
                        f"SAM 2 needs torchvision: pip install torchvision") from None


def load_segmenter(name_or_path: str, device: str = "auto", dtype: str = "float32") -> Segmenter:
    """SamModel / Sam2Model + processor from a hub id or folder; one UserError line when it is missing."""
    import torch
    import transformers
    from transformers import AutoConfig

    from llava.compat import load_complete

    from llava.sources import check_source

    check_source(str(name_or_path), "grounding.sam.name_or_path")  # a missing folder, or offline: at once
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise UserError(f"grounding.sam.name_or_path={name_or_path}: no SAM checkpoint found there "
                        f"({type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}); "
                        "pass a local folder or download the hub id first (huggingface-cli download ...)") from None
    family = getattr(config, "model_type", "")
    if family not in FAMILIES:
        raise UserError(f"grounding.sam.name_or_path={name_or_path} is a {family!r} model, not SAM (sam) or SAM 2 (sam2)")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = load_complete(getattr(transformers, FAMILIES[family][0]), name_or_path, dtype=getattr(torch, dtype))
    log.info("loaded SAM %s (%s) on %s", name_or_path, family, dev)
    return Segmenter(model.to(dev), _processor(name_or_path, family), family)


def sam_loader(cfg) -> Callable[[], Segmenter]:
    """A callable that loads the SAM of `grounding.sam` on first call and returns the same one after."""
    cache: dict[str, Segmenter] = {}

    def load() -> Segmenter:
        if "seg" not in cache:
            cache["seg"] = load_segmenter(str(cfg.name_or_path), str(cfg.device), str(cfg.dtype))
        return cache["seg"]

    return load
