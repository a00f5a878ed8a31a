"""Strict-JSON values and the head-table writers (heads.json, heads.csv); every file written atomically.

JSON convention: every ``to_dict`` / ``to_json_dict`` of the analysis is strict JSON (no NaN/Infinity
tokens): non-finite floats are written as ``null``. For spatial entropy ``null`` means "no
above-mean component" (``inf``) or a map with non-finite values (``nan``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Mapping

import numpy as np

from utils.io import atomic_write_text


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


def write_heads_json(selection: Any, path: Any, *, indent: int | None = 2) -> None:
    """Write ``selection.to_json_dict()`` (a `lab.selection.Selection`) atomically as strict JSON (no NaN/Infinity)."""
    atomic_write_text(path, json.dumps(selection.to_json_dict(), indent=indent, allow_nan=False) + "\n")


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
    atomic_write_text(path, buf.getvalue())
