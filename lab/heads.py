"""Localization-head statistics: attention sum, elbow threshold, spatial entropy, selection.

Pure numpy/scipy/kneed functions (no torch, no transformers) over captured attention.

Input convention
----------------
Per sample the capture gives ``image_attention[L, H, V]``: for the captured query token (the
last input token), the softmax attention of text layer ``l``, head ``h`` restricted to the ``V``
image-token columns. Rows do not sum to 1 (the rest of the mass sits on text tokens).
``ImageLayout.to_grid`` reshapes it to ``maps[L, H, rows, cols]``.

Method (Kang et al., CVPR 2025, "Your Large Vision-Language Model Only Needs A Few Attention
Heads For Visual Grounding")
-------------------------------------------------------------------------------------------
* Criterion 1, attention sum: ``S_img[l, h] = sum_v image_attention[l, h, v]``. The heads'
  ``S_img`` averaged over samples is sorted in descending order and the elbow of that curve is
  the threshold (Kneedle by default); heads below it are out.
* Criterion 2, spatial entropy: ``B = relu(A - mean(A))`` of a head's 2D map ``A``; the
  connected components ``C_i`` of ``B > 0`` (8-connectivity by default) give
  ``p_i = mass(C_i) / mass(B)`` and ``H = -sum_i p_i ln p_i``. One compact blob gives 0; the
  more scattered the above-mean attention, the larger ``H``. ``inf`` when nothing survives.
* Selection: the first layers are excluded (default: 0 and 1); in each sample the eligible heads
  are ranked by spatial entropy (ascending) and the ``k`` lowest are chosen; heads are ranked by
  how often they are chosen over the samples; the ``top_k`` most frequent are the localization
  heads.

Visual-head statistics (Bi et al., CVPR 2025, "Unveiling Visual Perception in Language Models:
An Attention Head Analysis Approach"): per head, the attention ratio on image tokens and an
entropy-based concentration score, overall and per sample group (`visual_head_stats`).

JSON convention: every ``to_dict`` / ``to_json_dict`` here is strict JSON (no NaN/Infinity
tokens): non-finite floats are written as ``null``. For spatial entropy ``null`` means "no
above-mean component" (``inf``, then ``n_components == 0``) or a map with non-finite values
(``nan``).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage

from utils.layout import ImageLayout

__all__ = [
    "Elbow",
    "SampleAnalysis",
    "Selection",
    "SpatialEntropyDetails",
    "aggregate_visual_head_stats",
    "analyze_sample",
    "attention_concentration",
    "bottom_row_share",
    "elbow_threshold",
    "image_attention_sum",
    "jsonable",
    "layer_mask",
    "select_heads",
    "spatial_entropy",
    "spatial_entropy_batch",
    "spatial_entropy_details",
    "visual_head_stats",
    "write_head_table_csv",
    "write_heads_json",
]

ComponentWeight = Literal["mass", "area"]
Connectivity = Literal[4, 8]
ElbowMethod = Literal["kneedle", "chord"]

#: Default relative tolerance for "above the mean": a cell survives when
#: ``A > mean(A) + rtol * max|A|``. Guards against float round-off turning a constant map into
#: one big "component" (the mean of identical values is not always bit-identical to them).
DEFAULT_RTOL = 1e-9


# =============================================================================================
# small helpers
# =============================================================================================
def jsonable(obj: Any) -> Any:
    """Recursively turn numpy arrays/scalars, tuples and dataclass-free containers into strict
    JSON values; non-finite floats become ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _atomic_write_text(path: Any, text: str) -> None:
    from utils.io import atomic_write_text

    atomic_write_text(path, text)


def _structure_2d(connectivity: int) -> np.ndarray:
    if connectivity == 8:
        return ndimage.generate_binary_structure(2, 2)
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")


def _check_weight(component_weight: str) -> None:
    if component_weight not in ("mass", "area"):
        raise ValueError(f"component_weight must be 'mass' or 'area', got {component_weight!r}")


def layer_mask(n_layers: int, exclude_layers: Iterable[int] = (0, 1)) -> np.ndarray:
    """Boolean ``[n_layers]``: True for layers that take part. Negative indices count from the
    end; indices outside ``[-n_layers, n_layers)`` are ignored (so the default ``(0, 1)`` is safe
    on a 1-layer toy model)."""
    keep = np.ones(n_layers, dtype=bool)
    for l in exclude_layers:
        l = int(l)
        if -n_layers <= l < n_layers:
            keep[l] = False
    return keep


def _excluded_list(n_layers: int, exclude_layers: Iterable[int]) -> list[int]:
    return [int(i) for i in np.flatnonzero(~layer_mask(n_layers, exclude_layers))]


# =============================================================================================
# criterion 1: attention sum
# =============================================================================================
def image_attention_sum(image_attention: np.ndarray) -> np.ndarray:
    """Criterion 1, ``S_img``: the attention mass on the image tokens, ``[..., V] -> [...]``.

    For a capture ``[L, H, V]`` this is ``[L, H]``; for ``[N, L, H, V]`` it is ``[N, L, H]``.
    Summed in float64.
    """
    a = np.asarray(image_attention)
    if a.ndim < 1:
        raise ValueError("image_attention needs a trailing image-token axis V")
    return a.sum(axis=-1, dtype=np.float64)


# =============================================================================================
# elbow threshold
# =============================================================================================
@dataclass(frozen=True)
class Elbow:
    """Result of `elbow_threshold`.

    threshold: values ``>= threshold`` are kept (``-inf`` when no finite value was given).
    index: position of the elbow in the descending sorted (finite) values, or None.
    method: the method asked for; method_used: what produced the threshold ("kneedle", "chord",
    "keep_all" or "given").
    knee_found: whether the asked-for method found an elbow itself (False when a fallback was
    used). note: why a fallback was used ("" when none).
    n_values: finite values used; n_kept: how many of them are ``>= threshold``;
    n_dropped_nan: non-finite values ignored.
    """

    threshold: float
    index: int | None
    method: str
    method_used: str
    knee_found: bool
    note: str = ""
    n_values: int = 0
    n_kept: int = 0
    n_dropped_nan: int = 0

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "threshold": self.threshold,
                "index": self.index,
                "method": self.method,
                "method_used": self.method_used,
                "knee_found": self.knee_found,
                "note": self.note,
                "n_values": self.n_values,
                "n_kept": self.n_kept,
                "n_dropped_nan": self.n_dropped_nan,
            }
        )


def _chord_index(y_desc: np.ndarray) -> tuple[int, float]:
    """Index of the point farthest from the chord joining the first and last points, with both
    axes scaled to [0, 1]; and that (scaled) distance."""
    n = y_desc.size
    x = np.arange(n, dtype=np.float64) / (n - 1)
    span = y_desc[0] - y_desc[-1]
    yn = (y_desc - y_desc[-1]) / span  # 1 .. 0
    # chord from (0, 1) to (1, 0): x + y - 1 = 0, distance |x + y - 1| / sqrt(2)
    d = np.abs(x + yn - 1.0) / math.sqrt(2.0)
    i = int(np.argmax(d))
    return i, float(d[i])


def elbow_threshold(
    values: np.ndarray | Sequence[float],
    method: ElbowMethod = "kneedle",
    *,
    sensitivity: float = 1.0,
    interp_method: Literal["interp1d", "polynomial"] = "interp1d",
    knee_choice: Literal["most_prominent", "first", "last"] = "most_prominent",
    fallback: Literal["chord", "keep_all"] = "chord",
    flat_rtol: float = 1e-9,
    min_chord_distance: float = 1e-6,
    curve: Literal["auto", "convex", "concave"] = "auto",
) -> Elbow:
    """Elbow of the descending sorted ``values`` (e.g. the heads' mean ``S_img``), as a threshold.

    The values (any shape, flattened; NaN/inf dropped) are sorted in descending order; with
    ``x = 0..n-1`` this curve typically drops steeply over a few visual heads and then flattens
    into a long tail.

    method="kneedle" (Satopaa et al. 2011, via ``kneed.KneeLocator``) with
    ``curve="convex", direction="decreasing"``: the sorted curve *decreases* with x and its slope
    goes from steeply negative to ~0, i.e. the slope increases and the curve is *convex*
    (second derivative >= 0, an "L" shape). kneed uses these two flags to orient the normalised
    curve before taking its difference to the diagonal; with the default
    ``concave/increasing`` it would look for the bend of a curve shaped like a "Γ" and put the
    knee in the wrong place (typically near the start or end of the tail). ``sensitivity`` is
    kneed's ``S``; ``interp_method`` is passed through.

    ``knee_choice``: kneed can detect several knees (local maxima of its difference curve that
    pass the ``S`` test). Its default (``online=False``) returns the *first* one, which on a
    curve with a few uneven top values can be a tiny bump among them (seen on a synthetic head
    population: difference 0.003 at index 1 while the real corner, difference 0.85, sat at
    index 7; see tests/test_heads.py). "most_prominent"
    (default) runs kneed with ``online=True`` to collect all detected knees and takes the one
    with the largest difference-curve value; "first" reproduces kneed's default; "last" is
    kneed's ``online=True`` answer (tends to wander deep into a noisy tail; not recommended).

    ``curve``: "convex" is the usual LLaVA shape (an "L": a few high heads, then a long flat tail).
    Some models give a "concave" curve instead (a long plateau of image-attending heads, then a
    drop, e.g. the 4-layer toy model); kneedle must be told which, or it puts the knee at rank 0.
    "auto" (default) decides from the data: concave when the normalised curve lies above the
    chord joining its ends on average, convex otherwise.

    method="chord": the point with the largest perpendicular distance to the straight line joining
    the first and last points, with both axes scaled to [0, 1] first (otherwise the result would
    depend on the units of the values relative to the head count).

    For an "L"-shaped curve both put the elbow on the corner: the first point of the flat part.
    The threshold is the value at the elbow and values ``>= threshold`` are kept (so the elbow
    point itself, and anything tied with it, is kept).

    Edge cases (all reported in ``note``, with ``knee_found=False``):

    * no finite values: ``threshold=-inf`` (everything passes, NaN heads never do);
    * fewer than 3 finite values, or a flat curve (``max - min <= flat_rtol * max|v|``):
      keep all (``threshold = min``);
    * kneedle finds no knee (e.g. a straight line): ``fallback="chord"`` (default) uses the chord
      method, ``fallback="keep_all"`` keeps everything;
    * chord on a straight line (largest scaled distance ``< min_chord_distance``): keep all.
    """
    if method not in ("kneedle", "chord"):
        raise ValueError(f"elbow method must be 'kneedle' or 'chord', got {method!r}")
    if fallback not in ("chord", "keep_all"):
        raise ValueError(f"fallback must be 'chord' or 'keep_all', got {fallback!r}")
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(v)
    n_bad = int(v.size - finite.sum())
    y = np.sort(v[finite])[::-1]
    n = int(y.size)

    def result(idx: int | None, used: str, found: bool, note: str) -> Elbow:
        if n == 0:
            thr = float("-inf")
        elif idx is None:
            thr = float(y[-1])
        else:
            thr = float(y[idx])
        kept = int((y >= thr).sum())
        return Elbow(thr, idx, method, used, found, note, n, kept, n_bad)

    if n == 0:
        return result(None, "keep_all", False, "no finite values: everything passes")
    if n < 3:
        return result(n - 1, "keep_all", False, f"only {n} value(s): too few for an elbow, keeping all")
    scale = max(abs(float(y[0])), abs(float(y[-1])))
    if float(y[0] - y[-1]) <= flat_rtol * scale or y[0] == y[-1]:
        return result(n - 1, "keep_all", False, "flat curve: no elbow, keeping all")

    def chord(note_prefix: str, found: bool) -> Elbow:
        i, d = _chord_index(y)
        if d < min_chord_distance:
            return result(n - 1, "keep_all", False, (note_prefix + "straight line: no elbow, keeping all").strip())
        return result(i, "chord", found, note_prefix.rstrip("; ").strip())

    if method == "chord":
        return chord("", True)

    from kneed import KneeLocator

    if knee_choice not in ("most_prominent", "first", "last"):
        raise ValueError(f"knee_choice must be 'most_prominent', 'first' or 'last', got {knee_choice!r}")
    if curve == "auto":
        t = np.linspace(0.0, 1.0, n)
        ys = (y - y[-1]) / (y[0] - y[-1])  # 1 -> 0
        curve = "concave" if float(np.mean(ys - (1.0 - t))) > 0 else "convex"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kl = KneeLocator(
            np.arange(n),
            y,
            S=sensitivity,
            curve=curve,
            direction="decreasing",
            interp_method=interp_method,
            online=knee_choice != "first",
        )
    knees = sorted(int(x) for x in (kl.all_knees or ()) if x is not None)
    if kl.knee is not None and knees:
        if knee_choice == "first":
            knee = knees[0]
        elif knee_choice == "last":
            knee = int(kl.knee)
        else:
            diff = np.asarray(kl.y_difference, dtype=np.float64)
            knee = max(knees, key=lambda i: (diff[i], -i))  # largest difference; ties: earliest
        return result(knee, "kneedle", True, "")
    if fallback == "chord":
        return chord("kneedle found no knee; used the chord method; ", False)
    return result(n - 1, "keep_all", False, "kneedle found no knee; keeping all")


# =============================================================================================
# criterion 2: spatial entropy
# =============================================================================================
@dataclass(frozen=True)
class SpatialEntropyDetails:
    """Everything `spatial_entropy_details` computed for one map.

    entropy: ``-sum p_i ln p_i`` (``inf`` when no cell is above the mean, ``nan`` when the map has
    non-finite values). n_components: number of connected components of ``B > 0``.
    labels: ``[rows, cols]`` int component labels (0 = below/at the mean, 1..n_components).
    masses / areas / probabilities: per component, in label order (``probabilities`` follow
    ``component_weight``). above_mean: ``B = relu(A - mean(A))`` with sub-tolerance cells zeroed.
    """

    entropy: float
    n_components: int
    labels: np.ndarray
    masses: np.ndarray
    areas: np.ndarray
    probabilities: np.ndarray
    above_mean: np.ndarray


def spatial_entropy_details(
    attn_map_2d: np.ndarray,
    component_weight: ComponentWeight = "mass",
    connectivity: Connectivity = 8,
    *,
    rtol: float = DEFAULT_RTOL,
) -> SpatialEntropyDetails:
    """Spatial entropy of one ``[rows, cols]`` map, with its components (reference implementation).

    ``B = relu(A - mean(A))`` (computed in float64); a cell survives when
    ``A > mean(A) + rtol * max|A|`` (see `DEFAULT_RTOL`; a constant map has no survivor).
    Components of the surviving cells are found with ``scipy.ndimage.label`` (8-connectivity:
    diagonal neighbours connect; 4: only edge neighbours). ``p_i = mass_i / sum mass`` with
    ``component_weight="mass"`` (mass = sum of ``B`` in the component), or
    ``size_i / total size`` with ``"area"``. ``H = -sum_i p_i ln p_i``; one component gives 0,
    ``m`` equal components give ``ln m``.
    """
    _check_weight(component_weight)
    a = np.asarray(attn_map_2d, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"spatial_entropy needs a 2D map, got shape {a.shape}")
    structure = _structure_2d(connectivity)
    empty = np.zeros(0)
    if a.size == 0 or not np.all(np.isfinite(a)):
        ent = float("inf") if a.size == 0 else float("nan")
        return SpatialEntropyDetails(ent, 0, np.zeros(a.shape, np.int32), empty, empty, empty, np.zeros_like(a))
    mean = a.mean()
    keep = a > mean + rtol * float(np.max(np.abs(a)))
    b = np.where(keep, a - mean, 0.0)
    labels, n = ndimage.label(keep, structure=structure)
    if n == 0:
        return SpatialEntropyDetails(float("inf"), 0, labels, empty, empty, empty, b)
    masses = np.asarray(ndimage.sum_labels(b, labels, index=np.arange(1, n + 1)), dtype=np.float64)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    w = masses if component_weight == "mass" else areas
    p = w / w.sum()
    pos = p > 0
    ent = float(-(p[pos] * np.log(p[pos])).sum())
    if ent <= 0.0:  # -0.0 (or round-off) for a single component
        ent = 0.0
    return SpatialEntropyDetails(ent, int(n), labels, masses, areas, p, b)


def spatial_entropy(
    attn_map_2d: np.ndarray,
    component_weight: ComponentWeight = "mass",
    connectivity: Connectivity = 8,
    *,
    rtol: float = DEFAULT_RTOL,
) -> float:
    """Criterion 2 for one ``[rows, cols]`` map: see `spatial_entropy_details`.

    Returns ``float("inf")`` when no cell is above the mean (e.g. a constant map) and ``nan`` for
    a map with non-finite values. Lower = more spatially concentrated.
    """
    return spatial_entropy_details(attn_map_2d, component_weight, connectivity, rtol=rtol).entropy


def _entropy_core(
    maps: np.ndarray,
    component_weight: str,
    connectivity: int,
    rtol: float,
    want_bottom: bool,
    chunk_maps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Vectorised spatial entropy of ``maps[M, R, C]`` -> (entropy[M], n_components[M],
    bottom_row_share[M] or None).

    The maps of a chunk are stacked into one 3D array and labelled in one ``ndimage.label`` call
    whose 3x3x3 structuring element is empty in the two outer planes, so nothing connects across
    the stacking axis. Then only the surviving (above-mean) cells are touched: their labels, map
    index and ``B`` values give, with ``np.bincount``, each component's mass/area, the map that
    owns it (scatter: all cells of a component lie in one map), and per-map totals, entropies
    and bottom-row shares. ``ndimage.label`` dominates the cost.
    """
    M, R, C = maps.shape
    RC = R * C
    ent = np.empty(M, dtype=np.float64)
    ncomp = np.zeros(M, dtype=np.int64)
    bottom = np.empty(M, dtype=np.float64) if want_bottom else None
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = _structure_2d(connectivity)
    use_mass = component_weight == "mass"
    for s in range(0, M, chunk_maps):
        a = np.asarray(maps[s : s + chunk_maps], dtype=np.float64).reshape(-1, RC)
        m = a.shape[0]
        finite = np.isfinite(a).all(axis=1)
        if not finite.all():
            a = np.where(finite[:, None], a, 0.0)
        mean = a.mean(axis=1)
        scale = np.maximum(a.max(axis=1), -a.min(axis=1))
        keep = a > (mean + rtol * scale)[:, None]  # same rule as spatial_entropy_details
        labels = np.empty((m, R, C), dtype=np.int32)
        n = int(ndimage.label(keep.reshape(m, R, C), structure=structure, output=labels))
        idx = np.flatnonzero(keep)  # surviving cells only (typically a fraction of all)
        row = idx // RC
        lab_s = labels.ravel()[idx].astype(np.intp) - 1  # 0-based component ids
        b_s = a.ravel()[idx] - mean[row]  # B = A - mean(A) > 0 on survivors
        owner = np.empty(n, dtype=np.intp)
        owner[lab_s] = row
        if use_mass:
            w = np.bincount(lab_s, weights=b_s, minlength=n).astype(np.float64)
        else:
            w = np.bincount(lab_s, minlength=n).astype(np.float64)
        total = np.bincount(owner, weights=w, minlength=m).astype(np.float64)
        p = w / total[owner] if n else w
        with np.errstate(divide="ignore", invalid="ignore"):
            contrib = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        e = np.bincount(owner, weights=contrib, minlength=m).astype(np.float64)  # (int when empty)
        nc = np.bincount(owner, minlength=m)
        e[e <= 0.0] = 0.0  # -0.0 / round-off for single-component maps
        e[nc == 0] = np.inf
        e[~finite] = np.nan
        ent[s : s + m] = e
        ncomp[s : s + m] = nc
        if bottom is not None:
            tot_b = np.bincount(row, weights=b_s, minlength=m).astype(np.float64)
            in_bottom = (idx - row * RC) >= (R - 1) * C
            bot_b = np.bincount(row[in_bottom], weights=b_s[in_bottom], minlength=m).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(tot_b > 0, bot_b / np.where(tot_b > 0, tot_b, 1.0), np.nan)
            share[~finite] = np.nan
            bottom[s : s + m] = share
    return ent, ncomp, bottom


def spatial_entropy_batch(
    maps: np.ndarray,
    component_weight: ComponentWeight = "mass",
    connectivity: Connectivity = 8,
    *,
    rtol: float = DEFAULT_RTOL,
    chunk_maps: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Spatial entropy of every map in ``maps[..., R, C]`` -> ``(entropy[...], n_components[...])``.

    Same definition and result as `spatial_entropy` applied map by map (``inf`` for a map with no
    above-mean cell, ``nan`` for a map with non-finite values), but all maps of a chunk of
    ``chunk_maps`` are labelled in a single ``scipy.ndimage.label`` call (a 3D structuring
    element that does not connect across the stacking axis) and reduced with ``np.bincount``:
    on the 2-core dev machine, 1024 speckled 24x24 maps (~43 components each) take ~15-25 ms
    against ~130 ms for a Python loop over `spatial_entropy`.
    """
    _check_weight(component_weight)
    a = np.asarray(maps)
    if a.ndim < 2:
        raise ValueError(f"maps must be [..., rows, cols], got shape {a.shape}")
    lead, (R, C) = a.shape[:-2], a.shape[-2:]
    M = int(np.prod(lead, dtype=np.int64)) if lead else 1
    if M == 0 or R * C == 0:
        return np.full(lead, np.inf), np.zeros(lead, dtype=np.int64)
    ent, nc, _ = _entropy_core(a.reshape(M, R, C), component_weight, int(connectivity), rtol, False, max(1, int(chunk_maps)))
    return ent.reshape(lead), nc.reshape(lead)


def bottom_row_share(maps: np.ndarray, *, rtol: float = DEFAULT_RTOL) -> np.ndarray:
    """Fraction of each map's above-mean mass ``B = relu(A - mean(A))`` that lies in its bottom
    row: ``maps[..., R, C] -> [...]`` (``nan`` when there is no above-mean mass).

    LLaVA's attention often piles up on the last row of the image grid regardless of the image
    content (an artifact, not localization); this measures it."""
    a = np.asarray(maps, dtype=np.float64)
    lead, (R, C) = a.shape[:-2], a.shape[-2:]
    flat = a.reshape(*lead, R * C)
    finite = np.isfinite(flat).all(axis=-1)
    flat = np.where(finite[..., None], flat, 0.0)
    mean = flat.mean(axis=-1, keepdims=True)
    keep = flat > mean + rtol * np.abs(flat).max(axis=-1, keepdims=True)
    b = np.where(keep, flat - mean, 0.0)
    tot = b.sum(axis=-1)
    bot = b[..., (R - 1) * C :].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(tot > 0, bot / np.where(tot > 0, tot, 1.0), np.nan)
    return np.where(finite, out, np.nan)


# =============================================================================================
# per-sample analysis
# =============================================================================================
def _to_maps(image_attention: np.ndarray, layout_or_grid_shape: ImageLayout | Sequence[int], grid: str | None) -> np.ndarray:
    if isinstance(layout_or_grid_shape, ImageLayout):
        return layout_or_grid_shape.to_grid(image_attention, grid)
    shape = tuple(int(x) for x in layout_or_grid_shape)
    if len(shape) != 2:
        raise ValueError(f"grid shape must be (rows, cols), got {layout_or_grid_shape!r}")
    rows, cols = shape
    V = image_attention.shape[-1]
    if rows * cols != V:
        raise ValueError(f"{V} image tokens do not form a {rows}x{cols} grid")
    return image_attention.reshape(*image_attention.shape[:-1], rows, cols)


@dataclass
class SampleAnalysis:
    """Per-head statistics of one sample (arrays are ``[L, H]``).

    s_img: criterion 1 (attention mass on the image). entropy: criterion 2 (spatial entropy;
    ``inf`` = no above-mean cell). n_components: connected components of the above-mean map.
    bottom_row_share: fraction of above-mean mass on the grid's last row (``nan`` if none).
    included: False for heads of excluded layers.
    passes_c1: ``s_img >= threshold`` (None when no threshold was given).
    bottom_row_artifact: ``bottom_row_share > bottom_row_fraction`` (None when the filter is off).
    passes_c2: the head has a spatial entropy to rank by (finite) and is not a bottom-row artifact.
    eligible: included & passes_c2 & (passes_c1 when a threshold was given).
    """

    s_img: np.ndarray
    entropy: np.ndarray
    n_components: np.ndarray
    bottom_row_share: np.ndarray
    included: np.ndarray
    passes_c1: np.ndarray | None
    bottom_row_artifact: np.ndarray | None
    passes_c2: np.ndarray
    eligible: np.ndarray
    grid_shape: tuple[int, int]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.s_img.shape)  # type: ignore[return-value]

    def ranked_heads(self, limit: int | None = None) -> list[tuple[int, int]]:
        """Eligible heads by spatial entropy ascending (ties: higher S_img first)."""
        L, H = self.shape
        idx = np.flatnonzero(self.eligible.ravel())
        order = np.lexsort((-self.s_img.ravel()[idx], self.entropy.ravel()[idx]))
        out = [(int(i // H), int(i % H)) for i in idx[order]]
        return out if limit is None else out[:limit]

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON dict of nested lists ``[L][H]``; non-finite floats (inf/nan entropy,
        nan bottom_row_share) become ``null``."""
        return jsonable(
            {
                "n_layers": self.shape[0],
                "n_heads": self.shape[1],
                "grid_shape": list(self.grid_shape),
                "settings": self.settings,
                "entropy_null_means": "no above-mean component (inf) or non-finite input (nan)",
                "s_img": self.s_img,
                "entropy": self.entropy,
                "n_components": self.n_components,
                "bottom_row_share": self.bottom_row_share,
                "included": self.included,
                "passes_c1": self.passes_c1,
                "bottom_row_artifact": self.bottom_row_artifact,
                "passes_c2": self.passes_c2,
                "eligible": self.eligible,
            }
        )

    def summary(self, top: int = 5) -> str:
        L, H = self.shape
        lines = [
            f"{L} layers x {H} heads, grid {self.grid_shape[0]}x{self.grid_shape[1]}",
            f"excluded layers: {self.settings.get('excluded_layers', [])}",
            f"S_img: min {np.nanmin(self.s_img):.4g}, mean {np.nanmean(self.s_img):.4g}, max {np.nanmax(self.s_img):.4g}",
        ]
        if self.passes_c1 is not None:
            lines.append(
                f"criterion 1 (S_img >= {self.settings.get('threshold'):.4g}): "
                f"{int((self.passes_c1 & self.included).sum())} of {int(self.included.sum())} included heads"
            )
        if self.bottom_row_artifact is not None:
            lines.append(f"bottom-row artifacts: {int((self.bottom_row_artifact & self.included).sum())} included heads")
        lines.append(f"no above-mean component (entropy inf): {int(np.isinf(self.entropy).sum())} heads")
        lines.append(f"eligible: {int(self.eligible.sum())} heads")
        best = self.ranked_heads(top)
        if best:
            parts = [
                f"L{l}H{h} (H={self.entropy[l, h]:.3f}, S_img={self.s_img[l, h]:.3f}, comps={int(self.n_components[l, h])})"
                for l, h in best
            ]
            lines.append("lowest spatial entropy: " + ", ".join(parts))
        return "\n".join(lines)


def analyze_sample(
    image_attention: np.ndarray,
    layout_or_grid_shape: ImageLayout | Sequence[int],
    threshold: float | None = None,
    exclude_layers: Iterable[int] = (0, 1),
    *,
    component_weight: ComponentWeight = "mass",
    connectivity: Connectivity = 8,
    bottom_row_filter: bool = False,
    bottom_row_fraction: float = 0.5,
    grid: str | None = None,
    rtol: float = DEFAULT_RTOL,
    chunk_maps: int = 4096,
) -> SampleAnalysis:
    """Both criteria for every head of one sample's ``image_attention[L, H, V]``.

    ``layout_or_grid_shape``: the sample's `ImageLayout` (``grid`` picks one of its grids) or a
    ``(rows, cols)`` shape with ``rows * cols == V`` (row-major tokens).
    ``threshold``: criterion-1 threshold (usually ``Selection.threshold`` from a previous
    selection); None = criterion 1 not applied here (it is an across-sample statistic, see
    `select_heads`). ``exclude_layers``: layers left out (default: the first two, whose attention
    is spread almost uniformly over the image in LLaVA; Kang et al.).
    ``bottom_row_filter``: when True, a head fails in this sample if more than
    ``bottom_row_fraction`` of its above-mean mass lies in the grid's bottom row (LLaVA attention
    often piles up there whatever the image shows); ``bottom_row_share`` is always computed.
    """
    a = np.asarray(image_attention)
    if a.ndim != 3:
        raise ValueError(f"image_attention must be [L, H, V], got shape {a.shape}")
    L, H, _ = a.shape
    maps = _to_maps(a, layout_or_grid_shape, grid)
    R, C = maps.shape[-2:]
    s_img = image_attention_sum(a)
    _check_weight(component_weight)
    ent, nc, bottom = _entropy_core(
        maps.reshape(L * H, R, C), component_weight, int(connectivity), rtol, True, max(1, int(chunk_maps))
    )
    ent, nc = ent.reshape(L, H), nc.reshape(L, H)
    bottom = bottom.reshape(L, H)  # type: ignore[union-attr]
    included = np.broadcast_to(layer_mask(L, exclude_layers)[:, None], (L, H)).copy()
    passes_c1 = None if threshold is None else (s_img >= float(threshold))
    artifact = (bottom > float(bottom_row_fraction)) if bottom_row_filter else None
    passes_c2 = np.isfinite(ent)
    if artifact is not None:
        passes_c2 &= ~artifact
    eligible = included & passes_c2
    if passes_c1 is not None:
        eligible &= passes_c1
    settings = {
        "threshold": None if threshold is None else float(threshold),
        "excluded_layers": _excluded_list(L, exclude_layers),
        "component_weight": component_weight,
        "connectivity": int(connectivity),
        "bottom_row_filter": bool(bottom_row_filter),
        "bottom_row_fraction": float(bottom_row_fraction),
        "rtol": float(rtol),
    }
    return SampleAnalysis(
        s_img=s_img,
        entropy=ent,
        n_components=nc,
        bottom_row_share=bottom,
        included=included,
        passes_c1=passes_c1,
        bottom_row_artifact=artifact,
        passes_c2=passes_c2,
        eligible=eligible,
        grid_shape=(int(R), int(C)),
        settings=settings,
    )


# =============================================================================================
# selection across samples
# =============================================================================================
@dataclass
class Selection:
    """Result of `select_heads`.

    heads: the ``top_k`` localization heads (first ``top_k`` of ``ranked``).
    ranked: every head chosen at least once, most frequent first; each a dict
    ``{"layer", "head", "frequency", "frequency_ratio", "mean_s_img", "mean_entropy"}``
    (frequency = number of samples in which the head was among the ``k`` lowest-entropy eligible
    heads; frequency_ratio = frequency / N; mean_entropy over the samples where it is finite).
    Arrays ``[L, H]``: frequency, mean_s_img, mean_entropy, eligible (criterion 1 and not an
    excluded layer), selected (the ``top_k``). per_sample_choices ``[N, k]``: flat head indices
    ``layer * H + head`` chosen in each sample (-1 = fewer than k eligible heads).
    """

    heads: list[dict[str, Any]]
    ranked: list[dict[str, Any]]
    threshold: float
    elbow: Elbow
    settings: dict[str, Any]
    n_samples: int
    n_layers: int
    n_heads: int
    frequency: np.ndarray
    mean_s_img: np.ndarray
    mean_entropy: np.ndarray
    eligible: np.ndarray
    selected: np.ndarray
    per_sample_choices: np.ndarray

    @property
    def head_list(self) -> list[tuple[int, int]]:
        """The localization heads as ``(layer, head)`` pairs."""
        return [(d["layer"], d["head"]) for d in self.heads]

    def to_json_dict(self) -> dict[str, Any]:
        """Strict-JSON dict (non-finite floats -> null): heads, ranked, threshold, elbow, settings."""
        return jsonable(
            {
                "heads": self.heads,
                "ranked": self.ranked,
                "threshold": self.threshold,
                "elbow": self.elbow.to_dict(),
                "settings": self.settings,
                "n_samples": self.n_samples,
                "n_layers": self.n_layers,
                "n_heads": self.n_heads,
                "n_eligible": int(self.eligible.sum()),
            }
        )

    def summary(self) -> str:
        lines = [
            f"{self.n_samples} samples, {self.n_layers} layers x {self.n_heads} heads",
            f"criterion-1 threshold {self.threshold:.4g} ({self.elbow.method_used}"
            + (f"; {self.elbow.note}" if self.elbow.note else "")
            + f"): {int(self.eligible.sum())} eligible heads",
        ]
        for i, d in enumerate(self.heads, 1):
            me = d["mean_entropy"]
            lines.append(
                f"{i}. L{d['layer']}H{d['head']}: chosen {d['frequency']}/{self.n_samples} "
                f"({d['frequency_ratio']:.2f}), mean S_img {d['mean_s_img']:.4g}, "
                f"mean entropy {'n/a' if me is None or not np.isfinite(me) else f'{me:.3f}'}"
            )
        return "\n".join(lines)


def _nanmean0(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=0)


def select_heads(
    s_img: np.ndarray,
    entropy: np.ndarray,
    *,
    exclude_layers: Iterable[int] = (0, 1),
    elbow_method: ElbowMethod = "kneedle",
    k: int = 10,
    top_k: int = 3,
    bottom_row_mask: np.ndarray | None = None,
    threshold: float | None = None,
    elbow_include_excluded: bool = False,
    elbow_options: Mapping[str, Any] | None = None,
) -> Selection:
    """Pick the localization heads from per-sample statistics ``s_img[N, L, H]`` and
    ``entropy[N, L, H]`` (e.g. stacked `SampleAnalysis` fields).

    1. Criterion 1: the heads' ``S_img`` averaged over the N samples (NaN ignored) -> elbow
       threshold (`elbow_threshold` with ``elbow_method`` and ``elbow_options``) computed over the
       heads of the non-excluded layers (all heads with ``elbow_include_excluded=True``);
       ``threshold`` overrides it. Heads with mean ``S_img >= threshold`` outside the excluded
       layers are eligible.
    2. In each sample, the eligible heads with a finite entropy (and, when ``bottom_row_mask``
       ``[N, L, H]`` is given, not flagged True there = bottom-row artifact in that sample) are
       ranked by spatial entropy ascending (ties: higher per-sample S_img first, then lower
       head index) and the ``k`` lowest are chosen. ``inf``/``nan`` entropies are never chosen.
    3. Heads are ranked by how many samples chose them (ties: lower mean entropy, then higher
       mean S_img); the first ``top_k`` are the localization heads.
    """
    s = np.asarray(s_img, dtype=np.float64)
    e = np.asarray(entropy, dtype=np.float64)
    if s.ndim != 3 or e.shape != s.shape:
        raise ValueError(f"s_img and entropy must both be [N, L, H]; got {s.shape} and {e.shape}")
    if k < 1 or top_k < 1:
        raise ValueError("k and top_k must be >= 1")
    N, L, H = s.shape
    if bottom_row_mask is not None:
        bmask = np.asarray(bottom_row_mask, dtype=bool)
        if bmask.shape != s.shape:
            raise ValueError(f"bottom_row_mask must be [N, L, H] = {s.shape}, got {bmask.shape}")
    else:
        bmask = None

    keep_layers = np.broadcast_to(layer_mask(L, exclude_layers)[:, None], (L, H))
    mean_s = _nanmean0(s) if N else np.full((L, H), np.nan)
    e_fin = np.where(np.isfinite(e), e, np.nan)
    mean_e = _nanmean0(e_fin) if N else np.full((L, H), np.nan)

    elbow_values = mean_s if elbow_include_excluded else mean_s[keep_layers]
    if threshold is None:
        elbow = elbow_threshold(elbow_values, elbow_method, **dict(elbow_options or {}))
        if keep_layers.sum() == 0 and not elbow_include_excluded:
            elbow = Elbow(elbow.threshold, None, elbow_method, "keep_all", False, "all layers excluded: no head is eligible", 0, 0, 0)
        thr = elbow.threshold
    else:
        thr = float(threshold)
        vals = np.asarray(elbow_values, dtype=np.float64).ravel()
        fin = np.isfinite(vals)
        elbow = Elbow(thr, None, elbow_method, "given", False, "threshold given by the caller", int(fin.sum()), int((vals[fin] >= thr).sum()), int((~fin).sum()))
    with np.errstate(invalid="ignore"):
        eligible = keep_layers & (mean_s >= thr)

    # per-sample choice: k lowest entropies among eligible heads
    LH = L * H
    ok = np.broadcast_to(eligible.reshape(1, LH), (N, LH)) & np.isfinite(e.reshape(N, LH))
    if bmask is not None:
        ok = ok & ~bmask.reshape(N, LH)
    key_e = np.where(ok, e.reshape(N, LH), np.inf)
    s_flat = s.reshape(N, LH)
    key_s = np.where(np.isnan(s_flat), np.inf, -s_flat)
    kk = min(int(k), LH)
    if N:
        order = np.lexsort((key_s, key_e), axis=-1)[:, :kk]
        valid = np.take_along_axis(ok, order, axis=-1)
        choices = np.where(valid, order, -1)
        freq = np.bincount(order[valid], minlength=LH).reshape(L, H)
    else:
        choices = np.zeros((0, kk), dtype=np.int64)
        freq = np.zeros((L, H), dtype=np.int64)

    # rank heads: frequency desc, mean entropy asc, mean S_img desc, then index
    f_flat = freq.ravel()
    me = np.where(np.isnan(mean_e), np.inf, mean_e).ravel()
    ms = np.where(np.isnan(mean_s), np.inf, -mean_s).ravel()
    rank_order = np.lexsort((np.arange(LH), ms, me, -f_flat))
    rank_order = rank_order[f_flat[rank_order] > 0]
    ranked = [
        {
            "layer": int(i // H),
            "head": int(i % H),
            "frequency": int(f_flat[i]),
            "frequency_ratio": float(f_flat[i]) / N if N else 0.0,
            "mean_s_img": float(mean_s.ravel()[i]),
            "mean_entropy": float(mean_e.ravel()[i]),
        }
        for i in rank_order
    ]
    heads = ranked[: int(top_k)]
    selected = np.zeros((L, H), dtype=bool)
    for d in heads:
        selected[d["layer"], d["head"]] = True
    settings = {
        "exclude_layers": _excluded_list(L, exclude_layers),
        "elbow_method": elbow_method,
        "elbow_include_excluded": bool(elbow_include_excluded),
        "elbow_options": dict(elbow_options or {}),
        "k": int(k),
        "top_k": int(top_k),
        "bottom_row_mask": bmask is not None,
        "threshold_given": threshold is not None,
    }
    return Selection(
        heads=heads,
        ranked=ranked,
        threshold=float(thr),
        elbow=elbow,
        settings=settings,
        n_samples=int(N),
        n_layers=int(L),
        n_heads=int(H),
        frequency=freq.astype(np.int64),
        mean_s_img=mean_s,
        mean_entropy=mean_e,
        eligible=eligible,
        selected=selected,
        per_sample_choices=choices.astype(np.int64),
    )


def write_heads_json(selection: Selection, path: Any, *, indent: int | None = 2) -> None:
    """Write ``selection.to_json_dict()`` atomically as strict JSON (no NaN/Infinity)."""
    import json

    _atomic_write_text(path, json.dumps(selection.to_json_dict(), indent=indent, allow_nan=False) + "\n")


def _csv_float(x: float) -> str:
    x = float(x)
    return repr(x) if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")


def write_head_table_csv(
    path: Any,
    s_img_mean: np.ndarray,
    entropy_mean: np.ndarray,
    frequency: np.ndarray,
    eligible: np.ndarray | None = None,
    selected: np.ndarray | None = None,
) -> None:
    """CSV of every head's statistics, one row per (layer, head), written atomically.

    Columns: ``layer, head, mean_s_img, mean_entropy, frequency, eligible, selected``. Floats are
    written with ``repr`` (round-trips exactly); non-finite ones as ``inf`` / ``nan``, which
    ``float()`` and pandas parse. Booleans as ``true`` / ``false`` (all false when not given).
    From a `Selection`: ``write_head_table_csv(path, sel.mean_s_img, sel.mean_entropy,
    sel.frequency, sel.eligible, sel.selected)``.
    """
    s = np.asarray(s_img_mean, dtype=np.float64)
    e = np.asarray(entropy_mean, dtype=np.float64)
    f = np.asarray(frequency)
    if s.ndim != 2 or e.shape != s.shape or f.shape != s.shape:
        raise ValueError(f"s_img_mean, entropy_mean and frequency must be [L, H] alike; got {s.shape}, {e.shape}, {f.shape}")
    el = np.zeros(s.shape, bool) if eligible is None else np.asarray(eligible, dtype=bool)
    se = np.zeros(s.shape, bool) if selected is None else np.asarray(selected, dtype=bool)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layer", "head", "mean_s_img", "mean_entropy", "frequency", "eligible", "selected"])
    L, H = s.shape
    for l in range(L):
        for h in range(H):
            w.writerow(
                [l, h, _csv_float(s[l, h]), _csv_float(e[l, h]), int(f[l, h]), str(bool(el[l, h])).lower(), str(bool(se[l, h])).lower()]
            )
    _atomic_write_text(path, buf.getvalue())


# =============================================================================================
# visual-head statistics (Bi et al.)
# =============================================================================================
def attention_concentration(image_attention: np.ndarray) -> np.ndarray:
    """Concentration of each head's image attention, ``[..., V] -> [...]`` in [0, 1].

    The head's attention over the V image tokens is normalised to a distribution ``q``
    (``q_v = a_v / sum a``) and ``concentration = 1 - H(q) / ln V`` with
    ``H(q) = -sum q_v ln q_v``: 1 = all image attention on one token, 0 = uniform over the image.
    ``nan`` when the head puts no mass on the image (or has non-finite values); 1 when V == 1.
    """
    a = np.asarray(image_attention, dtype=np.float64)
    V = a.shape[-1]
    tot = a.sum(axis=-1, keepdims=True)
    good = (tot[..., 0] > 0) & np.isfinite(tot[..., 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(tot > 0, a / np.where(tot > 0, tot, 1.0), 0.0)
        ent = -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), axis=-1)
    if V <= 1:
        conc = np.ones(a.shape[:-1])
    else:
        conc = np.clip(1.0 - ent / math.log(V), 0.0, 1.0)
    return np.where(good, conc, np.nan)


def _stats_block(ratio: np.ndarray, conc: np.ndarray) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "n_samples": int(ratio.shape[0]),
            "ratio_mean": np.nanmean(ratio, axis=0),
            "ratio_std": np.nanstd(ratio, axis=0),
            "concentration_mean": np.nanmean(conc, axis=0),
            "concentration_std": np.nanstd(conc, axis=0),
        }


def aggregate_visual_head_stats(
    ratio: np.ndarray,
    concentration: np.ndarray,
    groups: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Aggregate per-sample ``ratio[N, L, H]`` and ``concentration[N, L, H]`` (see
    `visual_head_stats`) overall and per group. Samples whose group is None count only in
    "overall". Returns numpy arrays; pass the result through `jsonable` for JSON."""
    r = np.asarray(ratio, dtype=np.float64)
    c = np.asarray(concentration, dtype=np.float64)
    if r.ndim != 3 or c.shape != r.shape:
        raise ValueError(f"ratio and concentration must both be [N, L, H]; got {r.shape} and {c.shape}")
    N = r.shape[0]
    if groups is not None and len(groups) != N:
        raise ValueError(f"{len(groups)} group labels for {N} samples")
    out: dict[str, Any] = {
        "definitions": {
            "ratio": "attention mass of the head's query on the image tokens (S_img; the rest is on text)",
            "concentration": "1 - H(q)/ln V, q = the head's image attention normalised to sum 1 (1: one token, 0: uniform)",
        },
        "n_layers": int(r.shape[1]),
        "n_heads": int(r.shape[2]),
        "overall": _stats_block(r, c),
        "groups": {},
    }
    if groups is not None:
        labels = sorted({g for g in groups if g is not None}, key=str)
        for g in labels:
            idx = np.array([i for i, x in enumerate(groups) if x == g], dtype=np.int64)
            out["groups"][str(g)] = _stats_block(r[idx], c[idx])
    return out


def visual_head_stats(
    image_attention: np.ndarray | Sequence[np.ndarray],
    groups: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Visual-head statistics in the spirit of Bi et al. (CVPR 2025), per head, overall and per group.

    ``image_attention``: ``[N, L, H, V]`` or a list of N ``[L, H, V]`` arrays (V may differ between
    samples). ``groups``: an optional label per sample (e.g. question type), None = no group.

    Definitions (Bi et al. describe visual heads by the attention *weight* they put on visual
    tokens and an *entropy-based concentration* of that attention; the exact normalisation used
    here is ours):

    * ratio = ``S_img`` = attention mass on the image tokens (the rows are the full softmax, so
      this is the share of the head's attention that goes to the image);
    * concentration = ``1 - H(q) / ln V`` where ``q`` is the head's image attention normalised to
      sum 1 (`attention_concentration`): 1 = all on one token, 0 = uniform over the image.

    Returns ``{"definitions", "n_layers", "n_heads", "overall": block, "groups": {name: block}}``
    with ``block = {"n_samples", "ratio_mean", "ratio_std", "concentration_mean",
    "concentration_std"}`` (``[L, H]`` numpy arrays; NaNs ignored in the means).
    """
    if isinstance(image_attention, np.ndarray):
        if image_attention.ndim != 4:
            raise ValueError(f"image_attention array must be [N, L, H, V], got shape {image_attention.shape}")
        samples: Sequence[np.ndarray] = list(image_attention)
    else:
        samples = list(image_attention)
    if not samples:
        raise ValueError("visual_head_stats needs at least one sample")
    shape = np.asarray(samples[0]).shape[:2]
    ratio = np.empty((len(samples), *shape))
    conc = np.empty((len(samples), *shape))
    for i, a in enumerate(samples):
        a = np.asarray(a)
        if a.ndim != 3 or a.shape[:2] != shape:
            raise ValueError(f"sample {i}: expected [L, H, V] with (L, H) = {shape}, got {a.shape}")
        ratio[i] = image_attention_sum(a)
        conc[i] = attention_concentration(a)
    return aggregate_visual_head_stats(ratio, conc, groups)
