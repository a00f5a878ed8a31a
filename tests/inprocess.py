"""Run a shell line of the README or of a `--help` page in this process, as the shell would run it.

`python <entry>.py k=v ...` runs the script as `__main__` (runpy: its own preflight, Hydra, run_entry,
exit status), `python -m <module> ...` runs the module the same way; `mkdir` / `echo` and anything else
go to bash. A process costs ~5 s of imports (torch, transformers, Hydra, matplotlib) on 2 cores: a
chain of 30 commands pays it once here. The process boundary itself (exit codes seen by a shell,
Ctrl-C, a fresh interpreter) is tested by the subprocess tests (tests/test_cli.py, test_edges_runs.py).
"""

from __future__ import annotations

import io
import logging
import os
import runpy
import shlex
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@contextmanager
def _captured_fds() -> Iterator[dict]:
    """Capture file descriptors 1 and 2 and sys.stdout / sys.stderr (what a subprocess would print;
    pytest's capture replaces sys.stdout with its own file) into temporary files."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    old_streams = sys.stdout, sys.stderr
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    got: dict = {}
    try:
        for fd, f in files.items():
            os.dup2(f.fileno(), fd)
        sys.stdout, sys.stderr = (open(fd, "w", encoding="utf-8", errors="replace", closefd=False,
                                       buffering=1) for fd in (1, 2))
        yield got
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            if stream not in old_streams:
                stream.close()
        sys.stdout, sys.stderr = old_streams
        for fd, f in files.items():
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            f.seek(0)
            got[fd] = f.read().decode("utf-8", "replace")
            f.close()


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    return e.code if isinstance(e.code, int) else 1


def _python(words: list[str], cwd: Path, stdin: str = "") -> int:
    """`python script.py args` or `python -m module args` in process; the exit status."""
    argv0, run = (words[1], lambda: runpy.run_path(str(cwd / words[1]), run_name="__main__"))
    if words[1] == "-m":
        argv0, run = (words[2], lambda: runpy.run_module(words[2], run_name="__main__", alter_sys=True))
    args = words[3:] if words[1] == "-m" else words[2:]
    old_argv, old_sigint, old_stdin = sys.argv, signal.getsignal(signal.SIGINT), sys.stdin
    root = logging.getLogger()
    old_handlers, old_level = list(root.handlers), root.level
    sys.argv = [argv0, *args]
    sys.stdin = io.StringIO(stdin)  # stdin=DEVNULL, or the text a subprocess test would pipe in
    try:
        run()
        return 0
    except SystemExit as e:
        return _exit_code(e)
    finally:
        sys.argv, sys.stdin = old_argv, old_stdin
        signal.signal(signal.SIGINT, old_sigint)  # the entry points leave their exit-time handler
        for h in [h for h in root.handlers if h not in old_handlers]:  # Hydra's console and log-file handlers:
            root.removeHandler(h)  # a later run must not write into this run's log
            h.close()
        root.setLevel(old_level)


def run_script(script: str | Path, *args: str, cwd: Path, stdin: str = "") -> Result:
    """`python <script> <args>` (an entry point of the repository) in this process: its exit status and
    what it printed, as `subprocess.run([sys.executable, script, *args], cwd=cwd, input=stdin)` gives."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with _captured_fds() as got:
            code = _python(["python", str(script), *args], Path(cwd), stdin)
    finally:
        os.chdir(old)
    return Result(code, got[1], got[2])


def shell_words(command: str, cwd: Path) -> list[str]:
    """The words bash makes of one simple command (its quoting, escapes, expansions and comments)."""
    r = subprocess.run(["bash", "-c", "_words() { printf '%s\\0' \"$@\"; }; _words " + command], cwd=cwd,
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"bash could not read {command!r}: {r.stderr.decode(errors='replace')}"
    return r.stdout.decode("utf-8").split("\0")[:-1]


def run_line(line: str, cwd: Path) -> Result:
    """Run one shell line (`a && b && c` stops at the first failure) with `cwd` as the current folder;
    bash reads each `python ...` command's words (shell_words), this process runs it."""
    old = Path.cwd()
    os.chdir(cwd)
    code, out, err = 0, [], []
    try:
        for part in (p.strip() for p in line.split(" && ")):
            words = shell_words(part, cwd) if shlex.split(part, comments=True)[:1] == ["python"] else []
            if words[:1] == ["python"] and len(words) > 1:
                with _captured_fds() as got:
                    code = _python(words, cwd)
                out.append(got[1])
                err.append(got[2])
            else:
                r = subprocess.run(["bash", "-c", part], cwd=cwd, capture_output=True, text=True, timeout=60,
                                   stdin=subprocess.DEVNULL)
                code = r.returncode
                out.append(r.stdout)
                err.append(r.stderr)
            if code != 0:
                break
    finally:
        os.chdir(old)
    return Result(code, "".join(out), "".join(err))
