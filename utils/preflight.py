"""Checks an entry point makes on its command line before Hydra starts (Hydra's log handler writes
into `output_dir` as soon as it sets up, and fails there with a traceback).

`check_output_dir_arg(argv)`: an `output_dir=` that cannot be a writable folder (an existing regular
file, a file on the way to it, a read-only location, new or existing) -> one line, exit 2.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from utils.errors import UserError

_KEYS = ("output_dir=", "+output_dir=", "++output_dir=")


def output_dir_arg(argv: list[str]) -> str | None:
    """The value of the last `output_dir=` override on the command line (None: not given, or one
    Hydra must resolve first: an interpolation)."""
    value = None
    for a in argv:
        for k in _KEYS:
            if a.startswith(k):
                value = a[len(k):]
    if value is None or "${" in value:
        return None
    v = value.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        v = v[1:-1]
    return v or None


def check_writable_folder(path: str | os.PathLike) -> Path:
    """Make sure `path` is (or can become) a folder this process can write to: creates it (as the
    run would) and writes then removes a probe file. Raises UserError with one line otherwise."""
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise UserError(f"output_dir={p} is an existing file, not a folder; give a folder (new or existing)")
    for parent in p.parents:  # a regular file on the way cannot hold a folder
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"output_dir={p}: {parent} is a file, not a folder; give another output_dir=")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"output_dir={p} cannot be written ({e.strerror or e}, errno {e.errno}); "
                        "give a writable folder") from None
    return p


def check_output_dir_arg(argv: list[str] | None = None) -> None:
    """Entry points call this before `main()`: an unusable `output_dir=` -> `error: ...`, exit 2.
    `--help`, `--cfg`, `--info` and shell completion never create anything."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "--hydra-help", "--info", "-i") or a.startswith(("--cfg", "-c", "--shell-completion", "-sc"))
           for a in argv):
        return
    value = output_dir_arg(argv)
    if value is None:
        return
    try:
        check_writable_folder(value)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(UserError.exit_code)
