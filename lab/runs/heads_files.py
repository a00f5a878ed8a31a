"""The head files of a selection: heads.json (an earlier one kept), heads.csv and heads_by_layer.json written;
heads.json read back and checked (`read_heads_file`), the heads a stage uses (`heads_to_use`), checked against the
model (`check_against_model`).

JSON convention: every ``to_dict`` / ``to_json_dict`` of the analysis is strict JSON (no NaN/Infinity
tokens): non-finite floats are written as ``null``. For spatial entropy ``null`` means "no
above-mean component" (``inf``) or a map with non-finite values (``nan``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pathlib import Path

from utils.errors import UserError
from utils.files import read_text_regular
from utils.settings.declarations import excluded_layers
from utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, spreadsheet_row


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
    return read_heads_file(path, top_k).heads


@dataclass(frozen=True)
class HeadsFile:
    """A heads.json read back: its first `top_k` heads, how many it lists, each sample's own (if any)."""

    path: Path
    heads: list[tuple[int, int]]
    total: int
    per_sample: dict[str, list[tuple[int, int]]] | None = None

    def all_heads(self) -> list[tuple[int, int]]:
        """Its heads and every sample's own."""
        return self.heads + [h for v in (self.per_sample or {}).values() for h in v]

    def line(self, stage: str, own_folder: bool, top_k: int | None) -> str:
        """The console line saying which heads a stage uses and from where."""
        cut = f" (its first {len(self.heads)} of {self.total}: top_k={top_k})" if len(self.heads) < self.total else ""
        mine = ", and each sample's own heads (per_sample)" if self.per_sample is not None else ""
        again = "; this folder's heads.json, reselect=true selects them again" if own_folder else ""
        return f"{stage}: using heads {', '.join(f'L{l}H{h}' for l, h in self.heads)}{cut}{mine} from {self.path}{again}"


def read_heads_file(path: Any, top_k: int | None = None) -> HeadsFile:
    """A heads.json's heads (its `heads`, else its `ranked` list; the first `top_k`) and its
    `per_sample` heads; an entry whose layer or head is not a whole number >= 0, or an empty list,
    is a UserError naming the file and the entry."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"heads_file not found: {p} (a heads.json written by stage=select or stage=batch)")
    try:
        d = json.loads(read_text_regular(p, "heads_file"))
        raw = d["heads"] if "heads" in d else d["ranked"]
        heads = [_head_pair(p, f"heads entry {i + 1}", h, (h["layer"], h["head"])) for i, h in enumerate(raw)]
        own = d.get("per_sample")
        per_sample = None if own is None else {
            str(sid): [_head_pair(p, f"per_sample {str(sid)[:40]!r} entry {i + 1}", h, tuple(h)) for i, h in enumerate(v)]
            for sid, v in own.items()}
    except UserError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise UserError(f"{p}: not a heads.json file ({type(e).__name__}: {str(e)[:100]})") from None
    if not heads:
        raise UserError(f"{p}: its heads list is empty, no head to use; run stage=select again or list at least "
                        'one {"layer": L, "head": H}')
    return HeadsFile(p, heads[:top_k] if top_k else heads, len(heads), per_sample)


def _head_pair(path: Path, where: str, entry: Any, pair: tuple) -> tuple[int, int]:
    """(layer, head) of one heads.json entry, each a JSON whole number >= 0 (not 1.5, true or "1")."""
    if len(pair) != 2 or not all(type(x) is int and x >= 0 for x in pair):
        raise UserError(f"{path}: {where} {json.dumps(entry)[:80]}: layer and head must be whole numbers >= 0 "
                        f"(got {', '.join(f'{type(x).__name__} {x!r}' for x in pair)})")
    return int(pair[0]), int(pair[1])


def heads_to_use(heads_file: str | None, reselect: bool, output_dir: Path, top_k: int | None, stage: str,
                 per_sample: bool = False) -> HeadsFile | None:
    """The heads stage=evaluate / stage=ablate use without selecting: `heads_file=`, else the output
    folder's heads.json unless `reselect`; printed in one line. None: select them (no such file).

    Args:
        heads_file: the `heads_file=` setting (None: not given).
        reselect: the `reselect=` setting: select again even when the folder has a heads.json.
        output_dir: the run folder.
        top_k: heads taken from the file (its first `top_k`).
        stage: the stage's name, for the printed line.
        per_sample: the stage grounds each sample with its own heads (selection.ranking=per_sample):
            the folder's heads.json's `per_sample` are kept (a `heads_file=` is used as one head set).
    """
    own = Path(output_dir) / "heads.json"
    if heads_file:
        path, own_folder = Path(heads_file), False
    elif not reselect and (own.exists() or own.is_symlink()):
        path, own_folder = own, True
    else:
        return None
    found = read_heads_file(path, top_k)
    if not (per_sample and own_folder):
        found = dataclasses.replace(found, per_sample=None)
    print(found.line(stage, own_folder, top_k))
    return found


def check_against_model(heads: Sequence[tuple[int, int]] | None, exclude_layers: Sequence[int] | None,
                        num_layers: int, num_heads: int, source: Any = None,
                        captured: Sequence[int] | None = None) -> None:
    """Refuse, in one line, heads the model does not have and a `selection.exclude_layers` naming a
    layer it does not have or leaving no layer to select from.

    Args:
        heads: model (layer, head) pairs (None: none to check), read from `source` (a file, for the line).
        exclude_layers: the `selection.exclude_layers` setting (None: the default, round(L/16) layers).
        num_layers / num_heads: the model's.
        captured: the model layers the records hold (strategy.layers; None: all).
    """
    bad = [f"L{l}H{h}" for l, h in heads or () if not (0 <= l < num_layers and 0 <= h < num_heads)]
    if bad:
        raise UserError(f"{source or 'heads'}: heads {', '.join(bad[:10])} are outside the model's {num_layers} "
                        f"layers x {num_heads} heads")
    check_exclude_layers(exclude_layers, num_layers, range(num_layers) if captured is None else captured)


def check_exclude_layers(exclude_layers: Sequence[int] | None, num_layers: int, captured: Sequence[int]) -> None:
    """`selection.exclude_layers` must name layers of the model and leave some `captured` layer."""
    shown = "unset (the first round(L/16) layers)" if exclude_layers is None else sorted({int(x) for x in exclude_layers})
    outside = sorted({int(x) for x in exclude_layers or () if int(x) >= num_layers})
    if outside:
        raise UserError(f"selection.exclude_layers={shown} names layer(s) {outside} the model does not have "
                        f"(it has {num_layers} layers, 0..{num_layers - 1})")
    wanted = set(excluded_layers(exclude_layers, num_layers))
    if all(int(layer) in wanted for layer in captured):
        raise UserError(f"selection.exclude_layers={shown} leaves no layer to select heads from (the records hold "
                        f"layers {[int(x) for x in captured][:40]}); exclude fewer")


def write_heads_json(path: Any, payload: Any) -> Path:
    """heads.json, written atomically; an existing one that differs is first kept beside it as
    `heads.<its time>.json` (a hand-edited or earlier selection is never lost), said in one line."""
    path = Path(path)
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    if path.is_file():
        old = path.read_bytes()
        if old != text.encode("utf-8"):
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
            keep, n = path.with_name(f"heads.{stamp}.json"), 1
            while keep.exists() and keep.read_bytes() != old:
                keep, n = path.with_name(f"heads.{stamp}-{n}.json"), n + 1
            atomic_write_bytes(keep, old)
            print(f"kept the previous heads.json as {keep} before replacing it")
    return atomic_write_text(path, text)
