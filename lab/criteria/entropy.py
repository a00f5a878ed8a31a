"""Criterion 2: spatial entropy of a head's map (connected components of the above-mean cells)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from utils.settings.choices import ComponentWeight, Connectivity, options

#: Default relative tolerance for "above the mean": a cell survives when
#: ``A > mean(A) + rtol * max|A|``. Guards against float round-off turning a constant map into
#: one big "component" (the mean of identical values is not always bit-identical to them).
DEFAULT_RTOL = 1e-9


def _structure_2d(connectivity: int) -> np.ndarray:
    if connectivity == 8:
        return ndimage.generate_binary_structure(2, 2)
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")


def check_weight(component_weight: str, allowed: tuple[str, ...] = options(ComponentWeight)) -> None:
    """The one validator of a component weighting (`allowed`: what the caller implements)."""
    if component_weight not in allowed:
        raise ValueError(f"component_weight must be one of {', '.join(allowed)}, got {component_weight!r}")


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
    check_weight(component_weight, ("mass", "area"))
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


def entropy_components(
    maps: np.ndarray,
    *,
    component_weight: str = "mass",
    connectivity: int = 8,
    mean_factor: float = 1.0,
    binarize_threshold: float | None = None,
    rtol: float = DEFAULT_RTOL,
    chunk_maps: int = 4096,
    want_bottom: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Spatial entropy of every map of ``maps[M, R, C]`` -> (entropy[M], n_components[M],
    bottom_row_share[M] or None): the one chunked implementation of criterion 2 and its variants.

    Args:
        component_weight: "mass" (component mass / mass of all components), "area" (cells / cells
            of all components) or "relu_mass" (component mass / the mass of *all* of ``B``,
            sub-threshold cells included: a map whose ``B`` has mass but no component scores 0).
        mean_factor: ``B = relu(A - mean_factor * mean(A))``.
        binarize_threshold: component cells are ``B > binarize_threshold``; None (the paper's rule,
            not allowed with relu_mass) keeps ``A > mean(A) + rtol * max|A|`` (see `DEFAULT_RTOL`).
        want_bottom: also the share of ``B``'s mass on the last row (with the paper's rule only).

    The maps of a chunk are stacked into one 3D array and labelled in one ``ndimage.label`` call
    whose 3x3x3 structuring element is empty in the two outer planes, so nothing connects across
    the stacking axis. Then only the surviving cells are touched: their labels, map index and ``B``
    values give, with ``np.bincount``, each component's weight, the map that owns it (all cells of
    a component lie in one map), and per-map totals, entropies and bottom-row shares. ``inf`` for a
    map with no component (relu_mass: no ``B`` mass), ``nan`` for a map with non-finite values.
    """
    check_weight(component_weight)
    relu_total = component_weight == "relu_mass"
    if binarize_threshold is None and relu_total:
        binarize_threshold = 0.0
    if want_bottom and binarize_threshold is not None:
        raise ValueError("want_bottom needs the paper's cell rule (binarize_threshold=None)")
    M, R, C = maps.shape
    RC = R * C
    ent = np.empty(M, dtype=np.float64)
    ncomp = np.zeros(M, dtype=np.int64)
    bottom = np.empty(M, dtype=np.float64) if want_bottom else None
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = _structure_2d(int(connectivity))
    step = max(1, int(chunk_maps))
    for s in range(0, M, step):
        a = np.asarray(maps[s: s + step], dtype=np.float64).reshape(-1, RC)  # (m, R*C)
        m = a.shape[0]
        finite = np.isfinite(a).all(axis=1)
        if not finite.all():
            a = np.where(finite[:, None], a, 0.0)
        mean = float(mean_factor) * a.mean(axis=1) if mean_factor != 1.0 else a.mean(axis=1)  # (m,)
        keep = _component_cells(a, mean, binarize_threshold, rtol)  # (m, R*C) bool
        labels = np.empty((m, R, C), dtype=np.int32)
        n = int(ndimage.label(keep.reshape(m, R, C), structure=structure, output=labels))
        idx = np.flatnonzero(keep)  # surviving cells only (typically a fraction of all)
        row = idx // RC
        lab_s = labels.ravel()[idx].astype(np.intp) - 1  # 0-based component ids
        b_s = a.ravel()[idx] - mean[row]  # B on survivors (> 0)
        owner = np.empty(n, dtype=np.intp)
        owner[lab_s] = row
        if component_weight == "area":
            w = np.bincount(lab_s, minlength=n).astype(np.float64)
        else:
            w = np.bincount(lab_s, weights=b_s, minlength=n).astype(np.float64)
        total = np.bincount(owner, weights=w, minlength=m).astype(np.float64)
        if relu_total:  # + the relu mass of cells in no component (one component holding all of it gives p = 1)
            b_all = np.maximum(a - mean[:, None], 0.0)  # (m, R*C)
            total = total + np.where(keep, 0.0, b_all).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = w / total[owner] if n else w
            contrib = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        e = np.bincount(owner, weights=contrib, minlength=m).astype(np.float64)  # (int when empty)
        nc = np.bincount(owner, minlength=m)
        e[e <= 0.0] = 0.0  # -0.0 / round-off for single-component maps
        if relu_total:
            e[b_all.sum(axis=1) <= 0.0] = np.inf  # a constant map: nothing above the (scaled) mean
        else:
            e[nc == 0] = np.inf
        e[~finite] = np.nan
        ent[s: s + m] = e
        ncomp[s: s + m] = nc
        if bottom is not None:
            tot_b = np.bincount(row, weights=b_s, minlength=m).astype(np.float64)
            in_bottom = (idx - row * RC) >= (R - 1) * C
            bot_b = np.bincount(row[in_bottom], weights=b_s[in_bottom], minlength=m).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(tot_b > 0, bot_b / np.where(tot_b > 0, tot_b, 1.0), np.nan)
            share[~finite] = np.nan
            bottom[s: s + m] = share
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
    a = np.asarray(maps)
    if a.ndim < 2:
        raise ValueError(f"maps must be [..., rows, cols], got shape {a.shape}")
    lead, (R, C) = a.shape[:-2], a.shape[-2:]
    M = int(np.prod(lead, dtype=np.int64)) if lead else 1
    if M == 0 or R * C == 0:
        return np.full(lead, np.inf), np.zeros(lead, dtype=np.int64)
    ent, nc, _ = entropy_components(a.reshape(M, R, C), component_weight=component_weight, connectivity=int(connectivity),
                                    rtol=rtol, chunk_maps=chunk_maps)
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


def _component_cells(a: np.ndarray, mean: np.ndarray, binarize_threshold: float | None, rtol: float) -> np.ndarray:
    """The cells that can form components, ``a[m, R*C]`` -> bool ``[m, R*C]``: the paper's rule
    ``A > mean + rtol * max|A|`` (as `spatial_entropy_details`), or ``B > binarize_threshold`` with
    ``B = relu(A - mean)``."""
    if binarize_threshold is None:
        scale = np.maximum(a.max(axis=1), -a.min(axis=1))
        return a > (mean + rtol * scale)[:, None]
    return a - mean[:, None] > float(binarize_threshold)
