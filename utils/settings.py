"""Settings checked when the config is composed, before any stage runs or any model loads.

* Keys: every key of the composed config must be a field of its schema (utils/config.py). Hydra
  rejects a misspelled `key=value` in struct mode but accepts `+key=value` (its own hint after a
  typo); we compare the composed config against the dataclasses, so `+top_kk=3` is an error too.
* Values: every numeric and enum setting is checked against `RULES`; each problem names the key
  and the allowed values, all in one line.
* Side settings: `max_image_pixels` is handed to the image loader.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from utils.errors import UserError


def _int_at_least(lo: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            return f"must be an integer >= {lo}"
        return None
    return check


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else check(v)


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}"


def _number(lo: float, hi: float = math.inf, lo_open: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
            (v > lo if lo_open else v >= lo) and v <= hi
        if ok:
            return None
        left = "(" if lo_open else "["
        right = "]" if math.isfinite(hi) else ")"
        return f"must be a finite number in {left}{lo}, {hi if math.isfinite(hi) else 'inf'}{right}"
    return check


def _int_list(lo: int = 0, nonempty: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= lo for x in v):
            return f"must be a list of integers >= {lo}"
        if nonempty and not v:
            return "must name at least one index (leave it unset for all)"
        if len(set(v)) != len(v):
            return "must not repeat an entry"
        return None
    return check


def _pairs(v: Any) -> str | None:
    if not isinstance(v, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in p)
            for p in v):
        return "must be a list of [layer, head] pairs of integers >= 0"
    return None


def _subset_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, (list, tuple)) and all(x in allowed for x in v) and len(set(v)) == len(v):
            return None
        return f"must be a list of distinct values from {', '.join(allowed)}"
    return check


def _box(v: Any) -> str | None:
    if isinstance(v, (list, tuple)) and len(v) == 4 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v) and v[2] > 0 and v[3] > 0:
        return None
    return "must be [x, y, w, h] in pixels with w, h > 0"


def _shard(v: Any) -> str | None:
    if v is None:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", str(v))
    if not m or not int(m.group(2)) >= 1 or not int(m.group(1)) < int(m.group(2)):
        return "must look like i/n with 0 <= i < n, e.g. shard=0/4"
    return None


def _device(v: Any) -> str | None:
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(v)) else "must be auto, cpu, mps, cuda or cuda:N"


# dotted key -> check; a key absent from the composed config is skipped (each entry point has its own schema)
RULES: dict[str, Callable[[Any], str | None]] = {
    "top_k": _int_at_least(1),
    "batch_size": _int_at_least(1),
    "max_new_tokens": _int_at_least(0),
    "start_index": _int_at_least(0),
    "end_index": _optional(_int_at_least(0)),
    "shard": _shard,
    "mode": _one_of("single", "batch", "tokens"),
    "layer": _optional(_int_at_least(0)),
    "head": _optional(_int_at_least(0)),
    "max_image_pixels": _int_at_least(1),
    "model.device": _device,
    "model.dtype": _one_of("auto", "float32", "float16", "bfloat16"),
    "model.prompt_template": _one_of("chat", "plain", "referseg"),
    "model.image_aspect": _one_of("auto", "crop", "pad", "anyres", "resize"),
    "strategy.query_positions": _one_of("last_input", "generated", "all_input", "first_generated"),
    "strategy.positions": lambda v: None if v is None or (isinstance(v, (list, tuple)) and v and all(
        isinstance(x, int) and not isinstance(x, bool) for x in v)) else "must be a non-empty list of integers",
    "strategy.layers": _int_list(0, nonempty=True),
    "strategy.heads": _int_list(0, nonempty=True),
    "strategy.maskout": _pairs,
    "strategy.maskout_mode": _one_of("zero", "uniform", "visual_head"),
    "strategy.modify": _pairs,
    "strategy.modify_factor": _number(0.0),
    "strategy.modify_mode": _one_of("image_reweight", "logits_scale", "visual_head"),
    "strategy.steps": _one_of("all", "prefill"),
    "selection.k": _int_at_least(1),
    "selection.exclude_layers": _int_list(0),
    "selection.elbow.method": _one_of("kneedle", "chord", "chord_raw"),
    "selection.elbow.scope": _one_of("mean", "per_sample"),
    "selection.component_weight": _one_of("mass", "area", "relu_mass"),
    "selection.connectivity": lambda v: None if v in (4, 8) and not isinstance(v, bool) else "must be 4 or 8",
    "selection.bottom_row_fraction": _number(0.0, 1.0, lo_open=True),
    "selection.bottom_row_rule": _one_of("share", "any_cell"),
    "selection.bottom_row_cell": _number(0.0, 1.0),
    "selection.mean_factor": _number(0.0),
    "selection.binarize_threshold": _number(0.0),
    "selection.ranking": _one_of("frequency", "per_sample"),
    "selection.tie_break": _one_of("s_img", "index"),
    "selection.min_keep": _int_at_least(0),
    "grounding.sigma": _optional(_number(0.0)),
    "grounding.random_draws": _int_at_least(0),
    "grounding.region": _one_of("largest", "all"),
    "grounding.geometry": _one_of("layout", "stretch"),
    "grounding.output": _one_of("box", "mask", "both"),
    "grounding.refine": _one_of("none", "sam"),
    "grounding.mask_edges": _one_of("smooth", "cells"),
    "grounding.sam.prompt": _one_of("box", "points", "box+points"),
    "grounding.sam.num_points": _int_at_least(1),
    "grounding.sam.multimask": _one_of("auto", "best", "single"),
    "grounding.sam.dtype": _one_of("float32", "float16", "bfloat16"),
    "grounding.sam.device": _device,
    "ablation.match": _one_of("exact", "contains"),
    "ablation.random_draws": _int_at_least(0),
    "ablation.maskout_mode": _one_of("zero", "uniform", "visual_head"),
    "ablation.steps": _one_of("all", "prefill"),
    "strategy.vision_aggregates": _subset_of("mean", "rollout", "vlm_visualizer"),
    "strategy.highlight_box": _optional(_box),
    "tokens.weighting": _one_of("plain", "vlm_visualizer"),
    "tokens.reduce": _subset_of("heads", "layers", "steps"),
    "tokens.layers": _int_list(0, nonempty=True),
    "tokens.heads": _int_list(0, nonempty=True),
    "tokens.max_tokens": _int_at_least(1),
    "tokens.ncols": _int_at_least(1),
    "vision.aggregate": _one_of("none", "mean", "rollout", "vlm_visualizer"),
    "report.max_samples": _int_at_least(0),
    "report.map_budget_mb": _number(0.0),
    "report.image_side": _int_at_least(16),
}
CHAT_RULES = {"query_positions": _one_of("generated", "last_input")}


def _unknown_keys(node: Any, schema: Any, prefix: str = "") -> list[str]:
    """Keys of a composed config that its dataclass schema does not declare (recursively)."""
    if not (isinstance(node, DictConfig) and dataclasses.is_dataclass(schema)):
        return []
    fields = {f.name: f for f in dataclasses.fields(schema)}
    out = []
    for key in node.keys():
        key = str(key)
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            out.append(f"{prefix}{key}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            out.extend(_unknown_keys(child, OmegaConf.get_type(child), f"{prefix}{key}."))
    return out


def _value(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        node = node[part]
    return True, OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def check_config(cfg: DictConfig) -> None:
    """Unknown keys and out-of-range values, all named in one UserError; then apply side settings."""
    from utils.config import ChatConfig

    schema = OmegaConf.get_type(cfg)
    problems = [f"unknown key {k}: not in the {getattr(schema, '__name__', 'config')} schema (utils/config.py); "
                "remove the + override" for k in _unknown_keys(cfg, schema)]
    rules = dict(RULES)
    if schema is ChatConfig:
        rules.update(CHAT_RULES)
    for key, check in rules.items():
        present, v = _value(cfg, key)
        if present:
            why = check(v)
            if why:
                problems.append(f"{key}={_show(v)} {why}")
    present, end = _value(cfg, "end_index")
    _, start = _value(cfg, "start_index")
    if present and end is not None and isinstance(start, int) and isinstance(end, int) and end < start:
        problems.append(f"end_index={end} is below start_index={start}")
    if problems:
        raise UserError("; ".join(problems))
    present, cap = _value(cfg, "max_image_pixels")
    if present:
        from utils.images import set_max_image_pixels

        set_max_image_pixels(int(cap))


def _show(v: Any) -> str:
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 60 else s[:57] + "..."
