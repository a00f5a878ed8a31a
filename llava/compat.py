"""Every difference between the supported transformers versions, in one module.

Supported: `SUPPORTED` (also in requirements.txt, pyproject.toml and the README). What differs, and
how it is handled here (feature detection, never version-number branches elsewhere):

* weight loading: every version reports missing / unexpected / mismatched keys through
  `output_loading_info=True` (lists on 4.x, sets on 5.x); `load_complete` turns any of them into a
  `UserError` instead of running with randomly initialised weights;
* PIL image processors: `XImageProcessorPil` from 5.4/5.5 on, the plain `XImageProcessor` before
  (on newer versions the plain name is the torchvision one): `pil_image_processor`;
* processors that hold a video processor: without torchvision, 5.6-5.17 cannot build the image
  processor through `AutoImageProcessor` and no version can build the video processor;
  `load_processor` assembles the processor from its parts (PIL image processor, no video processor)
  and otherwise raises one `UserError` naming the package to install;
* RoPE in configs: `rope_parameters` on 5.x, `rope_theta` / `rope_scaling` on 4.x: `rope_config`;
* Gemma 3: `processor.image_token` names the soft image token before 5.15 and <start_of_image> from
  5.15 on; `boi_token` means <start_of_image> on all versions, so the family uses that;
* 4.x numpy image processors misread images 1 or 3 px tall as channels-first: `CHANNELS_LAST` (processor
  keyword every family passes, `Family.fit_image`);
* SmolVLM's `apply_chat_template` reads the video processor, which no version builds without torchvision:
  `chat_without_video`;
* InternVL's tile grid: `get_optimal_tiled_canvas` moved to the PIL module in 5.x: `optimal_tiled_canvas`;
* tokenizers: 4.x fast tokenizers return `token_type_ids` by default; the families drop them
  (`Family.unused_inputs`) except for Gemma 3, whose processor sets them;
* CLIP towers: later 5.x releases (5.17 and 5.23 measured; 5.5 not yet) have no `vision_model`
  level (`clip_transformer`, `canonical_name`);
* checkpoint layout: those releases save LLaVA's CLIP tower without its `vision_model.` level, which
  5.0-5.5 do not map (they leave the tower random), and 5.x saves a tokenizer config naming the
  5.x-only class `TokenizersBackend`; `make_portable` rewrites a saved folder into the layout that
  every supported version maps (the hub's llava-hf layout).

The one private transformers name used here is `ProcessorMixin.check_argument_for_proper_class`,
overridden on a throwaway subclass (never on transformers' own class) by `processor_from_parts`;
tests/test_compat.py fails loudly if transformers renames it or stops calling it.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Iterable

from utils.errors import UserError

SUPPORTED = ">=4.57,<6"
INSTALL_HINT = f"pip install 'transformers{SUPPORTED}'"
SHOWN_KEYS = 3  # keys named in a weight error; the rest are counted


def installed_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def require_supported(found: str | None = None) -> None:
    """UserError unless the installed transformers is in `SUPPORTED`."""
    from packaging.specifiers import SpecifierSet

    found = found or installed_version()
    if not SpecifierSet(SUPPORTED).contains(found, prereleases=True):
        raise UserError(f"transformers {found} is installed; this tool supports transformers{SUPPORTED} "
                        f"({INSTALL_HINT})")


# ---- weights ------------------------------------------------------------------------------

def _key_names(entries: Iterable[Any]) -> list[str]:
    """Key names from a loading-info list: strings, or (key, shape_ckpt, shape_model) tuples."""
    return sorted(str(e[0]) if isinstance(e, (tuple, list)) else str(e) for e in entries)


def weight_problems(info: dict) -> dict[str, list[str]]:
    """{'missing': [...], 'unexpected': [...], 'mismatched': [...], 'errors': [...]}, empty kinds left out.

    transformers already leaves out what the architecture ties (a tied lm_head) or creates
    (non-persistent buffers) and the keys a model class declares ignorable.
    """
    kinds = {"missing": "missing_keys", "unexpected": "unexpected_keys", "mismatched": "mismatched_keys",
             "errors": "error_msgs"}
    found = {kind: _key_names(info.get(key) or ()) for kind, key in kinds.items()}
    return {kind: keys for kind, keys in found.items() if keys}


def describe_problems(problems: dict[str, list[str]], checkpoint: str, saved_with: str | None = None) -> str:
    """One line: kind counts with a few keys each, the checkpoint, the installed (and saving) version."""
    parts = []
    for kind, keys in problems.items():
        shown = ", ".join(keys[:SHOWN_KEYS]) + (f", ... {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")
        parts.append(f"{len(keys)} {kind} ({shown})")
    saved = f", saved with transformers {saved_with}" if saved_with else ""
    return (f"checkpoint {checkpoint} does not load completely with transformers {installed_version()}{saved}: "
            f"{'; '.join(parts)}; refusing to run with randomly initialised weights")


def load_complete(auto_cls: type, name_or_path: str, **kwargs: Any) -> Any:
    """`auto_cls.from_pretrained` that raises UserError unless every weight of the model was loaded.

    Size mismatches are collected (not raised by transformers) so that they are reported the same way.
    """
    model, info = auto_cls.from_pretrained(name_or_path, output_loading_info=True, ignore_mismatched_sizes=True,
                                           **kwargs)
    problems = weight_problems(info)
    if problems:
        raise UserError(describe_problems(problems, name_or_path, getattr(model.config, "transformers_version", None)))
    return model


# ---- processors ---------------------------------------------------------------------------

def pil_image_processor(name: str) -> type:
    """The PIL-backed image processor class for a saved `image_processor_type` (e.g. CLIPImageProcessor)."""
    import transformers

    base = name.removesuffix("Fast").removesuffix("Pil")
    for candidate in (f"{base}Pil", base):  # 5.5+: XPil is PIL, X is torchvision; before: X is PIL
        cls = getattr(transformers, candidate, None)
        if isinstance(cls, type):
            return cls
    raise UserError(f"image processor {name} is not available in transformers {installed_version()}")


def _lenient_check(self, argument_name: str, argument: Any) -> None:
    return None


def processor_from_parts(pcls: type, **parts: Any) -> Any:
    """`pcls(**parts)` without transformers' per-part class check, on a subclass of pcls.

    The check cannot type-check a missing video processor without torchvision (and on 4.x wants
    model-specific tokenizer classes); the parts given here are the right kind by construction.
    The subclass keeps pcls's name, so saving writes `processor_class` = pcls.
    """
    sub = type(pcls.__name__, (pcls,), {"check_argument_for_proper_class": _lenient_check,
                                        "__module__": pcls.__module__, "__qualname__": pcls.__qualname__})
    if "video_processor" in _attributes(pcls):
        parts.setdefault("video_processor", None)
    return sub(**parts)


def _attributes(pcls: type) -> list[str]:
    attrs = getattr(pcls, "attributes", None)  # 4.x class attribute
    if attrs is None and hasattr(pcls, "get_attributes"):  # 5.x derives them from __init__
        attrs = pcls.get_attributes()
    return list(attrs or [])


def load_processor(path: str, default_class: str) -> Any:
    """AutoProcessor, or (without torchvision) the same processor assembled from its parts:
    tokenizer + PIL image processor, no video processor (we never feed videos)."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, AttributeError, ValueError, TypeError, OSError) as e:  # 5.0-5.17 without torchvision, among others
        first = _first_line(e)
    try:
        return _assemble_processor(path, default_class)
    except (ImportError, AttributeError, ValueError, TypeError, OSError) as e:
        raise UserError(f"cannot load the processor of {path} with transformers {installed_version()} "
                        f"(AutoProcessor: {first}; from its parts: {_first_line(e)}); if torchvision is missing: "
                        f"pip install torchvision (the build matching your torch)") from None


# 4.x numpy image processors guess the channel axis of each image array and take an RGB image 1 or 3 px
# tall, (1|3, W, 3), as channels-first: they then tile / resize a different image (40x3 px -> 4 x 1
# tiles instead of 1 x 4) with the same token count. Naming the layout of the arrays PIL gives avoids
# the guess; 5.x PIL backends accept the same keyword.
CHANNELS_LAST = {"input_data_format": "channels_last"}


def chat_without_video(processor: Any) -> Any:
    """A processor without a video processor (assembled without torchvision) whose `apply_chat_template`
    reads video settings (SmolVLM: `video_processor.num_frames`) gets the generic `ProcessorMixin` one,
    which formats image + text conversations the same way."""
    from functools import partial

    from transformers import ProcessorMixin

    if getattr(processor, "video_processor", 1) is None and \
            type(processor).apply_chat_template is not ProcessorMixin.apply_chat_template:
        processor.apply_chat_template = partial(ProcessorMixin.apply_chat_template, processor)
    return processor


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _assemble_processor(path: str, default_class: str) -> Any:
    import transformers
    from transformers import AutoTokenizer, ImageProcessingMixin, ProcessorMixin

    cfg, _ = ProcessorMixin.get_processor_dict(path)
    pcls = getattr(transformers, cfg.get("processor_class") or default_class)
    ip_cfg, _ = ImageProcessingMixin.get_image_processor_dict(path)
    ip_cls = pil_image_processor(ip_cfg.get("image_processor_type") or getattr(pcls, "image_processor_class", ""))
    image_processor = ip_cls.from_dict({k: v for k, v in ip_cfg.items() if k != "image_processor_type"})
    tokenizer = AutoTokenizer.from_pretrained(path)
    allowed = set(inspect.signature(pcls.__init__).parameters) - {"self", "image_processor", "tokenizer", "video_processor"}
    kwargs = {k: v for k, v in cfg.items() if k in allowed}
    kwargs.setdefault("chat_template", getattr(tokenizer, "chat_template", None))
    return processor_from_parts(pcls, image_processor=image_processor, tokenizer=tokenizer, **kwargs)


def optimal_tiled_canvas(image_hw: tuple[int, int], tile_hw: tuple[int, int], min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """(columns, rows) of InternVL's dynamic tiling: transformers' `get_optimal_tiled_canvas`, in
    `got_ocr2.image_processing_pil_got_ocr2` on 5.x releases with PIL processors (5.24), in
    `got_ocr2.image_processing_got_ocr2` before (4.57)."""
    import importlib

    for module in ("image_processing_pil_got_ocr2", "image_processing_got_ocr2"):
        try:
            fn = importlib.import_module(f"transformers.models.got_ocr2.{module}").get_optimal_tiled_canvas
        except (ImportError, AttributeError):
            continue
        cols, rows = fn(tuple(image_hw), tuple(tile_hw), min_tiles, max_tiles)
        return int(cols), int(rows)
    raise UserError(f"InternVL's tiling (get_optimal_tiled_canvas) is not available in transformers {installed_version()}")


# ---- configs ------------------------------------------------------------------------------

def rope_config(config_cls: type, theta: float, **extra: Any) -> dict[str, Any]:
    """RoPE keyword arguments for `config_cls`: `rope_parameters` (5.x) or `rope_theta` + `rope_scaling` (4.x).

    extra: e.g. mrope_section=[...] for Qwen2-VL's multimodal RoPE.
    """
    if "rope_parameters" in inspect.signature(config_cls.__init__).parameters:
        return {"rope_parameters": {"rope_type": "default", "rope_theta": theta, **extra}}
    out: dict[str, Any] = {"rope_theta": theta}
    if extra:
        out["rope_scaling"] = {"type": "default", "rope_type": "default", **extra}
    return out


def clip_transformer(tower: Any) -> Any:
    """A CLIP vision tower's transformer (embeddings, encoder): a `vision_model` level on 4.x-5.5, none later."""
    return getattr(tower, "vision_model", tower)


def canonical_name(param_name: str) -> str:
    """A parameter's name with the levels that differ between versions removed (CLIP's `vision_model.`)."""
    return param_name.replace(".vision_model.", ".")


# ---- portable checkpoints -----------------------------------------------------------------

PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # a 4.x class name that 5.x still resolves


def portable_weight_name(key: str) -> str:
    """Saved key -> the llava-hf hub layout (`vision_tower.vision_model.*`) that every version maps."""
    head, sep, rest = key.partition("vision_tower.")
    if sep and not head and not rest.startswith("vision_model."):
        return f"vision_tower.vision_model.{rest}"
    return key


def portable_tokenizer_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A saved tokenizer_config.json in a form 4.57 and 5.x read alike (named special tokens as a dict,
    no token_type_ids: LLaVA's forward does not take them)."""
    out = {k: v for k, v in cfg.items() if k not in ("backend", "extra_special_tokens")}
    out["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    extra = cfg.get("extra_special_tokens") or {}  # 5.x: a list (+ named tokens at the top); 4.x: a dict
    named = dict(extra) if isinstance(extra, dict) else {}
    named.update({k: out.pop(k) for k in ("image_token", "boi_token", "eoi_token", "video_token")
                  if isinstance(out.get(k), str)})
    if named:
        out["extra_special_tokens"] = named
    listed = extra if isinstance(extra, list) else []
    out["additional_special_tokens"] = sorted({*(out.get("additional_special_tokens") or []), *listed, *named.values()})
    out["model_input_names"] = ["input_ids", "attention_mask"]
    return out


def make_portable(folder: str | Path) -> None:
    """Rewrite a saved LLaVA folder (model.safetensors, tokenizer_config.json) into the portable layout."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    weights = folder / "model.safetensors"
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(weights))
    save_file({portable_weight_name(k): v for k, v in tensors.items()}, str(weights), metadata=metadata)
    tok = folder / "tokenizer_config.json"
    tok.write_text(json.dumps(portable_tokenizer_config(json.loads(tok.read_text())), indent=2) + "\n")
