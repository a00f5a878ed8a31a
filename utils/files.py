"""Opening user files safely: regular files only (never block on a FIFO or device), content digests."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from utils.errors import UserError


_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, what: str = "file") -> int:
    """Open `path` for reading only if it is a regular file (symlinks followed); returns an fd.

    FIFOs, devices, sockets and folders are refused with a UserError naming the path: opening them
    could block forever or read without end. The check is made on the opened descriptor (opened
    non-blocking, so a FIFO cannot hang the open itself), not only on the name.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {p}") from None
    except OSError as e:
        raise UserError(f"cannot open {what} {p}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {p} is {_kind(st.st_mode)}, not a regular file")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UserError(f"cannot open {what} {p}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UserError(f"{what} {p} is {_kind(st.st_mode)}, not a regular file")
    return fd


def file_digest(path: str | os.PathLike, what: str = "file") -> str:
    """blake2b-128 of a regular file's bytes (hex); UserError if it cannot be read."""
    h = hashlib.blake2b(digest_size=16)
    fd = open_regular(path, what)
    try:
        with os.fdopen(fd, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    return h.hexdigest()


def read_text_regular(path: str | os.PathLike, what: str = "file", max_bytes: int = 64 << 20) -> str:
    """A small text file's content (UTF-8), from a regular file only and at most `max_bytes`."""
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UserError(f"{what} {path} is larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None
