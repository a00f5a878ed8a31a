"""A run that fails before any work leaves its `output_dir=` as it found it (issue 31, item 6).

The entry point's preflight (utils/preflight.py, before Hydra starts) calls `remember_output_dir`:
whether the folder existed, and its top-level entries. When the run then fails with one line
(utils/cli.py `_fail`), `undo_idle_run` compares: if everything the run added is bookkeeping
(`IDLE`: the lock, the log, the plan of the rows), a folder the run created is removed entirely, with
the parents it created; a folder that existed keeps only what it had (added files removed, a log
cut back to its old length, a plan or lock file given back its old bytes). A run that wrote
anything else (a record, a table) did work: its folder is kept whole, its log says what failed.
The error line is always on stderr.
"""

from __future__ import annotations

import fnmatch
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# what a run that did no work adds to its output folder (`<job>.log` besides)
IDLE = (".hydra", ".lock", ".lock.shard*", "manifest*.plan.json")
_SMALL = 1 << 20  # bytes: pre-existing bookkeeping files up to this size are kept to be given back


@dataclass
class FolderBefore:
    """An output folder as the preflight found it."""

    path: Path
    first_new: Path | None  # the topmost folder on the way that did not exist (None: `path` existed)
    names: frozenset[str] = frozenset()
    sizes: dict[str, int] = field(default_factory=dict)  # pre-existing logs: their length
    contents: dict[str, bytes] = field(default_factory=dict)  # pre-existing small bookkeeping files


_before: FolderBefore | None = None


def _idle(name: str, log: str | None) -> bool:
    return any(fnmatch.fnmatch(name, pat) for pat in IDLE) or (name == log if log else name.endswith(".log"))


def remember_output_dir(path: str | Path | None) -> FolderBefore | None:
    """Note how `path` is before the run (None: forget any earlier note). Returns the note.

    Args:
        path: the run's `output_dir=` as given on the command line (before it is created).
    """
    global _before
    if path is None:
        _before = None
        return None
    p = Path(path).expanduser().absolute()
    if not p.exists():
        first = p
        while not first.parent.exists():
            first = first.parent
        _before = FolderBefore(p, first)
        return _before
    if not p.is_dir():
        _before = None  # the preflight refuses it
        return None
    names, sizes, contents = set(), {}, {}
    for e in p.iterdir():
        names.add(e.name)
        if e.is_file() and _idle(e.name, None):
            size = e.stat().st_size
            if e.name.endswith(".log"):
                sizes[e.name] = size
            elif size <= _SMALL:
                contents[e.name] = e.read_bytes()
    _before = FolderBefore(p, None, frozenset(names), sizes, contents)
    return _before


def undo_idle_run(output_dir: str | Path | None, log: str | None = None) -> bool:
    """Leave `output_dir` as `remember_output_dir` found it when the failed run added only bookkeeping.
    Returns whether it did; never raises (cleaning up must not hide the error line).

    Args:
        output_dir: the failed run's `output_dir=` (None: Hydra's own folder, see utils/cli.py).
        log: the run's log file name (`<job>.log`); None: any `*.log`.
    """
    global _before
    note, _before = _before, None
    try:
        if note is None or not output_dir or Path(output_dir).expanduser().absolute() != note.path:
            return False
        folder = note.path
        if not folder.is_dir():
            return False
        added = [e for e in folder.iterdir() if e.name not in note.names]
        if any(not _idle(e.name, log) for e in added):
            return False  # work was done: keep it all
        from utils.runlock import live_holder

        if live_holder(folder):  # another shard holds the folder: its lock files are not ours to remove
            return False
        if note.first_new is not None:
            shutil.rmtree(folder)
            parent = folder.parent
            while folder != note.first_new and parent != note.first_new.parent and not any(parent.iterdir()):
                parent.rmdir()  # the folders the run created on the way, while empty
                folder, parent = parent, parent.parent
            return True
        for e in added:
            shutil.rmtree(e) if e.is_dir() else e.unlink()
        _give_back(folder, note)
        return True
    except Exception:  # noqa: BLE001
        return False


def _give_back(folder: Path, note: FolderBefore) -> None:
    """Pre-existing logs cut back to their old length; small bookkeeping files given their old bytes."""
    for name, size in note.sizes.items():
        p = folder / name
        if p.is_file() and p.stat().st_size > size:
            with open(p, "r+b") as f:
                f.truncate(size)
    for name, data in note.contents.items():
        p = folder / name
        if not p.is_file() or p.read_bytes() != data:
            p.write_bytes(data)
