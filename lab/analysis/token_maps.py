"""Generation-time attention: per generated token, where on the image the model looks.

Records captured with `strategy.query_positions=generated` hold `image_attention[T, L, H, V]`:
row t is the query that produced generated token t (`rec.meta.generated_tokens[t]`; t = 0 is the
prompt's last token, t >= 1 the generated token t-1 fed back in). This module reduces that array
(model-agnostic numpy; no model needed) and draws it:

* `reduce_token_maps`: chosen steps / layers / heads (or explicit (layer, head) pairs), mean over
  any of heads / layers / steps, with a weighting:
  - `plain`: the raw attention probabilities (the LLaVA XAI toolkit's reductions);
  - `vlm_visualizer`: VLM-Visualizer's `aggregate_llm_attention`: per layer (per head when heads
    are kept, per pair with `pairs=`) the head-mean attention row with the first prompt token's
    column set to 0 and renormalised to sum 1 over the remaining keys, i.e. divided by
    `1 - a[first]`; then the plain mean over the other axes. Needs the record's `first_attention`.
* `image_share`: the share of each generated token's attention that lands on image tokens;
* `combine_vision`: the image-token weights pushed through the vision tower's `[V, P]`
  token->patch matrix (stored in records with `strategy.vision=true`);
* `token_view`: all of the above for one record in one call (what `visualize_attention.py
  mode=tokens` and the run explorer show); the PNGs of these maps are `lab.figures.token_figures`.

Indices passed as `layers` / `heads` / `pairs` to `reduce_token_maps` are indices on the array's
L / H axes; the `record_*` helpers and `token_view` take model indices and map them through
`rec.meta.layers` / `rec.meta.heads`. Formulas and conventions: docs/tokens.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from utils.settings.choices import ReduceAxis, TokenWeighting, VisionView, check_choice, options
from utils.errors import UserError
from utils.contracts.layout import ImageLayout, square_grid_layout

Axis = ReduceAxis  # the one declaration of the axes (utils/settings/choices.py)
_AXES = {"steps": 0, "layers": 1, "heads": 2}  # each axis's position in image_attention [T, L, H, V]
WEIGHTINGS = options(TokenWeighting)
VISION_VIEWS = options(VisionView)


def _check(att: np.ndarray) -> np.ndarray:
    a = np.asarray(att)
    if a.ndim != 4:
        raise ValueError(f"expected image_attention [T, L, H, V], got shape {a.shape}")
    return a


def _pick(a: np.ndarray, axis: int, idx: Sequence[int] | None, name: str) -> np.ndarray:
    if idx is None:
        return a
    idx = [int(i) for i in idx]
    n = a.shape[axis]
    bad = [i for i in idx if not -n <= i < n]
    if bad or not idx:
        raise ValueError(f"{name}={idx}: need a non-empty list of indices in 0..{n - 1}")
    return np.take(a, idx, axis=axis)


def parse_steps(spec: Any, num_steps: int) -> list[int]:
    """Generation steps from "all" / None, an int, a list of ints, or a range "a:b" / "a:b:c"
    (Python slice: end excluded, negatives count from the end). Returns indices in 0..T-1."""
    T = int(num_steps)
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(T))
    if isinstance(spec, str) and ":" in spec:
        parts = spec.split(":")
        try:
            if len(parts) > 3:
                raise ValueError
            sl = slice(*[int(p) if p.strip() else None for p in parts])
        except ValueError:
            raise ValueError(f"steps={spec!r}: a range is start:stop[:step] with integers, e.g. 0:5") from None
        out = list(range(T))[sl]
        if not out:
            raise ValueError(f"steps={spec!r} selects no step of the {T} generated tokens (0..{T - 1})")
        return out
    if isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and spec.strip().lstrip("-").isdigit()):
        spec = [int(spec)]
    try:
        vals = [int(v) for v in spec]
    except (TypeError, ValueError):
        raise ValueError(f"steps={spec!r}: use all, a list of step indices or a range like 0:5") from None
    bad = [v for v in vals if not -T <= v < T]
    if bad or not vals:
        raise ValueError(f"steps={vals}: need a non-empty list of steps in 0..{T - 1} (the {T} generated tokens)")
    out = [v % T for v in vals]
    if len(set(out)) != len(out):
        raise ValueError(f"steps={vals} names a step twice")
    return out


def check_axes(over: Iterable[Any], key: str = "tokens.reduce") -> tuple:
    """`over` as a tuple when every entry is an axis of `ReduceAxis`, else a UserError naming `key`
    and the allowed axes (the one check, used by `reduce_token_maps` and `token_view`)."""
    over = tuple(over)
    for axis in over:
        check_choice(key, axis, ReduceAxis)
    return over


def reduce_token_maps(
    att: np.ndarray,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    over: Iterable[Axis] = ("heads", "layers"),
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    normalize: bool = False,
    steps: Sequence[int] | None = None,
    weighting: str = "plain",
    first: np.ndarray | None = None,
    zero_index: Sequence[int] = (),
) -> np.ndarray:
    """Mean of `att[T, L, H, V]` over the axes named in `over`, on the chosen steps / layers / heads.

    layers / heads / steps: indices on the L / H / T axes (None = all). pairs: explicit (layer, head)
    pairs instead (e.g. the selected heads); they form one axis K that "heads" or "layers" in `over`
    averages. The result keeps the other axes in order, e.g. over=("heads", "layers") -> [T, V],
    over=("heads",) -> [T, L', V], over=("steps", "heads", "layers") -> [V].
    weighting: "plain" or "vlm_visualizer" (module docstring); the latter needs `first[T, L, H]`,
    the attention on the first prompt token; `zero_index`: V indices that are that first token
    (set to 0 like its column; empty unless the prompt starts with an image token).
    A unit whose whole attention is on the first token contributes a zero map (their code: NaN).
    normalize: divide each resulting map by its sum over V (a distribution over the image; an
    all-zero map stays zero).
    """
    a = _check(att).astype(np.float64, copy=False)
    over = check_axes(over)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r}: use {' or '.join(WEIGHTINGS)}")
    f = None
    if weighting == "vlm_visualizer":
        if first is None:
            raise ValueError("weighting=vlm_visualizer needs first= (the attention on the first token, [T, L, H])")
        f = np.asarray(first, dtype=np.float64)
        if f.shape != a.shape[:3]:
            raise ValueError(f"first has shape {f.shape}, expected {a.shape[:3]} (T, L, H)")
        if len(zero_index):
            a = a.copy()
            a[..., list(zero_index)] = 0.0
    a = _pick(a, 0, steps, "steps")
    f = None if f is None else _pick(f, 0, steps, "steps")
    if pairs is not None:
        if layers is not None or heads is not None:
            raise ValueError("give pairs= or layers=/heads=, not both")
        if not len(pairs):
            raise ValueError("pairs= is empty")
        L, H = a.shape[1:3]
        bad = [p for p in pairs if not (0 <= int(p[0]) < L and 0 <= int(p[1]) < H)]
        if bad:
            raise ValueError(f"pairs {bad} outside the array's {L} layers x {H} heads")
        li = np.array([int(p[0]) for p in pairs])
        hi = np.array([int(p[1]) for p in pairs])
        a = a[:, li, hi]  # (T, K, V)
        if f is not None:
            a = _renormalise(a, f[:, li, hi])  # per pair
        axes = []
        if "steps" in over:
            axes.append(0)
        if "heads" in over or "layers" in over:
            axes.append(1)
    else:
        a = _pick(a, 1, layers, "layers")
        a = _pick(a, 2, heads, "heads")
        if f is not None:
            f = _pick(_pick(f, 1, layers, "layers"), 2, heads, "heads")
            if "heads" in over:  # renormalise the head mean of each layer, as VLM-Visualizer does
                a, f = a.mean(2, keepdims=True), f.mean(2, keepdims=True)  # (T, L', 1, V), (T, L', 1)
            a = _renormalise(a, f)
        axes = sorted(_AXES[o] for o in set(over))
    out = a.mean(axis=tuple(axes)) if axes else a
    if normalize:
        s = out.sum(-1, keepdims=True)
        out = np.divide(out, s, out=np.zeros_like(out), where=s > 0)
    return out


def _renormalise(a: np.ndarray, first: np.ndarray) -> np.ndarray:
    """a[..., V] / (1 - first[...]): the row renormalised over all keys but the first one."""
    den = (1.0 - first)[..., None]
    return np.divide(a, den, out=np.zeros_like(a), where=den > 0)


def image_share(
    att: np.ndarray,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    steps: Sequence[int] | None = None,
    weighting: str = "plain",
    first: np.ndarray | None = None,
    zero_index: Sequence[int] = (),
) -> np.ndarray:
    """[T]: for each generated token, the attention mass on image tokens (sum over V), averaged
    over the chosen heads and layers (or pairs). 1 = the query looked only at the image."""
    return reduce_token_maps(att, layers, heads, over=("heads", "layers"), pairs=pairs, steps=steps,
                             weighting=weighting, first=first, zero_index=zero_index).sum(-1)


def combine_vision(values: Any, matrix: Any) -> np.ndarray:
    """[..., P]: image-token weights `[..., V]`, each map divided by its sum (VLM-Visualizer's
    `w / w.sum()`), times the vision tower's token->patch matrix `[V, P]`. Each result sums to 1
    (an all-zero map stays zero)."""
    w = np.asarray(values, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    if w.shape[-1] != m.shape[0]:
        raise ValueError(f"{w.shape[-1]} image-token weights but the matrix maps {m.shape[0]} tokens")
    s = w.sum(-1, keepdims=True)
    w = np.divide(w, s, out=np.zeros_like(w), where=s > 0)
    return w @ m


# ---- records: model indices -> axes ------------------------------------------------------------
def _require_generated(rec: Any) -> None:
    if rec.meta.query_mode != "generated":
        raise UserError(f"{rec.path}: captured with query_positions={rec.meta.query_mode}; per-token maps need "
                        "strategy.query_positions=generated")
    if rec.image_attention.shape[0] == 0:
        raise UserError(f"{rec.path}: no generated token was captured")


def _axes(values: Sequence[int] | None, have: Sequence[int], name: str, rec: Any) -> list[int] | None:
    if values is None:
        return None
    pos = {v: i for i, v in enumerate(have)}
    missing = [v for v in values if v not in pos]
    if missing:
        raise UserError(f"{rec.path}: {name} {missing} not captured in this record (captured: {list(have)})")
    return [pos[v] for v in values]


def record_steps(rec: Any, steps: Any = None) -> list[int]:
    """`parse_steps` on a record's generated rows, with errors naming the record."""
    try:
        return parse_steps(steps, rec.image_attention.shape[0])
    except ValueError as e:
        raise UserError(f"{rec.path}: {e}") from None


def _weighting_args(rec: Any, weighting: str) -> dict:
    if weighting not in WEIGHTINGS:
        raise UserError(f"weighting={weighting!r} is not valid: use {' or '.join(WEIGHTINGS)}")
    if weighting == "plain":
        return {}
    if getattr(rec, "first_attention", None) is None:
        raise UserError(f"{rec.path}: weighting={weighting} needs the attention on the first prompt token, which this "
                        "record lacks (written before it was captured); collect it again")
    zero = [i for i, p in enumerate(rec.layout.token_positions) if p == 0]
    return {"weighting": weighting, "first": rec.first_attention, "zero_index": zero}


def record_token_maps(rec: Any, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                      over: Iterable[Axis] = ("heads", "layers"), *,
                      pairs: Sequence[tuple[int, int]] | None = None, normalize: bool = False,
                      steps: Any = None, weighting: str = "plain") -> np.ndarray:
    """`reduce_token_maps` of a record captured with query_positions=generated, in model indices.

    steps: None / "all", a list, or a range "a:b" (see `parse_steps`); weighting: plain | vlm_visualizer."""
    _require_generated(rec)
    m = rec.meta
    st = None if steps is None else record_steps(rec, steps)
    kw = _weighting_args(rec, weighting)
    if pairs is not None:
        li = _axes([p[0] for p in pairs], m.layers, "layers", rec)
        hi = _axes([p[1] for p in pairs], m.heads, "heads", rec)
        return reduce_token_maps(rec.image_attention, over=over, pairs=list(zip(li, hi)), normalize=normalize,
                                 steps=st, **kw)
    return reduce_token_maps(rec.image_attention, _axes(layers, m.layers, "layers", rec),
                             _axes(heads, m.heads, "heads", rec), over=over, normalize=normalize, steps=st, **kw)


def record_image_share(rec: Any, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None, *,
                       pairs: Sequence[tuple[int, int]] | None = None, steps: Any = None,
                       weighting: str = "plain") -> np.ndarray:
    return record_token_maps(rec, layers, heads, pairs=pairs, steps=steps, weighting=weighting).sum(-1)


def record_vision_matrix(rec: Any, aggregate: str) -> np.ndarray:
    """The record's `[V, P]` token->patch matrix of the vision tower for `aggregate`."""
    if aggregate not in VISION_VIEWS[1:]:
        raise UserError(f"vision.aggregate={aggregate!r} is not valid: use {', '.join(VISION_VIEWS)}")
    have = getattr(rec, "vision", None) or {}
    if aggregate not in have:
        raise UserError(f"{rec.path}: no vision-tower matrix {aggregate!r} in this record (it holds: "
                        f"{', '.join(sorted(have)) or 'none'}); collect with strategy.vision=true (cli_llava.py "
                        "stores it by default) or use vision.aggregate=none")
    return np.asarray(have[aggregate])


def patch_layout(rec: Any) -> ImageLayout:
    """The vision tower's patch grid on the original image (tokens = patches, P cells row-major)."""
    vm = rec.meta.vision
    rows, cols = int(vm["patch_rows"]), int(vm["patch_cols"])
    if rows != cols:
        raise UserError(f"{rec.path}: vision patch grid {rows}x{cols} is not square")
    box = tuple(vm.get("box") or rec.layout.grid().box)
    return square_grid_layout(rec.layout.image_size, range(rows * cols), rows, box, rec.layout.aspect, name="patches")


def record_vision_maps(rec: Any, values: Any, aggregate: str) -> np.ndarray:
    """`[..., rows_p, cols_p]`: image-token weights `[..., V]` (e.g. `record_token_maps(...)`) through
    the record's vision matrix (`combine_vision`), on the patch grid."""
    matrix = record_vision_matrix(rec, aggregate)
    return patch_layout(rec).to_grid(combine_vision(values, matrix))


def token_labels(rec: Any) -> list[str]:
    """One label per captured row: the generated token (falls back to t0, t1, ... if missing)."""
    toks = list(rec.meta.generated_tokens)
    T = rec.image_attention.shape[0]
    return [toks[t] if t < len(toks) else f"t{t}" for t in range(T)]


# ---- one call for a view -----------------------------------------------------------------------
@dataclass
class TokenView:
    """The numbers of one per-token view of a record.

    values `[*lead, V]` (per image token) and maps `[*lead, rows, cols]` (token grid): the LLM's
    attention on the image after the selection, weighting and reductions; image_maps
    `[*lead, rows_p, cols_p]` (patch grid, each map sums to 1) when a vision aggregate is on;
    shares `[S]`: per selected step, the attention on the image (mean over the chosen layers and
    heads, same weighting). `axes` names the lead axes (a subset of steps, layers, heads, pairs, in
    that order) and `axis_values` their model indices / step numbers.
    """

    values: np.ndarray
    maps: np.ndarray
    image_maps: np.ndarray | None
    shares: np.ndarray
    steps: list[int]
    labels: list[str]
    axes: list[str]
    axis_values: dict[str, list]
    layout: ImageLayout
    patch_layout: ImageLayout | None
    settings: dict[str, Any] = field(default_factory=dict)

    def panels(self, which: str = "maps") -> tuple[np.ndarray, list[str]]:
        """`[N, r, c]` maps (or image_maps) with one label per panel, lead axes flattened in order."""
        arr = self.maps if which == "maps" else self.image_maps
        if arr is None:
            raise ValueError("no image_maps in this view (vision aggregate none)")
        lead = arr.shape[:-2]
        names: list[list[str]] = []
        for ax in self.axes:
            vals = self.axis_values[ax]
            if ax == "steps":
                names.append([f"{t}: {self.labels[i]}" for i, t in enumerate(vals)])
            elif ax == "pairs":
                names.append([f"L{l}H{h}" for l, h in vals])
            else:
                names.append([f"{ax[0].upper()}{v}" for v in vals])
        labels = []
        for idx in np.ndindex(*lead) if lead else [()]:
            parts = [names[k][i] for k, i in enumerate(idx)]
            labels.append(" ".join(parts) if parts else f"mean of {len(self.steps)} step(s)")
        return arr.reshape(-1, *arr.shape[-2:]), labels


def token_view(rec: Any, *, steps: Any = None, layers: Sequence[int] | None = None,
               heads: Sequence[int] | None = None, pairs: Sequence[tuple[int, int]] | None = None,
               reduce: Iterable[Axis] = ("heads", "layers"), weighting: str = "plain", vision: str = "none",
               grid: str | None = None) -> TokenView:
    """Everything `visualize_attention.py mode=tokens` (and the explorer's per-token slider) shows.

    steps: all / list / "a:b"; layers, heads, pairs: model indices (None = all captured);
    reduce: axes to average; weighting: plain | vlm_visualizer; vision: none | mean | rollout |
    vlm_visualizer (needs the record's vision matrices)."""
    reduce = check_axes(reduce)
    if vision not in VISION_VIEWS:
        raise UserError(f"vision.aggregate={vision!r} is not valid: use {', '.join(VISION_VIEWS)}")
    _require_generated(rec)
    st = record_steps(rec, steps)
    kw = dict(pairs=pairs, steps=st, weighting=weighting)
    values = record_token_maps(rec, layers, heads, over=reduce, **kw)
    shares = record_token_maps(rec, layers, heads, over=("heads", "layers"), **kw).sum(-1)
    labels_all = token_labels(rec)
    axes: list[str] = [] if "steps" in reduce else ["steps"]
    axis_values: dict[str, list] = {"steps": st}
    if pairs is not None:
        if "heads" not in reduce and "layers" not in reduce:
            axes.append("pairs")
        axis_values["pairs"] = [(int(l), int(h)) for l, h in pairs]
    else:
        for ax, chosen, have in (("layers", layers, rec.meta.layers), ("heads", heads, rec.meta.heads)):
            axis_values[ax] = [int(v) for v in (chosen if chosen is not None else have)]
            if ax not in reduce:
                axes.append(ax)
    lay = rec.layout
    image_maps, play = None, None
    if vision != "none":
        image_maps = record_vision_maps(rec, values, vision)
        play = patch_layout(rec)
    settings = {"steps": st, "layers": axis_values.get("layers"), "heads": axis_values.get("heads"),
                "pairs": axis_values.get("pairs"), "reduce": list(reduce), "weighting": weighting,
                "vision_aggregate": vision, "grid": lay.grid(grid).name}
    return TokenView(values=values, maps=lay.to_grid(values, grid), image_maps=image_maps, shares=shares, steps=st,
                     labels=[labels_all[t] for t in st], axes=axes, axis_values=axis_values, layout=lay,
                     patch_layout=play, settings=settings)
