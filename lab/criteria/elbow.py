"""The elbow of the sorted S_img curve as criterion 1's threshold (kneedle or chord)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from lab.criteria.variants import chord_raw_threshold
from utils.settings.choices import ElbowMethod, is_choice, options
from utils.io import jsonable



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

    method="chord_raw": Kang et al.'s released chord (`lab.criteria.variants.chord_raw_threshold`):
    ascending curve, unscaled axes (x = rank, y = the value), first maximum; ``index`` is reported
    in the descending order like the others.

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
    if not is_choice(method, ElbowMethod):
        raise ValueError(f"elbow method must be one of {', '.join(options(ElbowMethod))}, got {method!r}")
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
    if method == "chord_raw":
        thr, i_asc = chord_raw_threshold(y)
        idx = None if i_asc is None else n - 1 - i_asc
        return Elbow(thr, idx, method, "chord_raw", True, "", n, int((y >= thr).sum()), n_bad)
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

    if knee_choice not in ("most_prominent", "first", "last"):
        raise ValueError(f"knee_choice must be 'most_prominent', 'first' or 'last', got {knee_choice!r}")
    knee = _kneedle_index(y, sensitivity, curve, interp_method, knee_choice)
    if knee is not None:
        return result(knee, "kneedle", True, "")
    if fallback == "chord":
        return chord("kneedle found no knee; used the chord method; ", False)
    return result(n - 1, "keep_all", False, "kneedle found no knee; keeping all")


def _kneedle_index(y: np.ndarray, sensitivity: float, curve: str, interp_method: str, knee_choice: str) -> int | None:
    """kneed's knee of the descending curve ``y`` (`elbow_threshold` says how each argument is used),
    or None when kneedle finds none."""
    from kneed import KneeLocator

    n = y.size
    if curve == "auto":  # concave when the normalised curve lies above its chord on average
        t = np.linspace(0.0, 1.0, n)
        ys = (y - y[-1]) / (y[0] - y[-1])  # 1 -> 0
        curve = "concave" if float(np.mean(ys - (1.0 - t))) > 0 else "convex"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kl = KneeLocator(np.arange(n), y, S=sensitivity, curve=curve, direction="decreasing",
                         interp_method=interp_method, online=knee_choice != "first")
    knees = sorted(int(x) for x in (kl.all_knees or ()) if x is not None)
    if kl.knee is None or not knees:
        return None
    if knee_choice == "first":
        return knees[0]
    if knee_choice == "last":
        return int(kl.knee)
    diff = np.asarray(kl.y_difference, dtype=np.float64)
    return max(knees, key=lambda i: (diff[i], -i))  # largest difference; ties: earliest
