"""The settings, declared once: frozen dataclasses, one per group, typed with the choices of
utils/settings/choices.py and carrying their value checks (`setting(..., check=...)`).

* Hydra composes the config against mutable twins of these classes (`utils.settings.hydra_twins`,
  registered by `register_configs`), so every key has a type and a misspelled key or a wrong type
  is an error naming the key (never a silent default).
* utils/settings/reading.py checks the composed config against these declarations and builds the frozen
  settings object (`settings_from_config`) once, at the edge; stages, views, the chat and the
  explorer get those objects whole (no function in lab/ reads a DictConfig).

Paths inside the repository are written `${repo:examples/...}` so they work from any cwd.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple, get_args

from omegaconf import MISSING, OmegaConf

from utils.settings import checks as C
from utils.settings.choices import (AnswerMatch, BottomRowRule, ChatQueryMode, ComponentWeight, Connectivity, Dtype, ElbowMethod,
                           ElbowScope, Geometry, ImageAspect, MaskoutMode, ModifyMode, PromptTemplate, QueryMode,
                           Ranking, ReduceAxis, Region, Steps, TieBreak, TokenWeighting, ViewMode, VisionAggregate,
                           VisionView, GroundingOutput, MaskEdges, Refine, SamPrompt, SamMultimask, SamDtype)

REPO_ROOT = Path(__file__).resolve().parents[2]  # utils/settings/declarations.py -> the repository


def _repo_path(rel: str = "") -> str:
    return str(REPO_ROOT / rel) if rel else str(REPO_ROOT)


def _run_dir(output_dir: Any, default: str) -> str:
    """Hydra's run folder: `output_dir=` when given (so nothing is written anywhere else), else `default`."""
    if output_dir:
        return os.path.abspath(os.path.expanduser(str(output_dir)))
    return default


def _run_subdir(output_dir: Any, default: str) -> Any:
    """Hydra's `.hydra` config copy: none when `output_dir=` is given (several entry points may share
    that folder and would overwrite each other's copy), else `default` inside the run folder."""
    return None if output_dir else default


if not OmegaConf.has_resolver("repo"):
    OmegaConf.register_new_resolver("repo", _repo_path)
if not OmegaConf.has_resolver("run_dir"):
    OmegaConf.register_new_resolver("run_dir", _run_dir)
if not OmegaConf.has_resolver("run_subdir"):
    OmegaConf.register_new_resolver("run_subdir", _run_subdir)


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, check: Any = None,
            decides: bool = False) -> Any:
    """A settings field whose value check (utils/settings/checks.py) travels with its declaration.

    Args:
        default: the default value (or `factory` for a settings group).
        check: `f(value) -> None | why`; fields annotated with a `Literal` choice need none (the
            compose-time check derives it from the declaration).
        decides: the field decides which heads a stage selects (a group: all its fields); a results
            table made with another value is stale (lab/report/staleness.py, `deciding_keys`).
    """
    meta: dict[str, Any] = {"check": check} if check is not None else {}
    if decides:
        meta["decides"] = True
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def deciding_keys(cls: type, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys of `cls` declared with `setting(decides=True)` (a group: its own key)."""
    import typing

    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("decides"):
            out.append(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]):
            out.extend(deciding_keys(hints[f.name], f"{prefix}{f.name}."))
    return tuple(out)


class _Checked:
    """Frozen settings that check their own values on construction (the declared checks,
    utils/settings/reading.py `own_problems`) and hold lists as tuples (hashable, immutable)."""

    def __post_init__(self) -> None:
        from utils.errors import UserError
        from utils.settings.reading import frozen_value, own_problems

        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, frozen_value(v))
        problems = own_problems(self) + _heads_per_sample_problems(self)
        if problems:
            raise UserError("; ".join(problems))


def _heads_per_sample_problems(cfg: Any) -> list[str]:
    """selection.k set against selection.ranking=per_sample, which counts each sample's own top_k heads."""
    sel, top_k = getattr(cfg, "selection", None), getattr(cfg, "top_k", None)
    if sel is None or top_k is None or sel.ranking != "per_sample" or sel.k is None or sel.k == top_k:
        return []
    return [f"selection.k={sel.k} with selection.ranking=per_sample: each sample's own top_k={top_k} heads are "
            "counted, so leave selection.k unset (or set it to top_k)"]


def heads_per_sample(sel: "SelectionConfig", top_k: int) -> int:
    """Heads taken in each sample (criterion 2's k): `selection.k` (10 when unset) with ranking=frequency,
    `top_k` with ranking=per_sample (the release's own top_k per sample; a different k is refused with the config)."""
    if sel.ranking == "per_sample":
        return int(top_k)
    return DEFAULT_K if sel.k is None else sel.k


# Upper bounds of the numeric settings (a typo such as 1e9 is refused at once instead of hanging or
# allocating for minutes); the model-dependent ones (head indices, sigma against the grid) are checked
# again once the model or the first record is known.
MAX_HEADS = 65_536  # heads of a model (LLaVA-1.5-7B has 1,024)
MAX_GRID_SIDE = 256.0  # cells per side of an image grid (LLaVA-1.5: 24; Qwen2-VL's largest: 128)
MAX_DRAWS = 1_000  # seeded random-head draws
MAX_NEW_TOKENS = 32_768
MAX_IMAGE_PIXELS = 2**32  # ~12.9 GB as 8-bit RGB

DEFAULT_K = 10  # selection.k when unset: the paper's 10 lowest-entropy heads per sample
TOP_K = 3  # localization heads used (the box, the figures, evaluate, ablate): the `top_k=` key of every entry point


def top_k_setting() -> Any:
    """`top_k`, declared once for every entry point that has it (FinderConfig, VisualizeConfig, ChatConfig)."""
    return setting(TOP_K, check=C.int_in(1, MAX_HEADS), decides=True)


@dataclass(frozen=True)
class ModelConfig(_Checked):
    """config/model/*.yaml: which checkpoint and how to feed it."""

    name: str = MISSING
    name_or_path: str = setting(MISSING, decides=True)  # hub id or local folder
    builder: Optional[str] = None  # "tiny_random": build a tiny random LLaVA into cache_dir first
    cache_dir: str = "${repo:.cache/models}"
    seed: int = setting(0, check=C.int_in(0, C.SEED_MAX))
    device: str = setting("auto", check=C.device)  # auto | cpu | cuda | cuda:N
    dtype: Dtype = "auto"
    device_map: Optional[str] = None  # passed to from_pretrained, e.g. "auto" to spread over GPUs
    prompt_template: PromptTemplate = "chat"  # chat | plain ("<image>\n{query}") | referseg (Kang et al.'s released prompt)
    image_aspect: ImageAspect = "auto"  # auto (the processor's own) | crop | pad
    system_prompt: Optional[str] = None
    missing_hint: Optional[str] = None  # said when name_or_path is a folder that does not exist (e.g. the command that builds it)


@dataclass(frozen=True)
class StrategyConfig(_Checked):
    """What to capture and how to intervene (see lab.capture.station.Strategy)."""

    query_positions: QueryMode = "last_input"
    positions: Optional[Tuple[int, ...]] = setting(None, check=C.positions)  # explicit prompt positions (overrides query_positions)
    layers: Optional[Tuple[int, ...]] = setting(None, check=C.int_list(0, nonempty=True))
    heads: Optional[Tuple[int, ...]] = setting(None, check=C.int_list(0, nonempty=True))
    maskout: Tuple[Tuple[int, ...], ...] = setting((), check=C.pairs)
    maskout_mode: MaskoutMode = "zero"  # visual_head: Bi et al.'s logits-to-0, leaks to future/padding keys
    modify: Tuple[Tuple[int, ...], ...] = setting((), check=C.pairs)
    modify_factor: float = setting(1.0, check=C.number(0.0, 1000.0))
    modify_mode: ModifyMode = "image_reweight"  # visual_head: Bi et al.; empty modify = all heads
    steps: Steps = "all"
    vision: bool = False  # also store the vision tower's token->patch matrices (LLaVA-1.5-style models)
    vision_aggregates: Tuple[VisionAggregate, ...] = tuple(get_args(VisionAggregate))
    highlight_box: Optional[Tuple[float, ...]] = setting(None, check=C.optional(C.box))  # modify_mode=visual_head: only image cells overlapping [x, y, w, h] (pixels)


@dataclass(frozen=True)
class ElbowConfig(_Checked):
    method: ElbowMethod = "kneedle"  # chord: both axes scaled to [0, 1]; chord_raw: Kang et al.'s release, unscaled axes
    scope: ElbowScope = "mean"  # mean (one curve: heads' S_img averaged over samples) | per_sample (each sample's own curve)
    include_excluded: bool = False  # put the heads of excluded layers on the curve too (the release does)


@dataclass(frozen=True)
class SelectionConfig(_Checked):
    """The paper's selection (Kang et al., CVPR 2025); every constant is an option. Also the
    per-sample criteria's settings (`lab.analysis.per_sample.analyze_sample`)."""

    k: Optional[int] = setting(None, check=C.optional(C.int_in(1, MAX_HEADS)))  # heads taken per sample (lowest spatial entropy among those above the elbow); None = 10 (ranking=frequency); ranking=per_sample takes top_k (k unset or = top_k)
    exclude_layers: Optional[Tuple[int, ...]] = setting(None, check=C.int_list(0))  # None = auto: the first round(L/16) layers ([0, 1] for 32-40 layers)
    elbow: ElbowConfig = field(default_factory=ElbowConfig)
    component_weight: ComponentWeight = "mass"  # relu_mass: component mass / all relu mass (the release)
    connectivity: Connectivity = 8
    bottom_row_filter: bool = False
    bottom_row_fraction: float = setting(0.5, check=C.number(0.0, 1.0, lo_open=True))
    grid: Optional[str] = None  # which layout grid to analyse (anyres models); None = the default
    # Variants (docs/fidelity.md); the defaults reproduce the formulas above, method=kang_release sets the release's
    mean_factor: float = setting(1.0, check=C.number(0.0, 100.0))  # B = relu(A - mean_factor * mean(A)) (the release v2: 2.0)
    binarize_threshold: float = setting(0.0, check=C.number(0.0, 1.0))  # component cells: B > binarize_threshold (the release: 0.001)
    bottom_row_rule: BottomRowRule = "share"  # share (> bottom_row_fraction of B's mass) | any_cell (a last-row cell's A > bottom_row_cell)
    bottom_row_cell: float = setting(0.05, check=C.number(0.0, 1.0))
    ranking: Ranking = "frequency"  # frequency (k per sample, counted) | per_sample (each sample's own top_k, the release)
    tie_break: TieBreak = "s_img"  # equal entropies: higher S_img first | index (layer, head order, the release's stable sort)
    min_keep: int = setting(0, check=C.int_in(0, MAX_HEADS))  # per sample: if fewer heads pass, keep this many by S_img (the release: 1)


@dataclass(frozen=True)
class SamSettings(_Checked):
    """grounding.refine=sam: SAM prompted by the combined map (llava/sam.py, lab/analysis/masks.py)."""

    name_or_path: str = "facebook/sam-vit-base"  # SAM (SamModel) or SAM 2 (Sam2Model) checkpoint: hub id or folder
    prompt: SamPrompt = "box"  # box (the map's REC box) | points (centres of the region's top cells, positive) | box+points
    num_points: int = setting(1, check=C.int_in(1, 64))  # points: the region's highest cells (the first is its peak)
    multimask: SamMultimask = "auto"  # auto (best of 3 for one point alone, else one mask) | best (SAM's top predicted IoU of 3) | single
    device: str = setting("auto", check=C.device)  # auto (cuda if available) | cpu | cuda[:i] | mps
    dtype: SamDtype = "float32"


@dataclass(frozen=True)
class GroundingConfig(_Checked):
    """Selected heads' maps -> box (lab/analysis/grounding.py) and the evaluate baselines."""

    sigma: Optional[float] = setting(None, check=C.optional(C.number(0.0, MAX_GRID_SIDE)))  # Gaussian smoothing per head in grid cells; None = 1.0 per 24 cells (the paper on 24x24); at most the grid's side (checked on the first record)
    hull: bool = False  # fill the convex hull of the largest region before taking its box
    random_draws: int = setting(5, check=C.int_in(0, MAX_DRAWS))  # random-head baseline: number of seeded draws of top_k heads
    query_row: Optional[int] = None  # which captured query row to analyse; None = the last input token
    region: Region = "largest"  # largest (8-connected region of above-mean cells) | all (box of every above-mean cell, the release)
    geometry: Geometry = "layout"  # layout (cells placed through the ImageLayout) | stretch (grid stretched over the original image, the release)
    output: GroundingOutput = "box"  # box (REC) | mask (RES: masks/ + mask metrics; rows need "mask") | both
    mask_edges: MaskEdges = "smooth"  # map-only masks: smooth (the map resampled onto the image, cut inside the region) | cells (the region's cells)
    refine: Refine = "none"  # none (the map's region is the mask) | sam (SAM prompted by the map; the REC box is the SAM mask's box)
    sam: SamSettings = field(default_factory=SamSettings)


@dataclass(frozen=True)
class AblationConfig(_Checked):
    """stage=ablate: answer accuracy with the selected heads masked out vs random heads (lab/runs/conditions.py)."""

    match: AnswerMatch = "exact"  # exact (first word(s) of the answer) | contains (the answer anywhere in it)
    random_draws: int = setting(5, check=C.int_in(0, MAX_DRAWS))  # seeded draws of as many random heads as selected
    maskout_mode: MaskoutMode = "zero"  # see strategy.maskout_mode
    steps: Steps = "all"  # see strategy.steps
    visual_heads: bool = False  # also mask the visual heads named in the run's visual_heads.json (one more condition)


@dataclass(frozen=True)
class VisualHeadsConfig(_Checked):
    """visual_heads.*: the rule that names the visual heads (Bi et al., CVPR 2025) after a selection
    (lab/analysis/visual_heads.py `name_visual_heads`, docs/visual_heads.md)."""

    min_ratio: float = setting(0.5, check=C.number(0.0, 1.0, lo_open=True))  # a sample counts a head when its image share (S_img) is at least this (0.5: more on the image than on the text)
    min_share: float = setting(0.5, check=C.number(0.0, 1.0, lo_open=True))  # named when it counts in at least this share of the samples
    k: Optional[int] = setting(None, check=C.optional(C.int_at_least(1)))  # keep the k with the highest counts (the release's head_num); None = every head that passes
    global_below: float = setting(0.15, check=C.number(0.0, 1.0))  # kind "global" (reads the whole image) when its mean concentration is below this; else "focused"


@dataclass(frozen=True)
class ReportConfig(_Checked):
    """index.html of a run folder: the offline explorer (lab/report/). Caps keep big runs light."""

    max_samples: int = setting(1000, check=C.int_in(0, 1_000_000))  # samples listed in the page (first N records by name; 0 = run summary only)
    map_budget_mb: float = setting(8.0, check=C.number(0.0, 4096.0))  # 8-bit per-head maps: samples carry every head's map until this is spent, then the selected heads' only
    image_side: int = setting(256, check=C.int_in(16, 4096))  # longest side (px) of the image thumbnails embedded in the page


@dataclass(frozen=True)
class FinderConfig(_Checked):
    """localization_heads_finder.py"""

    stage: str = "batch"
    method_name: str = setting("paper", decides=True)  # set by the method= group (config/method/): paper | kang_release
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    selection: SelectionConfig = setting(factory=SelectionConfig, decides=True)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    visual_heads: VisualHeadsConfig = field(default_factory=VisualHeadsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    image_file: Optional[str] = None
    query: Optional[str] = None
    query_file: Optional[str] = None  # UTF-8 text file holding the query (instead of query=)
    save_id: Optional[str] = None
    attention_file: Optional[str] = None
    attention_dir: Optional[str] = setting(None, decides=True)
    heads_file: Optional[str] = None
    output_dir: Optional[str] = None
    data_file: str = "${repo:examples/toy/toy_grounding.jsonl}"
    top_k: int = top_k_setting()
    batch_size: int = setting(8, check=C.int_in(1, 4096))
    max_new_tokens: int = setting(8, check=C.int_in(0, MAX_NEW_TOKENS))
    visualize_batch: bool = False
    show_plot: bool = False
    show_components: bool = True
    overwrite: bool = False
    allow_partial: bool = False  # stage=select over an incomplete run: allowed, missing rows counted (lab/records/folder.py)
    reselect: bool = False  # stage=evaluate / stage=ablate: select the heads again though the folder has a heads.json (kept beside it)
    start_index: int = setting(0, check=C.int_at_least(0))
    end_index: Optional[int] = setting(None, check=C.optional(C.int_at_least(0)))
    shard: Optional[str] = setting(None, check=C.shard)  # "i/n": this process takes rows i, i+n, i+2n, ...
    seed: int = setting(0, check=C.int_in(0, C.SEED_MAX))
    max_image_pixels: int = setting(100_000_000, check=C.int_in(1, MAX_IMAGE_PIXELS))  # larger images are refused (per row in a batch); utils/images.py


@dataclass(frozen=True)
class TokensConfig(_Checked):
    """visualize_attention.py mode=tokens: which generated tokens, layers, heads, and how to reduce."""

    steps: Any = "all"  # all | [t, ...] | "a:b" (end excluded); step t = the query that produced token t
    layers: Optional[Tuple[int, ...]] = setting(None, check=C.int_list(0, nonempty=True))  # model layer indices (None = all captured)
    heads: Optional[Tuple[int, ...]] = setting(None, check=C.int_list(0, nonempty=True))  # model head indices (None = all captured)
    reduce: Tuple[ReduceAxis, ...] = ("heads", "layers")  # axes to average: heads, layers, steps
    weighting: TokenWeighting = "plain"  # vlm_visualizer: per layer, zero the first-token column, renormalise
    max_tokens: int = setting(24, check=C.int_in(1, 4096))  # panels drawn (all maps are saved)
    ncols: int = setting(8, check=C.int_in(1, 64))  # panels per figure row


@dataclass(frozen=True)
class VisionViewConfig(_Checked):
    """visualize_attention.py mode=tokens: combine with the vision tower's token->patch matrix."""

    aggregate: VisionView = "none"  # needs a record with vision matrices unless none


@dataclass(frozen=True)
class VisualizeConfig(_Checked):
    """visualize_attention.py: views of saved records (no model needed)."""

    mode: ViewMode = "single"
    tokens: TokensConfig = field(default_factory=TokensConfig)
    vision: VisionViewConfig = field(default_factory=VisionViewConfig)
    model: ModelConfig = field(default_factory=ModelConfig)  # unused by the views; kept so model= works alike
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    attention_file: Optional[str] = None
    attention_dir: Optional[str] = None  # mode=batch: a folder of records (default: <data_file dir>/...)
    data_file: Optional[str] = None  # mode=batch: JSONL whose ids name records in attention_dir
    heads_file: Optional[str] = None
    layer: Optional[int] = setting(None, check=C.optional(C.int_in(0, MAX_HEADS - 1)))
    head: Optional[int] = setting(None, check=C.optional(C.int_in(0, MAX_HEADS - 1)))
    top_k: int = top_k_setting()
    show_components: bool = False
    show_plot: bool = False
    output_dir: Optional[str] = None
    max_image_pixels: int = setting(100_000_000, check=C.int_in(1, MAX_IMAGE_PIXELS))  # larger images are refused (utils/images.py)


@dataclass(frozen=True)
class ChatConfig(_Checked):
    """cli_llava.py: one `query=` on `image_file=`, or an interactive chat (`cli_mode=true`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    cli_mode: bool = False
    query: Optional[str] = None
    query_file: Optional[str] = None  # UTF-8 text file holding the query (instead of query=)
    image_file: Optional[str] = None
    heads_file: Optional[str] = None  # heads to overlay (heads.json); None = the record's own top heads
    top_k: int = top_k_setting()
    max_new_tokens: int = setting(64, check=C.int_in(0, MAX_NEW_TOKENS))
    query_positions: ChatQueryMode = "generated"  # what the saved record captures
    save_id: Optional[str] = None
    output_dir: Optional[str] = None
    stream: bool = True  # print the answer token by token
    token_figures: bool = True  # also a per-token overlay strip + image-share curve (query_positions=generated)
    vision: Optional[bool] = None  # store the vision tower's token->patch matrices; None = when the model supports it
    show_plot: bool = False
    show_components: bool = False
    max_image_pixels: int = setting(100_000_000, check=C.int_in(1, MAX_IMAGE_PIXELS))  # larger images are refused (utils/images.py)


def excluded_layers(layers, num_layers: int) -> list[int]:
    """Layers left out of selection. The paper drops the first 2 of LLaVA-1.5's 32 (their attention is
    spread evenly over the image); `None` scales that to the model's depth: round(L / 16) layers
    (2 for 24-40 layers, 1 for 8-23, 0 for the 4-layer toy model)."""
    if layers is None:
        return list(range(int(num_layers / 16 + 0.5)))
    return [int(x) for x in layers]


def smoothing_sigma(sigma, grid_side: int) -> float:
    """The paper smooths with sigma 1.0 on LLaVA-1.5's 24x24 grid; `None` keeps that scale relative to the
    image for other grids (0.25 cells on a 6x6 grid, 2.25 on a 54x54 one). A `sigma` above the grid's
    side is refused (UserError): the map would be smoothed flat, and the filter's work grows with sigma."""
    if sigma is not None and float(sigma) > grid_side:
        from utils.errors import SettingError

        raise SettingError(f"grounding.sigma={float(sigma):g} cells is more than the grid's side ({grid_side} cells): "
                        f"must be at most {grid_side} for this model (unset: {grid_side / 24.0:g}, 1 per 24 cells)")
    return float(sigma) if sigma is not None else grid_side / 24.0


def register_configs() -> None:
    """Register the schemas (idempotent); entry points call this before `hydra.main` runs."""
    from hydra.core.config_store import ConfigStore

    from utils.settings.hydra_twins import hydra_schema

    cs = ConfigStore.instance()
    cs.store(name="finder_schema", node=hydra_schema(FinderConfig))
    cs.store(name="chat_schema", node=hydra_schema(ChatConfig))
    cs.store(name="visualize_schema", node=hydra_schema(VisualizeConfig))
