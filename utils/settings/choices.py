"""Every choice a setting can take, declared once.

Each `Literal` below is the one declaration of a mode: the settings schemas (utils/settings/declarations.py)
annotate their fields with it, the compose-time checks (utils/settings/reading.py) derive their allowed
values from it, and the functions that take the mode check Python callers' values with
`check_choice`. A new mode is one entry here plus its implementation.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from utils.errors import UserError

# capture and interventions (lab/capture/station.py Strategy, llava/attention.py)
QueryMode = Literal["last_input", "generated", "all_input", "first_generated"]
ChatQueryMode = Literal["generated", "last_input"]
MaskoutMode = Literal["zero", "uniform", "visual_head"]
ModifyMode = Literal["image_reweight", "logits_scale", "visual_head"]
Steps = Literal["all", "prefill"]
VisionAggregate = Literal["mean", "rollout", "vlm_visualizer"]
# the model (llava/)
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
PromptTemplate = Literal["chat", "plain", "referseg"]
ImageAspect = Literal["auto", "crop", "pad", "anyres", "resize", "tiles"]
# the criteria and the selection (lab/criteria, lab/analysis)
ElbowMethod = Literal["kneedle", "chord", "chord_raw"]
ElbowScope = Literal["mean", "per_sample"]
ComponentWeight = Literal["mass", "area", "relu_mass"]
Connectivity = Literal[4, 8]
BottomRowRule = Literal["share", "any_cell"]
Ranking = Literal["frequency", "per_sample"]
TieBreak = Literal["s_img", "index"]
# grounding (lab/analysis/grounding.py)
Region = Literal["largest", "all"]
Geometry = Literal["layout", "stretch"]
GroundingOutput = Literal["box", "mask", "both"]
MaskEdges = Literal["smooth", "cells"]
Refine = Literal["none", "sam"]
SamPrompt = Literal["box", "points", "box+points"]
SamMultimask = Literal["auto", "best", "single"]
SamDtype = Literal["float32", "float16", "bfloat16"]
# ablation (lab/runs/conditions.py)
AnswerMatch = Literal["exact", "contains"]
# views (visualize_attention.py)
ViewMode = Literal["single", "batch", "tokens"]
TokenWeighting = Literal["plain", "vlm_visualizer"]
ReduceAxis = Literal["heads", "layers", "steps"]
VisionView = Literal["none", "mean", "rollout", "vlm_visualizer"]


def options(choice: Any) -> tuple:
    """The allowed values of a `Literal` choice, in declaration order."""
    return get_args(choice)


def describe(choice: Any) -> str:
    """`must be 4 or 8` for two numbers, else `must be one of a, b, c`."""
    opts = options(choice)
    if len(opts) == 2 and all(isinstance(o, int) for o in opts):
        return f"must be {opts[0]} or {opts[1]}"
    return f"must be one of {', '.join(str(o) for o in opts)}"


def is_choice(value: Any, choice: Any) -> bool:
    return not isinstance(value, bool) and value in options(choice)


def check_choice(key: str, value: Any, choice: Any) -> Any:
    """`value` if it is one of `choice`'s values, else a UserError naming `key` and the allowed values."""
    if not is_choice(value, choice):
        raise UserError(f"{key}={value!r} {describe(choice)}")
    return value
