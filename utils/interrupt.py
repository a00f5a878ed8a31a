"""Ctrl-C (SIGINT) -> one line saying where the run stopped and that the same command resumes.

Where: the innermost progress bar (tqdm) among the interrupted frames (its name and count, e.g.
"collect 37/240 sample"), else the innermost frame of this project's code (file:line, function).
Records and other outputs are written atomically (utils/io.py), so what finished is kept whole.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import TracebackType
from typing import Any

EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a job stopped by Ctrl-C
ROOT = Path(__file__).resolve().parents[1]


def _frames(tb: TracebackType | None) -> list[Any]:
    out = []
    while tb is not None:
        out.append(tb.tb_frame)
        tb = tb.tb_next
    return out


def _bar_text(frames: list[Any]) -> str | None:
    """The innermost tqdm bar a frame holds: "collect 37/240 sample"."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    for fr in reversed(frames):
        for v in list(fr.f_locals.values()):
            if isinstance(v, tqdm) and v.total:
                unit = v.unit if v.unit != "it" else "step"
                done = "done " if v.n >= v.total else ""
                return f"{done}{(v.desc or 'progress').strip()} {int(v.n)}/{int(v.total)} {unit}"
    return None


def _own_frame(frames: list[Any]) -> str | None:
    """file:line (function) of the innermost frame in this project's code."""
    for fr in reversed(frames):
        f = Path(fr.f_code.co_filename)
        try:
            rel = f.resolve().relative_to(ROOT)
        except (ValueError, OSError):
            continue
        if "site-packages" not in rel.parts:
            return f"{rel}:{fr.f_lineno} ({fr.f_code.co_name})"
    return None


def interrupt_line(exc: BaseException, output_dir: str | os.PathLike | None = None) -> str:
    """The one line printed for a KeyboardInterrupt."""
    frames = _frames(exc.__traceback__)
    bar, own = _bar_text(frames), _own_frame(frames)
    if bar and bar.startswith("done "):
        where = f"{bar[5:]} done, in {own}" if own else f"{bar[5:]} done"
    else:
        where = bar or own or "before the first step"
    kept = f"finished files are kept in {output_dir}" if output_dir else "finished files are kept"
    return f"interrupted (Ctrl-C) at {where}; {kept}; run the same command again to resume"


_PHASE = {"now": "starting"}
_PHASE_LINES = {
    "starting": "interrupted (Ctrl-C) while starting; nothing was written; run the same command again",
    "exiting": "interrupted (Ctrl-C) while exiting; the run's files were already complete",
}


def _exit_now(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    os.write(2, f"\n{_PHASE_LINES[_PHASE['now']]}\n".encode())
    os._exit(EXIT_CODE)


def quiet_sigint() -> None:
    """Entry points call this before their heavy imports: until `run_quietly_interruptible` starts
    `main()`, and again once it returns, Ctrl-C ends the process with one line and exit 130."""
    signal.signal(signal.SIGINT, _exit_now)


def interruptible_from_here() -> None:
    """The job starts: from now on Ctrl-C raises Python's usual KeyboardInterrupt (so `finally`
    blocks and atomic writes clean up; utils.cli.run_entry prints the one line).

    Not earlier: an import interrupted half-way can leave a library broken without a word (torch
    swallows any error while it first imports numpy, and the next `from scipy import ndimage` then
    recurses without end), so the imports and Hydra's composing stay under `quiet_sigint`'s
    immediate exit. Only the main thread may set a signal handler; elsewhere nothing changes."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_quietly_interruptible(main) -> None:
    """Run an entry point's `main()`; a Ctrl-C before the job (Hydra's start, composing the config,
    the imports in main) ends the process at once with one line and exit 130 (`quiet_sigint`); inside
    the job (`interruptible_from_here`) utils.cli.run_entry says it, naming the output folder. After
    main, while the interpreter exits, Ctrl-C is one line again (quiet_sigint)."""
    import sys

    try:
        main()
    except KeyboardInterrupt as e:
        print(f"\n{interrupt_line(e)}", file=sys.stderr)
        sys.exit(EXIT_CODE)
    finally:
        _PHASE["now"] = "exiting"
        quiet_sigint()
