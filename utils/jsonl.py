"""Streaming reading of a user's JSONL file: one line at a time, every problem named by `file:line`.

* The file is read as bytes, line by line (a line longer than MAX_LINE_BYTES is one error, never
  held whole), so memory does not grow with the file.
* A file that is not JSONL text at all (gzip / bzip2 / xz / zstd / zip data, UTF-16 or UTF-32 with a
  byte-order mark) is refused at once with one line naming the format; a UTF-8 BOM at the start is
  accepted (some editors write one).
* Per line: not UTF-8 (the byte and its column), a NUL byte, JSON nested too deeply, a duplicate
  key in one object (naming the key), invalid JSON (the parser's message and column).
* A tqdm bar (bytes read) appears when reading takes longer than PROGRESS_DELAY_S.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from utils.errors import UserError
from utils.files import open_regular

MAX_LINE_BYTES = 16 << 20
PROGRESS_DELAY_S = 2.0
_BOM8 = b"\xef\xbb\xbf"
# (magic bytes at the start of the file, what the file is, what to do)
_NOT_TEXT = [
    (b"\x1f\x8b", "gzip-compressed", "decompress it first (gunzip -k FILE)"),
    (b"BZh", "bzip2-compressed", "decompress it first (bunzip2 -k FILE)"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (unxz -k FILE)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first (unzstd FILE)"),
    (b"PK\x03\x04", "a zip archive", "extract the .jsonl from it"),
    (b"\xff\xfe\x00\x00", "UTF-32 text (byte-order mark FF FE 00 00)", "save it as UTF-8"),
    (b"\x00\x00\xfe\xff", "UTF-32 text (byte-order mark 00 00 FE FF)", "save it as UTF-8"),
    (b"\xff\xfe", "UTF-16 text (byte-order mark FF FE)", "save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text (byte-order mark FE FF)", "save it as UTF-8"),
]


@dataclass(frozen=True)
class LineError:
    """One unreadable line: its number and what is wrong (no file name; the caller adds it)."""

    line: int
    message: str


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    """json object hook: a key given twice in one object is an error naming the key."""
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return d


def parse_line(raw: bytes, first: bool = False) -> Any:
    """One line's bytes -> its JSON value, or a LineError-ready message (str) when it is unreadable."""
    if first and raw.startswith(_BOM8):
        raw = raw[3:]
    if b"\x00" in raw:
        col = raw.index(b"\x00") + 1
        return _Problem(f"contains a NUL byte at column {col} (UTF-16 text or binary data?); "
                        "save the file as UTF-8 JSONL")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return _Problem(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}; Latin-1 or another "
                        "encoding?); save the file as UTF-8")
    if not text.strip():
        return _BLANK
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        return _Problem(f'duplicate key "{str(e)[:80]}" in one object; give each key once')
    except RecursionError:
        return _Problem("JSON nested too deeply")
    except json.JSONDecodeError as e:
        return _Problem(f"not valid JSON ({e.msg} at column {e.colno})")


class _Problem(str):
    """A line's problem (a str subclass, so it never meets a parsed JSON string by accident)."""


_BLANK = object()


def sniff_format(path: Path, head: bytes) -> None:
    """Refuse a file that is compressed, an archive, or UTF-16/32 text: one UserError naming it."""
    for magic, what, todo in _NOT_TEXT:
        if head.startswith(magic):
            raise UserError(f"{path}:1: the file is {what}, not UTF-8 JSONL text; {todo}")


def iter_json_lines(path: str | os.PathLike, progress: bool = True, what: str = "data file") -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON value | LineError) for every non-blank line, streaming.

    Args:
        path: the JSONL file (a regular file; a FIFO or device is refused, never read).
        progress: show a tqdm bar of bytes read once reading has taken PROGRESS_DELAY_S seconds.
        what: the file's role in messages ("data file").
    """
    from tqdm import tqdm

    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path} (set data_file=<path to a .jsonl file>)")
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb", buffering=1 << 20) as f:
        size = os.fstat(f.fileno()).st_size
        sniff_format(path, f.peek(8)[:8])
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", delay=PROGRESS_DELAY_S,
                   disable=not progress, leave=False)
        try:
            n, pending = 0, 0
            while True:
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    break
                n += 1
                pending += len(raw)
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    pending += _skip_rest_of_line(f)
                    yield n, LineError(n, f"line longer than {MAX_LINE_BYTES >> 20} MiB; one sample is a short JSON object")
                    continue
                value = parse_line(raw, first=n == 1)
                if pending > 1 << 20:
                    bar.update(pending)
                    pending = 0
                if value is _BLANK:
                    continue
                yield n, (LineError(n, str(value)) if isinstance(value, _Problem) else value)
            bar.update(pending)
        finally:
            bar.close()


def _skip_rest_of_line(f) -> int:
    """Read past the rest of an over-long line in chunks; returns the bytes skipped."""
    skipped = 0
    while True:
        chunk = f.readline(1 << 20)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped
