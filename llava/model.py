"""Loading a VLM and turning (image, query) pairs into model inputs plus ImageLayouts.

`load_vlm` takes a hub id or a local folder of a supported checkpoint (LLaVA-1.5, LLaVA-NeXT,
LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Gemma 3) and returns a `VLM`: the model with the capture
attention function installed on its text model, the processor, and the settings that decide
prompts and image geometry. What differs per family (processor loading, image-token ids, image
fitting, `ImageLayout`) lives in `llava.families.FAMILIES`, looked up by `config.model_type`; what
differs per transformers version lives in `llava.compat`. A checkpoint whose weights do not all
load (missing, unexpected or mismatched keys) is a `UserError`, never a model with random weights.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch
from PIL import Image

from llava import attention, compat
from llava.families import FAMILIES, Family, family_for
from llava.prompts import lone_space_ids, referseg_prompt, strip_tokens
from utils.errors import UserError
from utils.contracts.layout import ImageLayout

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Sample:
    """One image + query; `image` may be a PIL image or a path."""

    image: Any
    query: str
    sample_id: str = ""
    image_path: str | None = None


@dataclass
class PreparedBatch:
    """Model inputs for a left-padded batch plus per-sample bookkeeping.

    image_cols[b]: key positions of sample b's image tokens in the padded frame (B, S).
    layouts[b]: positions in sample b's own unpadded prompt (what records store).
    """

    inputs: dict[str, torch.Tensor]
    prompts: list[str]
    input_ids: list[torch.Tensor]  # unpadded, per sample (S_b,)
    pad_offsets: list[int]
    image_cols: list[torch.Tensor]
    layouts: list[ImageLayout]
    samples: list[Sample]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"]

    def __len__(self) -> int:
        return len(self.samples)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device={device} but no CUDA GPU is visible; use model.device=cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"model.device={device!r} is not valid: use auto, cpu, cuda or cuda:N") from None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise UserError(f"model.dtype={dtype!r} is not valid: use auto, float32, float16 or bfloat16")
    return DTYPES[dtype]


class VLM:
    """A loaded vision-language model with its processor and prompt/geometry settings."""

    _fingerprint: dict | None = None

    def __init__(self, model, processor, *, model_id: str, prompt_template: str = "chat", image_aspect: str = "auto",
                 system_prompt: str | None = None):
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.model_type = model.config.model_type
        if prompt_template not in ("chat", "plain", "referseg"):
            raise UserError(f"prompt_template={prompt_template!r} is not valid: use chat, plain or referseg")
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self.family: Family = family_for(self.model_type)
        ip = processor.image_processor
        self.processor_pads = bool(getattr(ip, "do_pad", False))
        self.image_aspect = self.family.resolve_aspect(self, image_aspect)
        tc = model.config.text_config
        self.num_layers = int(tc.num_hidden_layers)
        self.num_heads = int(tc.num_attention_heads)
        self.image_token_ids = self.family.image_token_ids(model.config)
        self.image_token_id = self.image_token_ids[0]
        self.grid_side = self.family.grid_side(model.config)  # None for families without a square base grid
        tok = processor.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"

    @property
    def fingerprint(self) -> dict:
        """What identifies this model in its records (weights sample hash, dtype, processor and prompt
        settings; llava/fingerprint.py), computed once."""
        if self._fingerprint is None:
            from llava.fingerprint import model_fingerprint

            self._fingerprint = model_fingerprint(self)
        return self._fingerprint

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- prompts ------------------------------------------------------------------------
    def build_prompt(self, query: str, history: Sequence[tuple[str, str]] = ()) -> str:
        """Prompt text with one image placeholder: the chat template, `<image>\\n{query}` (plain), or
        Kang et al.'s released referseg prompt (llava/prompts.py; `prepare` also strips its lone spaces).

        history: earlier (user, assistant) turns for multi-turn chat; the image sits in the first turn.
        """
        image_token = self.family.plain_image_text(self.processor)
        if self.prompt_template in ("plain", "referseg"):
            if history:
                raise UserError(f"prompt_template={self.prompt_template} has no multi-turn form; use prompt_template=chat")
            return f"{image_token}\n{query}" if self.prompt_template == "plain" else referseg_prompt(query, image_token)
        messages: list[dict] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        turns = [*history, (query, None)]
        for i, (user, assistant) in enumerate(turns):
            content: list[dict] = [{"type": "text", "text": user}]
            if i == 0:
                content.insert(0, {"type": "image"})
            messages.append({"role": "user", "content": content})
            if assistant is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
        if getattr(self.processor, "chat_template", None) is None:
            raise UserError(f"{self.model_id} has no chat template; use prompt_template=plain")
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    # ---- images -------------------------------------------------------------------------
    def _fit_image(self, image: Image.Image) -> tuple[Image.Image, dict]:
        """The image the processor gets, plus processor kwargs (LLaVA-1.5: our own pad-to-square)."""
        return self.family.fit_image(self, image)

    def layout_for(self, image_size: tuple[int, int], positions: Sequence[int], enc=None, b: int = 0) -> ImageLayout:
        """ImageLayout of sample b; `enc` (the processor output) is needed by anyres / Qwen families."""
        return self.family.layout(self, enc, b, image_size, positions)

    def prepare(self, samples: Sequence[Sample | tuple], history: Sequence[tuple[str, str]] = ()) -> PreparedBatch:
        """Tokenise a batch (left padding) and locate every sample's image tokens."""
        from utils.images import load_image

        items = [s if isinstance(s, Sample) else Sample(*s) for s in samples]
        images, prompts, kwargs = [], [], {}
        for s in items:
            img = s.image
            if not isinstance(img, Image.Image):
                s.image_path = s.image_path or str(img)
                img = load_image(img)
            s.image = img.convert("RGB")
            fitted, kwargs = self._fit_image(s.image)
            images.append(fitted)
            prompts.append(self.build_prompt(s.query, history))
        if self.family.nested_images:
            images = [[im] for im in images]
        enc = self.processor(images=images, text=prompts, return_tensors="pt", padding=True, **kwargs)
        for key in self.family.unused_inputs:
            enc.pop(key, None)
        if self.prompt_template == "referseg":  # the release drops every lone-space token
            tok = self.processor.tokenizer
            enc = strip_tokens(enc, lone_space_ids(tok), tok.pad_token_id)
        am = enc["attention_mask"]
        ids = enc["input_ids"]
        input_ids, offsets, cols, layouts = [], [], [], []
        for b, s in enumerate(items):
            first = int(torch.argmax(am[b].long()))
            own = ids[b, first:][am[b, first:].bool()]
            pos = torch.nonzero(torch.isin(own, torch.tensor(self.image_token_ids))).flatten()
            if pos.numel() == 0:
                raise UserError(f"prompt for sample {s.sample_id or b} has no image token; check the chat template")
            limit = getattr(self.model.config.text_config, "max_position_embeddings", None)
            if limit and own.numel() > limit:
                raise UserError(f"sample {s.sample_id or b}: prompt of {own.numel()} tokens is longer than the "
                                f"model's {limit} positions; shorten the prompt")
            input_ids.append(own)
            offsets.append(first)
            cols.append(pos + first)
            layouts.append(self.layout_for(s.image.size, pos.tolist(), enc, b))
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return PreparedBatch(inputs, prompts, input_ids, offsets, cols, layouts, items)

    # ---- running ------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, batch: PreparedBatch, **kwargs):
        return self.model(**batch.inputs, **kwargs)

    @torch.inference_mode()
    def generate(self, batch: PreparedBatch, max_new_tokens: int = 16, streamer=None, **kwargs) -> list[torch.Tensor]:
        """Greedy generation; returns per sample the generated ids, cut after the first EOS."""
        out = self.model.generate(**batch.inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                  streamer=streamer, **kwargs)
        new = out[:, batch.inputs["input_ids"].shape[1]:]
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        result = []
        for row in new:
            cut = len(row)
            for i, t in enumerate(row.tolist()):
                if t in eos_ids:
                    cut = i + 1
                    break
            result.append(row[:cut].cpu())
        return result

    # ---- vision tower (llava/vision.py) ---------------------------------------------------
    def vision_support(self) -> str | None:
        """None when `vision_capture` works for this model, else why not (one line)."""
        from llava.vision import vision_support

        return vision_support(self.model)

    def vision_capture(self, aggregates: Sequence[str] = ("mean", "rollout", "vlm_visualizer")):
        """Context manager: the vision tower's compact token->patch matrices while the block runs;
        yields an object with `result(b) -> ({aggregate: [V, P]}, metadata)` (UserError if unsupported)."""
        from llava.vision import capture_token_patch

        return capture_token_patch(self.model, aggregates)

    def decode(self, ids: torch.Tensor) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [str(t) for t in self.processor.tokenizer.convert_ids_to_tokens(list(ids))]

    def text_streamer(self, out: TextIO):
        """A transformers TextStreamer printing the answer to `out` as it is generated, with an
        "assistant: " prefix before the first text; `.started` tells whether anything was printed."""
        from transformers import TextStreamer

        class _Streamer(TextStreamer):
            started = False

            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if not text and not self.started:
                    return
                if not self.started:
                    print("assistant: ", end="", file=out)
                    self.started = True
                print(text, end="\n" if stream_end else "", file=out, flush=True)

        return _Streamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)


def _load_model(name_or_path: str, dtype: torch.dtype, device: torch.device, device_map, attn_implementation: str,
                family: Family | None = None):
    from transformers import AutoModelForImageTextToText

    processor = (family or FAMILIES["llava"]).load_processor(name_or_path)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn_implementation}
    if device_map:
        kwargs["device_map"] = device_map
    try:
        model = compat.load_complete(AutoModelForImageTextToText, name_or_path, **kwargs)
    except pickle.UnpicklingError as e:  # weights_only refused a pickle: it was not run
        from llava.sources import unsafe_pickle_message

        raise UserError(unsafe_pickle_message(name_or_path, e)) from None
    if not device_map:
        model.to(device)
    return model.eval(), processor


def _model_type(name_or_path: str) -> str:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path).model_type
    except OSError as e:
        local = Path(name_or_path)
        hint = "the folder has no config.json" if local.exists() else "not a local folder, and the hub could not be reached or has no such repo"
        raise UserError(f"cannot load model {name_or_path!r}: {hint} ({str(e).splitlines()[0]})") from None


def load_vlm(
    name_or_path: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    device_map: Any = None,
    prompt_template: str = "chat",
    image_aspect: str = "auto",
    system_prompt: str | None = None,
    attn_implementation: str | None = None,
) -> VLM:
    """Load a checkpoint (hub id or local folder) with the capture attention function on its layers."""
    from llava.sources import check_checkpoint_folder, check_source

    check_source(str(name_or_path))  # a missing folder, or a hub id offline: one line, at once
    if Path(str(name_or_path)).expanduser().exists():
        check_checkpoint_folder(str(name_or_path))  # config.json and weights files readable: one line naming the file
    model_type = _model_type(str(name_or_path))
    if model_type not in FAMILIES:
        raise UserError(f"model type {model_type!r} of {name_or_path} is not supported; supported: {sorted(FAMILIES)}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    impl = attn_implementation or attention.register()
    model, processor = _load_model(str(name_or_path), dt, dev, device_map, impl, FAMILIES[model_type])
    return VLM(model, processor, model_id=str(name_or_path), prompt_template=prompt_template,
               image_aspect=image_aspect, system_prompt=system_prompt)


def load_from_config(cfg, device: str | None = None) -> VLM:
    """Build a VLM from the `model` settings (`utils.settings.declarations.ModelConfig`, config/model/*.yaml);
    `device` overrides `cfg.device` (each rank's GPU under torchrun)."""
    name = cfg.name_or_path
    if getattr(cfg, "builder", None) == "tiny_random":
        from llava.tiny.llava15 import TinyLlavaSpec, save_tiny_llava

        folder = Path(cfg.cache_dir) / "tiny_random"
        if not (folder / "config.json").exists():
            save_tiny_llava(folder, TinyLlavaSpec(seed=int(cfg.seed)))
        name = str(folder)
    hint = getattr(cfg, "missing_hint", None)
    if hint and not Path(name).exists():
        raise UserError(f"model.name_or_path={name}: folder does not exist; {hint}")
    return load_vlm(name, device=device or cfg.device, dtype=cfg.dtype, device_map=cfg.device_map, prompt_template=cfg.prompt_template,
                    image_aspect=cfg.image_aspect, system_prompt=cfg.system_prompt)

