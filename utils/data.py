"""JSONL sample files: `{"id", "prompt", "image_path", optional "bbox", "answer", "group"}` per line.

The whole file is validated before any model is loaded; every broken line is reported with its
file and line number. Relative image paths resolve against the JSONL file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.errors import UserError
from utils.io import iter_jsonl

KNOWN_KEYS = {"id", "prompt", "image_path", "bbox", "answer", "group"}


@dataclass
class Row:
    id: str
    prompt: str
    image_path: str  # absolute
    line: int
    bbox: list[float] | None = None  # [x, y, w, h] in original-image pixels
    answer: str | None = None
    group: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """What a record keeps of its row (ground truth for evaluate / ablate / visualize)."""
        d: dict[str, Any] = {"row_line": self.line}
        for k in ("bbox", "answer", "group"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.extra:
            d["row_extra"] = self.extra
        return d


def _check_row(obj: Any, base: Path) -> tuple[Row | None, str | None]:
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    missing = [k for k in ("id", "prompt", "image_path") if k not in obj]
    if missing:
        return None, f"missing key(s) {missing}"
    rid = obj["id"]
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
        return None, f'"id" must be a non-empty string or integer, got {rid!r}'
    if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
        return None, '"prompt" must be a non-empty string'
    if not isinstance(obj["image_path"], str) or not obj["image_path"]:
        return None, '"image_path" must be a non-empty string'
    bbox = obj.get("bbox")
    if bbox is not None:
        ok = isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        if not ok or bbox[2] <= 0 or bbox[3] <= 0:
            return None, f'"bbox" must be [x, y, w, h] with w, h > 0 (pixels of the original image), got {bbox!r}'
        bbox = [float(v) for v in bbox]
    for k in ("answer", "group"):
        if obj.get(k) is not None and not isinstance(obj[k], (str, int, float)):
            return None, f'"{k}" must be a string'
    p = Path(obj["image_path"]).expanduser()
    if not p.is_absolute():
        p = base / p
    extra = {k: v for k, v in obj.items() if k not in KNOWN_KEYS}
    return Row(
        id=str(rid), prompt=obj["prompt"], image_path=str(p), line=0, bbox=bbox,
        answer=None if obj.get("answer") is None else str(obj["answer"]),
        group=None if obj.get("group") is None else str(obj["group"]), extra=extra,
    ), None


def load_rows(path: str | Path, require: tuple[str, ...] = ()) -> list[Row]:
    """Parse and validate a whole JSONL file; raise one UserError listing every bad line.

    require: optional keys every row must have for the stage at hand (e.g. ("bbox",) for evaluate).
    """
    path = Path(path).expanduser()
    base = path.resolve().parent
    rows: list[Row] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for n, obj in iter_jsonl(path):
        if isinstance(obj, Exception):
            errors.append(f"{path}:{n}: not valid JSON ({obj.msg} at column {obj.colno})")  # type: ignore[attr-defined]
            continue
        row, err = _check_row(obj, base)
        if err is None and row is not None:
            for k in require:
                if getattr(row, k) is None:
                    err = f'missing "{k}" (needed by this stage)'
        if err is not None or row is None:
            errors.append(f"{path}:{n}: {err}")
            continue
        row.line = n
        if row.id in seen:
            errors.append(f'{path}:{n}: duplicate id "{row.id}" (first on line {seen[row.id]})')
            continue
        seen[row.id] = n
        rows.append(row)
    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise UserError(f"{len(errors)} bad line(s) in {path}; fix them and run again:\n  {shown}{more}")
    if not rows:
        raise UserError(f"{path} has no samples")
    return rows


def select_rows(rows: list[Row], start_index: int = 0, end_index: int | None = None, shard: str | None = None) -> list[Row]:
    """Rows [start_index, end_index), then every n-th from i for shard="i/n"."""
    out = rows[start_index:end_index]
    if shard:
        i, n = parse_shard(shard)
        out = [r for k, r in enumerate(out) if k % n == i]
    return out


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        i_s, n_s = str(shard).split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise UserError(f"shard={shard!r} must look like i/n, e.g. shard=0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"shard={shard!r}: need 0 <= i < n")
    return i, n
