"""Variants of the two criteria, as options (docs/fidelity.md): the formulas of Kang et al.'s released code.

Each function is one rule on its own; `method=kang_release` (config/method/) sets them together.

* `chord_raw_threshold`: the elbow of the *ascending* sorted S_img curve by the chord method with
  unscaled axes (x = rank 0..n-1, y = S_img): the point farthest from the line joining the first
  and last points, the first one on ties; the threshold is that point's S_img and heads with
  ``S_img >= threshold`` pass. With x spanning n-1 and y spanning about 1 the distance is close to
  the vertical gap below the chord, so this elbow differs from the scaled chord of `lab.criteria.elbow`.
* `relu_entropy_batch`: spatial entropy with ``B = relu(A - f * mean(A))``, component cells
  ``B > t`` and three weightings: "mass" (component mass / mass of all components), "area"
  (cells / cells of all components) and "relu_mass" (component mass / the mass of *all* of ``B``,
  sub-threshold cells included: the weights can sum to less than 1, and a map whose ``B`` has mass
  but no cell above ``t`` scores 0, the best possible value).
* `bottom_row_any_cell`: a head is a bottom-row artifact when any cell of the grid's last row has
  raw attention ``> cell`` (the release v2's rule; `lab.criteria.entropy.bottom_row_share` is the
  share-of-mass rule).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lab.criteria.entropy import _structure_2d

WEIGHTS = ("mass", "area", "relu_mass")


def chord_raw_threshold(values) -> tuple[float, int | None]:
    """(threshold, index in the ascending sorted finite values) of the unscaled chord elbow.

    No finite value: (-inf, None). One or two values: (their minimum, 0). A flat curve: its value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    y = np.sort(v[np.isfinite(v)])  # ascending
    n = int(y.size)
    if n == 0:
        return float("-inf"), None
    if n <= 2:
        return float(y[0]), 0
    pts = np.stack([np.arange(n, dtype=np.float64), y], axis=1)  # (n, 2): (rank, S_img)
    line = pts[-1] - pts[0]
    length = float(np.linalg.norm(line))
    if length == 0.0:
        return float(y[0]), 0
    unit = line / length
    vec = pts - pts[0]
    proj = (vec @ unit)[:, None] * unit  # (n, 2) projection on the chord
    dist = np.linalg.norm(vec - proj, axis=1)
    i = int(np.argmax(dist))  # first maximum
    return float(y[i]), i


def check_weight(component_weight: str) -> None:
    if component_weight not in WEIGHTS:
        raise ValueError(f"component_weight must be one of {', '.join(WEIGHTS)}, got {component_weight!r}")


def relu_entropy_batch(
    maps: np.ndarray,
    *,
    mean_factor: float = 1.0,
    threshold: float = 0.0,
    component_weight: str = "mass",
    connectivity: int = 8,
    chunk_maps: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Spatial entropy of every map in ``maps[M, R, C]`` -> (entropy[M], n_components[M]).

    ``B = max(A - mean_factor * mean(A), 0)`` (float64, mean over the R*C cells), component cells
    ``B > threshold``, connected components with ``connectivity`` (8 or 4), ``H = -sum p ln p``
    over the components' weights ``p > 0`` (see the module docstring). ``inf`` when there is no
    component ("mass"/"area") or when ``B`` has no mass at all ("relu_mass"); ``nan`` for a map
    with non-finite values. Labelled a chunk at a time in one ``ndimage.label`` call whose 3D
    structure does not connect across maps.
    """
    check_weight(component_weight)
    a_all = np.asarray(maps)
    if a_all.ndim != 3:
        raise ValueError(f"maps must be [M, rows, cols], got shape {a_all.shape}")
    M, R, C = a_all.shape
    RC = R * C
    ent = np.empty(M, dtype=np.float64)
    ncomp = np.zeros(M, dtype=np.int64)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = _structure_2d(int(connectivity))
    for s in range(0, M, max(1, int(chunk_maps))):
        a = np.asarray(a_all[s: s + chunk_maps], dtype=np.float64).reshape(-1, RC)  # (m, R*C)
        m = a.shape[0]
        finite = np.isfinite(a).all(axis=1)
        a = np.where(finite[:, None], a, 0.0)
        b = np.maximum(a - float(mean_factor) * a.mean(axis=1, keepdims=True), 0.0)  # (m, R*C)
        keep = b > float(threshold)
        labels = np.empty((m, R, C), dtype=np.int32)
        n = int(ndimage.label(keep.reshape(m, R, C), structure=structure, output=labels))
        idx = np.flatnonzero(keep)
        row = idx // RC
        lab = labels.ravel()[idx].astype(np.intp) - 1  # 0-based component ids
        owner = np.empty(n, dtype=np.intp)
        owner[lab] = row
        if component_weight == "area":
            w = np.bincount(lab, minlength=n).astype(np.float64)
        else:
            w = np.bincount(lab, weights=b.ravel()[idx], minlength=n).astype(np.float64)
        total = np.bincount(owner, weights=w, minlength=m).astype(np.float64)
        if component_weight == "relu_mass":  # + the relu mass of cells in no component (so one component
            total = total + np.where(keep, 0.0, b).sum(axis=1)  # holding all of it gives p = 1 exactly)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = w / total[owner] if n else w
            contrib = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        e = np.bincount(owner, weights=contrib, minlength=m).astype(np.float64)
        nc = np.bincount(owner, minlength=m)
        e[e <= 0.0] = 0.0  # -0.0 / round-off for single-component maps
        if component_weight == "relu_mass":
            e[b.sum(axis=1) <= 0.0] = np.inf  # a constant map: nothing above the (scaled) mean
        else:
            e[nc == 0] = np.inf
        e[~finite] = np.nan
        ent[s: s + m] = e
        ncomp[s: s + m] = nc
    return ent, ncomp


def bottom_row_any_cell(maps: np.ndarray, cell: float = 0.05) -> np.ndarray:
    """``maps[..., R, C] -> bool[...]``: some cell of the last row holds attention ``> cell``."""
    a = np.asarray(maps, dtype=np.float64)
    return (a[..., -1, :] > float(cell)).any(axis=-1)
