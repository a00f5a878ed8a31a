"""Variants of the two criteria, as options (docs/fidelity.md): the formulas of Kang et al.'s released code.

Each function is one rule on its own; `method=kang_release` (config/method/) sets them together.

* `chord_raw_threshold`: the elbow of the *ascending* sorted S_img curve by the chord method with
  unscaled axes (x = rank 0..n-1, y = S_img): the point farthest from the line joining the first
  and last points, the first one on ties; the threshold is that point's S_img and heads with
  ``S_img >= threshold`` pass. With x spanning n-1 and y spanning about 1 the distance is close to
  the vertical gap below the chord, so this elbow differs from the scaled chord of `lab.criteria.elbow`.
* the release's entropy (``B = relu(A - f * mean(A))``, component cells ``B > t``, "relu_mass"
  weights: component mass / the mass of *all* of ``B``) is `lab.criteria.entropy.entropy_components`
  with ``mean_factor``, ``binarize_threshold`` and ``component_weight="relu_mass"``.
* `bottom_row_any_cell`: a head is a bottom-row artifact when any cell of the grid's last row has
  raw attention ``> cell`` (the release v2's rule; `lab.criteria.entropy.bottom_row_share` is the
  share-of-mass rule).
"""

from __future__ import annotations

import numpy as np


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


def bottom_row_any_cell(maps: np.ndarray, cell: float = 0.05) -> np.ndarray:
    """``maps[..., R, C] -> bool[...]``: some cell of the last row holds attention ``> cell``."""
    a = np.asarray(maps, dtype=np.float64)
    return (a[..., -1, :] > float(cell)).any(axis=-1)
