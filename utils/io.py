"""Atomic file writes, JSONL reading with line-numbered errors, regular-file opening, image loading.

* Every output file goes through `atomic_write_*`: a temp file in the same folder (its name carries
  this host and pid, so a clean-up can tell a live writer's file from a dead one's: `temp_owner`),
  fsync, then `os.replace`.
* Manifests are append-only JSONL: `append_jsonl` first repairs a torn tail (a line cut by a kill
  or a full disk gets its newline, so it stays one unreadable line and the new row is intact), and
  `read_jsonl_lenient` skips unreadable lines.
* Inputs are opened only when they are regular files (`open_regular`): a FIFO, device, socket or
  folder (also behind a symlink) is refused with a message instead of blocking forever.
* Images: `load_image` (utils/images.py) is the one loader of every stage, figure and the chat.
* CSV: every cell the tool writes passes `spreadsheet_cell` (text that a spreadsheet would run as a
  formula gets a leading `'`, the OWASP CSV-injection rule); `csv_text` writes whole tables with it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np



def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def host_tag() -> str:
    """8 hex digits naming this host in temp-file names (host names can be long or odd)."""
    return hashlib.blake2b(socket.gethostname().encode("utf-8", "replace"), digest_size=4).hexdigest()


_TEMP_RE = re.compile(r"\.([0-9a-f]{8})-(\d+)\.[^.]*\.tmp$")


def temp_owner(name: str) -> tuple[str, int] | None:
    """(host tag, pid) of a temp file written by `atomic_write_bytes`, None for other names."""
    m = _TEMP_RE.search(name)
    return (m.group(1), int(m.group(2))) if m else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    Temp file `.<name>.<host>-<pid>.<random>.tmp` in the same folder, fsync, then os.replace
    (atomic on POSIX), then fsync the folder. On any failure the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{host_tag()}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems refuse to fsync a directory
        pass
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line and fsync. A torn last line (a kill or a full disk mid-write) is first
    closed with a newline, so it stays one unreadable line (skipped by `read_jsonl_lenient`) and
    the new line is whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(obj, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl_lenient(path: str | os.PathLike) -> list[dict]:
    """Read a file we wrote ourselves; skips unreadable (torn) lines left by a kill or a full disk."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


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


FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula (OWASP)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)")


def spreadsheet_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: text starting with `=`, `+`, `-`, `@`, a tab
    or a CR gets a leading `'` (OWASP's CSV-injection rule); numbers, and text that is a plain
    number (`-0.5`, `-inf`), stay as they are.

    Args:
        value: the cell (any type; only `str` cells can change).
    """
    if isinstance(value, str) and value.startswith(FORMULA_LEAD) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def spreadsheet_row(row: Any) -> Any:
    """`spreadsheet_cell` on every cell of a row: a sequence (-> list) or a mapping (-> dict, same keys)."""
    if isinstance(row, Mapping):
        return {k: spreadsheet_cell(v) for k, v in row.items()}
    return [spreadsheet_cell(v) for v in row]


def csv_text(rows: Any, fieldnames: list[str] | None = None, lineterminator: str = "\r\n") -> str:
    """A whole CSV table as text, every cell through `spreadsheet_cell`.

    Args:
        rows: sequences (the first one the header when `fieldnames` is None) or mappings keyed by `fieldnames`.
        fieldnames: the columns of mapping rows (written as the header).
        lineterminator: the csv module's line end (its default, CRLF, unless a file chose otherwise).
    """
    buf = io.StringIO()
    if fieldnames is not None:
        w: Any = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator=lineterminator)
        w.writeheader()
    else:
        w = csv.writer(buf, lineterminator=lineterminator)
    w.writerows(spreadsheet_row(r) for r in rows)
    return buf.getvalue()
