"""The head files of a selection: heads.csv and heads_by_layer.json written, heads.json read back (`heads_from_file`).

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

from pathlib import Path

from utils.errors import UserError
from utils.files import read_text_regular
from utils.io import atomic_write_json, atomic_write_text, spreadsheet_row


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
            w.writerow(spreadsheet_row(
                [l, h, _csv_float(s[l, h]), _csv_float(e[l, h]), int(f[l, h]), str(bool(el[l, h])).lower(), str(bool(se[l, h])).lower()]
            ))
    atomic_write_text(path, buf.getvalue())


def write_heads_by_layer(path: Any, heads: Any) -> Path:
    """heads_by_layer.json: the selected heads as a plain ``{"layer": [head, ...]}`` (model indices,
    layers and heads ascending; JSON keys are strings), the form other head tools read.

    Args:
        path: the file to write (atomically).
        heads: (layer, head) pairs, or heads.json's ``heads`` dicts with ``layer`` and ``head``.
    """
    pairs = sorted({(int(h["layer"]), int(h["head"])) if isinstance(h, Mapping) else (int(h[0]), int(h[1])) for h in heads})
    by_layer: dict[str, list[int]] = {}
    for layer, head in pairs:
        by_layer.setdefault(str(layer), []).append(head)
    return atomic_write_json(path, by_layer, indent=None)


def heads_from_file(path: str, top_k: int | None = None) -> list[tuple[int, int]]:
    """(layer, head) pairs of a heads.json (its `heads`, else its `ranked` list), the first `top_k`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"heads_file not found: {p} (a heads.json written by stage=select or stage=batch)")
    try:
        d = json.loads(read_text_regular(p, "heads_file"))
        heads = [(int(h["layer"]), int(h["head"])) for h in (d["heads"] if "heads" in d else d["ranked"])]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise UserError(f"{p}: not a heads.json file ({type(e).__name__}: {str(e)[:100]})") from None
    return heads[:top_k] if top_k else heads
