"""JSONL sample files: `{"id", "prompt", "image_path", optional "bbox", "answer", "group", "mask"}` per line.

The file is validated before any model is loaded; every broken line is reported with its
file and line number. Relative image paths resolve against the JSONL file's folder.

Ids become file names through `file_stem` only (records, figures, analyses, every stage and view):
deterministic, collision-free, at most `STEM_MAX_BYTES` bytes. Two rows whose names would still
meet (the same id, ids differing only in case, a hash collision) are reported up front with both
`file:line`s.

Large files are validated streaming (`load_selection`): every line must parse and carry a valid
id (the id and file-name clash checks see every row, 8 bytes each: a hash of its file-name key);
only the rows inside `start_index`/`end_index`/`shard` get the full row checks (`_check_row`,
utils/row_values.py) and are kept. Only when two hashes meet is the file read a second time, to
name the clashing lines exactly.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UserError
from utils.jsonl import LineError, iter_json_lines
from utils.row_values import row_value_problem
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
    if obj.get("answer") is not None and not isinstance(obj["answer"], (str, int, float)):
        return None, '"answer" must be a string'
    if obj.get("group") is not None and not isinstance(obj["group"], str):  # a number or object is refused alike
        return None, f'"group" must be a string (or absent: the row is in no group), got {type(obj["group"]).__name__}'
    p = Path(obj["image_path"]).expanduser()
    if not p.is_absolute():
        p = base / p
    extra = {k: v for k, v in obj.items() if k not in KNOWN_KEYS}
    return Row(
        id=str(rid), prompt=obj["prompt"], image_path=str(p), line=0, bbox=bbox,
        answer=None if obj.get("answer") is None else str(obj["answer"]),
        group=obj.get("group"), mask=obj.get("mask"), extra=extra,
    ), None


def load_rows(path: str | Path, require: tuple[str, ...] = ()) -> list[Row]:
    """Parse and validate a whole JSONL file (streaming, `load_selection`); raise one UserError
    listing every bad line.

    require: optional keys every row must have for the stage at hand (e.g. ("bbox",) for evaluate).
    """
    return load_selection(path, require).rows


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


# ---------------------------------------------------------------------------------------------
# streaming selection: the rows a run needs, memory bounded in the row count
# ---------------------------------------------------------------------------------------------
MAX_SHOWN = 20


@dataclass
class RowSelection:
    """rows: the selected rows (validated, file order); in_range: rows in [start_index, end_index)
    before sharding; total: rows in the file."""

    rows: list[Row]
    in_range: int
    total: int


def _id_problem(obj) -> str | None:
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    rid = obj.get("id")
    if rid is None:
        return f"missing key(s) {[k for k in ('id', 'prompt', 'image_path') if k not in obj]}"
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
        return f'"id" must be a non-empty string or integer, got {_short(repr(rid))}'
    if len(str(rid)) > MAX_ID_CHARS:
        return f'"id" is {len(str(rid))} characters long; at most {MAX_ID_CHARS}'
    return None


def _key(rid) -> str:
    """What two rows must not share: their record file's name, case-folded."""
    return file_stem(str(rid)).casefold()


class _Errors:
    """The first MAX_SHOWN error lines and a count (memory stays bounded on a broken million-row file)."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_SHOWN:
            self.shown.append(text)

    def raise_if_any(self, path: Path) -> None:
        if self.count:
            more = f"\n  ... and {self.count - MAX_SHOWN} more" if self.count > MAX_SHOWN else ""
            raise UserError(f"{self.count} bad line(s) in {path}; fix them and run again:\n  "
                            + "\n  ".join(self.shown) + more)


def load_selection(path: str | Path, require: tuple[str, ...] = (), start_index: int = 0,
                   end_index: int | None = None, shard: str | None = None, progress: bool = True) -> RowSelection:
    """Validate `path` streaming and keep the rows [start_index, end_index), then every n-th from i
    for shard="i/n" (as utils.data.select_rows); one UserError lists every bad line.

    Args:
        require: keys every selected row must have for the stage at hand (("bbox",) for evaluate).
        progress: a tqdm bar of bytes read past a few seconds.
    """
    path = Path(path).expanduser()
    base = path.resolve().parent
    si, sn = parse_shard(shard) if shard else (0, 1)
    keys = array("q")  # one 64-bit hash per row: the id / file-name clash check sees every row
    errors = _Errors()
    rows: list[Row] = []
    index = in_range = 0
    for n, obj in iter_json_lines(path, progress=progress):
        if isinstance(obj, LineError):
            errors.add(f"{path}:{n}: {obj.message}")
            index += 1
            continue
        err = _id_problem(obj)
        if err is None:
            keys.append(hash(_key(obj["id"])))
            chosen = index >= start_index and (end_index is None or index < end_index)
            if chosen:
                in_range += 1
            if chosen and (index - start_index) % sn == si:
                row, err = _check_row(obj, base)
                if err is None and row is not None:
                    err = row_value_problem(obj, row.bbox) or next(
                        (f'missing "{k}" (needed by this stage)' for k in require if getattr(row, k) is None), None)
                if err is None and row is not None:
                    row.line = n
                    rows.append(row)
        if err is not None:
            errors.add(f"{path}:{n}: {err}")
        index += 1
    if errors.count == 0 and not index:
        raise UserError(f"{path} has no samples")
    if _has_clash(keys):
        _report_clashes(path, keys, errors)
    errors.raise_if_any(path)
    return RowSelection(rows=rows, in_range=in_range, total=index)


def _has_clash(keys: array) -> bool:
    k = np.sort(np.frombuffer(keys, dtype=np.int64)) if len(keys) else np.zeros(0, np.int64)
    return bool(k.size > 1 and (k[1:] == k[:-1]).any())


def _report_clashes(path: Path, keys: array, errors: _Errors) -> None:
    """Second pass, only over the rows whose hash meets another's: exact duplicate ids are bad lines
    (as before), ids that only share a file name raise the file-name clash error (utils.data)."""
    k = np.frombuffer(keys, dtype=np.int64)
    uniq, counts = np.unique(k, return_counts=True)
    suspects = set(uniq[counts > 1].tolist())
    first_line: dict[str, int] = {}
    named: list[Row] = []
    for n, obj in iter_json_lines(path, progress=False):
        if isinstance(obj, LineError) or _id_problem(obj) is not None or hash(_key(obj["id"])) not in suspects:
            continue
        rid = str(obj["id"])
        if rid in first_line:
            errors.add(f'{path}:{n}: duplicate id "{_short(rid)}" (first on line {first_line[rid]})')
            continue
        first_line[rid] = n
        named.append(Row(id=rid, prompt="", image_path="", line=n))
    if errors.count == 0:
        check_file_names(named, path)
