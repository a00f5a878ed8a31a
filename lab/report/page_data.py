"""The explorer page's data contract: the JSON blob `#lh-data` that `lab.report.rundata.build_run_data`
writes and the page's script (lab/report/js/) reads, described once as TypedDicts (`PageData` at the top).

A key the page may lack is `NotRequired`; a value that may be JSON null is `X | None`. Blocks that are
a stage's own file, shown as they are (metrics.json, ablation.json, run_config.json, heads.json's
settings), are `dict[str, Any]`: their shape is their stage's. `contract_problems(data)` checks a blob
against the contract (tests/test_report_contract.py runs it on the toy runs' pages); a field added to
the blob without a line here is a problem, so this file stays the one description.

To give the page a new block (a panel): add its TypedDict here and its key to `PageData`, fill it in
`build_run_data`, and draw it in a new `lab/report/js/panel_<name>.js` (lab/report/page.py `SCRIPTS`).
"""


import types
import typing
from typing import Any, NotRequired, TypedDict, Union


class Table16(TypedDict):
    """A float table, base64 little-endian float16 (`f16`) or float32 (`f32`), row-major `shape`."""

    f16: NotRequired[str]
    f32: NotRequired[str]
    shape: list[int]


class Maps8(TypedDict):
    """8-bit maps (lab/report/encode.py `quantize_maps`): value = q / 255 * scale[map]; shape (..., V)."""

    q: str  # base64 uint8
    scale: str  # base64 float32, one per map
    shape: list[int]


class CombinedMap(Maps8):
    grid: str  # the grid it lives on
    sigma: float  # Gaussian smoothing, in cells


class HeadMaps(Maps8):
    level: str  # "full" | "row" | "selected" (report.map_budget_mb)
    rows: list[int]  # the query rows stored
    heads: NotRequired[list[list[int]]]  # level "selected": the (layer, head) axes stored


class TokenMaps(TypedDict):
    labels: list[str]
    all: Maps8
    selected: NotRequired[Maps8]
    weighted: NotRequired[Maps8]
    vision: NotRequired[Maps8]
    share: NotRequired[list[float]]  # image share of each generated token


class GridData(TypedDict):
    name: str
    rows: int
    cols: int
    box: list[float]  # (x0, y0, x1, y1) in original-image pixels
    token_index: list[int]  # per cell (row-major): its image token, -1 none


class Sample(TypedDict):
    """One listed record (lab/report/samples.py `sample_data`)."""

    id: str
    prompt: str | None
    answer: str | None
    gt_answer: Any  # the data file's answer (a string, a number ...) or None
    group: Any
    gt_box: list[float] | None  # (x, y, w, h)
    image: str  # data: URL
    image_found: bool
    image_path: str | None
    image_size: list[int]
    aspect: str
    grid: str
    grids: NotRequired[list[GridData]]  # absent: `layouts[layout]`
    layout: NotRequired[int]  # index into PageData.layouts
    query_mode: str
    row: int
    row_labels: list[str]
    s_img: Table16  # (L, H)
    entropy: Table16
    correct: NotRequired[bool]
    heads: NotRequired[list[list[int]]]  # the selected heads used for this sample
    sel_entropy: NotRequired[float]
    combined: NotRequired[CombinedMap]
    pred_box: NotRequired[list[float]]
    map_box: NotRequired[list[float]]  # grounding.refine=sam: the map's own box (pred_box is then the SAM mask's)
    box_source: NotRequired[str]  # said when pred_box is not the map's box
    peak: NotRequired[list[float]]
    iou: NotRequired[float]
    hit: NotRequired[bool]
    note: NotRequired[str]
    maps: HeadMaps
    tokens: NotRequired[TokenMaps]
    ablation: NotRequired[dict[str, Any]]  # this sample's ablate answers
    chosen: NotRequired[list[int]]  # flat L*H indices among its k lowest-entropy eligible heads
    gt_mask: NotRequired[str]  # data: URL (stage=evaluate grounding.output=mask|both)
    pred_mask: NotRequired[str]


class Summary(TypedDict, total=False):
    model_id: str
    model_type: str
    num_layers: int
    num_heads: int
    layers: list[int]
    heads: list[int]
    grid: str
    aspect: str
    query_mode: str
    prompt_template: str | None
    records: int
    listed: int
    tool_version: str | None


class Failure(TypedDict):
    id: str
    line: int | None
    reason: str


class SelectedHead(TypedDict, total=False):
    layer: int
    head: int
    frequency: int
    frequency_ratio: float
    mean_s_img: float | None
    mean_entropy: float | None


class HeadsBlock(TypedDict, total=False):
    selected: list[SelectedHead]
    ranked: list[SelectedHead]
    threshold: float | None
    settings: dict[str, Any]
    n_samples: int | None
    source: str


class Elbow(TypedDict, total=False):
    values: list[float]
    threshold: float
    knee_index: int | None
    method: str | None


class GridMean(TypedDict, total=False):
    source: str
    n_samples: int
    s_img: Table16
    entropy: Table16
    frequency: Table16
    eligible: list[int]
    selected: list[int]
    excluded_layers: list[int]
    n_heads_axis: int
    elbow: Elbow


class Stale(TypedDict):
    sentence: str  # on the page
    console: str  # printed by write_explorer


class VisualHead(TypedDict):
    """One named visual head (lab/analysis/visual_heads.py `name_visual_heads`), model indices."""

    layer: int
    head: int
    rank: int
    count: int  # samples in which its S_img >= visual_heads.min_ratio
    share: float
    ratio: float  # mean S_img
    concentration: float | None
    kind: str  # localization | global | focused


class VisualGroup(TypedDict):
    n_samples: int
    heads: list[VisualHead]


class VisualHeadsBlock(TypedDict):
    """visual_heads.json's "named" block as stage=select wrote it (docs/visual_heads.md)."""

    rule: str
    settings: dict[str, Any]
    n_samples: int
    heads: list[VisualHead]
    by_group: dict[str, VisualGroup]


class PageData(TypedDict):
    """The whole blob."""

    title: str
    summary: Summary
    failures: list[Failure]
    configs: dict[str, dict[str, Any]]  # run_config.json: stage label -> composed config
    heads: HeadsBlock
    settings_source: str
    grid_mean: GridMean
    metrics: dict[str, Any] | None  # metrics.json as stage=evaluate wrote it
    ablation: dict[str, Any] | None  # ablation.json
    visual_heads: VisualHeadsBlock | None  # visual_heads.json "named" (None: no file, or one written before the rule)
    stale: dict[str, Stale]  # "metrics" / "ablation": a table not about the current heads.json
    answer_match: str
    samples: list[Sample]
    layouts: list[list[GridData]]  # shared grids, by Sample.layout
    files: list[str]  # run-folder files the page links
    notes: list[str]


def contract_problems(value: Any, kind: Any = PageData, where: str = "data") -> list[str]:
    """Where `value` (parsed JSON) breaks the contract `kind`: missing or unknown keys, wrong types.

    Args:
        value: the page's blob (`json.loads` of `#lh-data`), or a part of it.
        kind: the TypedDict or type it should be.
        where: the path shown in the problems (`data.samples[3].maps`).
    """
    if kind is Any:
        return []
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        tries = [contract_problems(value, a, where) for a in args]
        return [] if any(not t for t in tries) else min(tries, key=len)
    if kind is type(None):
        return [] if value is None else [f"{where}: {type(value).__name__}, expected null"]
    if typing.is_typeddict(kind):
        return _dict_problems(value, kind, where)
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, expected a list"]
        return [p for i, v in enumerate(value) for p in contract_problems(v, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, expected an object"]
        return [p for k, v in value.items() for p in contract_problems(v, args[1], f"{where}.{k}")]
    ok = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}[kind]
    if isinstance(value, ok) and (kind is bool or not isinstance(value, bool)):
        return []
    return [f"{where}: {type(value).__name__} {value!r:.40}, expected {kind.__name__}"]


def _dict_problems(value: Any, kind: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {type(value).__name__}, expected an object ({kind.__name__})"]
    hints = typing.get_type_hints(kind)
    out = [f"{where}.{k}: missing ({kind.__name__})" for k in sorted(kind.__required_keys__ - value.keys())]
    out += [f"{where}.{k}: not in the contract ({kind.__name__}, lab/report/page_data.py)" for k in value if k not in hints]
    for k, v in value.items():
        if k in hints:
            out += contract_problems(v, hints[k], f"{where}.{k}")
    return out
