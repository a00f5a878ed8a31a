"""JSONL sample files: `{"id", "prompt", "image_path", optional "bbox", "answer", "group", "mask"}` per line.

The whole file is validated before any model is loaded; every broken line is reported with its
file and line number. Relative image paths resolve against the JSONL file's folder.

Ids become file names through `file_stem` only (records, figures, analyses, every stage and view):
deterministic, collision-free, at most `STEM_MAX_BYTES` bytes. Two rows whose names would still
meet (the same id, ids differing only in case, a hash collision) are reported up front with both
`file:line`s.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.errors import UserError
from utils.io import iter_jsonl
from utils.masks import check_mask

KNOWN_KEYS = {"id", "prompt", "image_path", "bbox", "answer", "group", "mask"}


@dataclass
class Row:
    id: str
    prompt: str
    image_path: str  # absolute
    line: int
    bbox: list[float] | None = None  # [x, y, w, h] in original-image pixels
    answer: str | None = None
    group: str | None = None
    mask: Any = None  # COCO RLE dict or polygon list (utils/masks.py), original pixels; not copied into records
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


MAX_ID_CHARS = 4096
STEM_MAX_BYTES = 120  # + ".safetensors" / "_L31H31.png" / temp-file decorations stays under 255 bytes
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_PREFIX_BYTES = 80


def file_stem(sample_id: Any) -> str:
    """The file-name stem of a sample id: the id itself when it is already a safe name (ASCII
    letters, digits, `._-`, not starting with `.` or `-`, at most STEM_MAX_BYTES bytes), else a
    readable sanitised prefix (cut at a UTF-8 character boundary) + `~` + 16 hex digits of the
    blake2b hash of the whole id. Safe names never contain `~`, so the two kinds never meet, and
    `a/b`, `a_b`, `a?b`, `.`, `..` all get different names."""
    sid = str(sample_id)
    if _SAFE.fullmatch(sid) and len(sid) <= STEM_MAX_BYTES:
        return sid
    digest = hashlib.blake2b(sid.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    keep = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in sid).lstrip(".-")
    raw = keep.encode("utf-8", "ignore")[:_PREFIX_BYTES].decode("utf-8", "ignore")  # whole characters only
    return f"{raw or 'id'}~{digest}"


def check_file_names(rows: list["Row"], path: str | Path) -> None:
    """Two rows whose ids would name one file (also on a case-insensitive file system): one
    UserError listing every such pair with both `file:line`s."""
    seen: dict[str, Row] = {}
    clashes = []
    for r in rows:
        key = file_stem(r.id).casefold()
        if key in seen:
            o = seen[key]
            clashes.append(f'{path}:{r.line}: id "{_short(r.id)}" and {path}:{o.line}: id "{_short(o.id)}" '
                           f"would share the record file {file_stem(r.id)!r}; rename one of them")
        else:
            seen[key] = r
    if len(clashes) == 1:
        raise UserError(clashes[0])
    if clashes:
        shown = "\n  ".join(clashes[:20])
        more = f"\n  ... and {len(clashes) - 20} more" if len(clashes) > 20 else ""
        raise UserError(f"{len(clashes)} file-name clash(es) in {path}:\n  {shown}{more}")


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _check_row(obj: Any, base: Path) -> tuple[Row | None, str | None]:
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    missing = [k for k in ("id", "prompt", "image_path") if k not in obj]
    if missing:
        return None, f"missing key(s) {missing}"
    rid = obj["id"]
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
        return None, f'"id" must be a non-empty string or integer, got {_short(repr(rid))}'
    if len(str(rid)) > MAX_ID_CHARS:
        return None, f'"id" is {len(str(rid))} characters long; at most {MAX_ID_CHARS}'
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
    mask_err = None if obj.get("mask") is None else check_mask(obj["mask"])
    if mask_err:
        return None, mask_err
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
        group=None if obj.get("group") is None else str(obj["group"]), mask=obj.get("mask"), extra=extra,
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
            errors.append(f'{path}:{n}: duplicate id "{_short(row.id)}" (first on line {seen[row.id]})')
            continue
        seen[row.id] = n
        rows.append(row)
    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise UserError(f"{len(errors)} bad line(s) in {path}; fix them and run again:\n  {shown}{more}")
    if not rows:
        raise UserError(f"{path} has no samples")
    check_file_names(rows, path)
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
