"""Atomic file writes, JSONL reading with line-numbered errors, image loading with clear errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from utils.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    Temp file in the same folder, fsync, then os.replace (atomic on POSIX), then fsync the folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    """Append one JSON line and fsync: a manifest line is either fully there or not at all
    (a torn last line, from a kill mid-write, is skipped by `read_jsonl_lenient`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl_lenient(path: str | os.PathLike) -> list[dict]:
    """Read a file we wrote ourselves; skips a torn (partial) last line left by a killed process."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict | Exception]]:
    """Yield (line_number, parsed object or the parse error) for each non-blank line of a user file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file not found: {path} (set data_file=<path to a .jsonl file>)")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                yield n, e


def load_image(path: str | os.PathLike):
    """Open an image as RGB; a missing or unreadable file is a UserError naming the path."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise UserError(f"image not found: {p} (check image_file= or the row's image_path)")
    if p.is_dir():
        raise UserError(f"image path is a folder, not an image file: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot read image {p}: {e} (is it a valid PNG/JPEG?)") from None
