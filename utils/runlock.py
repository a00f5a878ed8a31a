"""One run per output folder: an advisory lock (fcntl.flock) on `<output_dir>/.lock`.

A run without a shard takes `.lock` exclusively; a shard run (`shard=i/n`, or a torchrun /
accelerate rank) takes `.lock` shared plus `.lock.shard<i>-of-<n>` exclusively. So shards of one
job cooperate in one folder, while a second copy of the same run (or a whole run next to shards)
is refused with a message naming the holder (pid, host, start time). The kernel drops a lock when
its process dies, even by SIGKILL, so a stale lock never blocks a resume.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from utils.errors import UserError
from utils.files import read_text_regular


class RunLock:
    """The locks one process holds on an output folder; `exclusive` tells whether no other run
    (shard or whole) can be writing there, and `since` when they were taken (time.time())."""

    def __init__(self, folder: Path, shard: tuple[int, int] | None):
        self.folder, self.shard = folder, shard
        self.exclusive = shard is None
        self.since = 0.0
        self._fds: list[int] = []
        self._holder_fd: int | None = None

    def _holder(self, path: Path) -> str:
        try:
            d = json.loads(read_text_regular(path, "lock file", 4096))
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(d["since"])))
            return f"pid {int(d['pid'])} on host {d['host']}, since {when}" + (f", shard {d['shard']}" if d.get("shard") else "")
        except (OSError, ValueError, KeyError, TypeError, UserError):
            return "another process"

    def _busy_message(self, path: Path) -> str:
        holders = []
        if path.name == ".lock":  # held exclusively by a whole run, or shared by shard runs
            holders = [self._holder(p) for p in sorted(self.folder.glob(".lock.shard*")) if _held(p)]
        who = "; ".join(holders[:3]) if holders else self._holder(path)
        return (f"output_dir {self.folder} is in use by another run ({who}); wait for it to finish, "
                "or use another output_dir=")

    def _take(self, path: Path, mode: int) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(self._busy_message(path)) from None
        except OSError as e:
            os.close(fd)
            raise UserError(f"cannot lock {path}: {e.strerror or e}") from None
        self._fds.append(fd)
        return fd

    def _write_holder(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": self.since,
                "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._holder_fd = fd

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.since = time.time()
        try:
            if self.shard is None:
                self._write_holder(self._take(self.folder / ".lock", fcntl.LOCK_EX))
            else:
                self._take(self.folder / ".lock", fcntl.LOCK_SH)
                i, n = self.shard
                self._write_holder(self._take(self.folder / f".lock.shard{i}-of-{n}", fcntl.LOCK_EX))
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._holder_fd is not None:
            try:
                os.ftruncate(self._holder_fd, 0)  # a finished run leaves no holder behind
            except OSError:
                pass
            self._holder_fd = None
        while self._fds:
            fd = self._fds.pop()
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def _held(path: Path) -> bool:
    """Whether some process holds a lock on `path` (probed with a non-blocking shared lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextmanager
def run_lock(folder: str | os.PathLike, shard: tuple[int, int] | None = None) -> Iterator[RunLock]:
    """Hold the output folder's lock for the block (see the module docstring)."""
    lock = RunLock(Path(folder), shard).acquire()
    try:
        yield lock
    finally:
        lock.release()


def live_holder(folder: str | os.PathLike) -> str | None:
    """Who holds the run lock of `folder` (an output folder) right now: e.g. "pid 123 on host h,
    since ..., shard 0/2", or None when no live process does (a dead run's lock does not count).
    For readers of a folder another run may still be writing (stage=select attention_dir=...)."""
    folder = Path(folder)
    lock = folder / ".lock"
    if not lock.exists():
        return None
    probe = RunLock(folder, None)
    held = [p for p in sorted(folder.glob(".lock.shard*")) if _held(p) and not _mine(p)]
    if held:
        return "; ".join(probe._holder(p) for p in held[:3])
    if any(_mine(p) for p in [lock, *folder.glob(".lock.shard*")]):
        return None  # this process holds it (a run writing its own index)
    return probe._holder(lock) if _held(lock) else None


def _mine(path: Path) -> bool:
    """Whether the holder written in a lock file is this process."""
    try:
        d = json.loads(read_text_regular(path, "lock file", 4096))
        return int(d["pid"]) == os.getpid() and d.get("host") == socket.gethostname()
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return False
