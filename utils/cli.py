"""Entry-point plumbing that knows nothing of the rooms above: the output folder, and user errors ->
one line + exit 2. The entry points themselves wire the model layer (llava) to the stages (lab)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from utils.console import escape_log_handlers, printable
from utils.errors import UserError
from utils.files import open_regular
from utils.folder_undo import undo_idle_run

MAX_QUERY_BYTES = 1 << 20


def output_dir(cfg) -> Path:
    """`output_dir=` if given, else Hydra's run directory (outputs/<entry>/<date_time>)."""
    if cfg.output_dir:
        return Path(cfg.output_dir).expanduser().resolve()
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_entry(job: Callable[[Any], Any], cfg: Any) -> Any:
    """Read the composed config once (utils.settings.reading.settings_from_config: unknown keys, value ranges,
    then the frozen settings object) and run `job(settings)`.

    A UserError prints `error: ...` (no traceback) and exits with status 2; so does an OSError that
    reaches this far (disk full, read-only folder, ...): one line naming the file. The same line goes
    into the run's log file; a Hydra run folder (`outputs/<entry>/<date_time>/`, no `output_dir=`)
    that holds nothing but `.hydra`, the log and the lock is removed (`_drop_idle_run_folder`)."""
    logging.raiseExceptions = False  # a log file on a full disk must not print a traceback per message
    escape_log_handlers()  # a row's text never reaches the terminal or the log raw (utils/console.py)
    try:
        from utils.interrupt import interruptible_from_here
        from utils.settings.reading import settings_from_config

        settings = settings_from_config(cfg)
        interruptible_from_here()  # imports done: Ctrl-C is a KeyboardInterrupt from here on
        return job(settings)
    except UserError as e:
        _fail(str(e), cfg)
    except KeyboardInterrupt as e:
        _interrupted(e, cfg)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        _fail(f"{e.strerror or e}{where} (errno {e.errno}); files finished so far are kept, fix it and run again", cfg)


def _fail(message: str, cfg: Any) -> None:
    """`error: <message>` on stderr and in the run's log file, then the folder of a run that did no work
    removed (Hydra's own) or left as it was found (`output_dir=`, utils/folder_undo.py); exit 2."""
    message = printable(message, keep="\n")
    print(f"error: {message}", file=sys.stderr)
    record = logging.LogRecord("lhf", logging.ERROR, __file__, 0, "error: %s", (message,), None)
    for handler in _file_handlers():  # the file only: the console already has the line
        try:
            handler.handle(record)
            handler.flush()
        except Exception:  # noqa: BLE001 - a log on a full disk: the console line is what counts
            pass
    _drop_idle_run_folder(cfg)
    _undo_idle_output_dir(cfg)
    sys.exit(UserError.exit_code)


def _file_handlers() -> list[logging.FileHandler]:
    seen = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return list({id(h): h for lg in seen for h in lg.handlers if isinstance(h, logging.FileHandler)}.values())


IDLE_RUN_FILES = (".hydra", ".lock")  # with `<job>.log`: what a run that did no work leaves in its folder


def _drop_idle_run_folder(cfg: Any) -> Path | None:
    """Remove Hydra's own run folder (no `output_dir=`; not a multirun job) when the failed run left
    nothing in it but `.hydra`, its log and its lock, and then its empty parents (`outputs/<entry>`,
    `outputs`) inside the current folder. Returns the removed folder, or None (kept, or none)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if getattr(cfg, "output_dir", None) or not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.RUN:
            return None
        folder = Path(hc.runtime.output_dir).resolve()
        idle = set(IDLE_RUN_FILES) | {f"{hc.job.name}.log"}
        if not folder.is_dir() or any(p.name not in idle for p in folder.iterdir()):
            return None
        for handler in _file_handlers():
            if Path(handler.baseFilename).resolve().parent == folder:
                handler.close()
        shutil.rmtree(folder)
        here, parent = Path.cwd().resolve(), folder.parent
        while parent != here and here in parent.parents and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
        return folder
    except Exception:  # noqa: BLE001 - cleaning up must never hide the error line
        return None


def _undo_idle_output_dir(cfg: Any) -> None:
    """An `output_dir=` the failed run added only its lock, log and plan to: left as the preflight
    found it (utils/folder_undo.py); the error line is on stderr."""
    out = getattr(cfg, "output_dir", None)
    if not out:
        return
    try:
        from hydra.core.hydra_config import HydraConfig

        log = f"{HydraConfig.get().job.name}.log" if HydraConfig.initialized() else None
    except Exception:  # noqa: BLE001 - no Hydra context (called from Python)
        log = None
    folder = Path(str(out)).expanduser().absolute()
    for handler in _file_handlers():  # the log is closed before it may be removed
        if Path(handler.baseFilename).resolve().parent == folder.resolve():
            handler.close()
    undo_idle_run(folder, log)


def read_query_file(path: str | Path) -> str:
    """The text of a `query_file=`: UTF-8 (a leading BOM is dropped), surrounding whitespace and the
    final newline stripped, inner newlines kept. The text never passes through Hydra's override
    grammar or OmegaConf, so commas, quotes, `$`, `${...}`, backslashes and any script are taken
    literally."""
    p = Path(path).expanduser()
    fd = open_regular(p, "query_file")  # a FIFO or device is refused, never read (it could block)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_QUERY_BYTES + 1)
    if len(data) > MAX_QUERY_BYTES:
        raise UserError(f"query_file {p} is larger than {MAX_QUERY_BYTES} bytes; a query is a sentence or a paragraph")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"query_file {p} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "save it as UTF-8") from None
    text = text.strip()
    if not text:
        raise UserError(f"query_file {p} is empty")
    return text


def resolve_query(cfg) -> str | None:
    """`query=` or the text of `query_file=` (one of them; both is an error naming the two keys)."""
    query, qfile = getattr(cfg, "query", None), getattr(cfg, "query_file", None)
    if qfile:
        if query:
            raise UserError(f"give query= or query_file=, not both (query_file={qfile})")
        return read_query_file(qfile)
    return query or None


def _interrupted(e: KeyboardInterrupt, cfg: Any) -> None:
    """Ctrl-C: one line (utils/interrupt.py: where it stopped, that the same command resumes), exit 130."""
    from utils.interrupt import EXIT_CODE, interrupt_line

    try:
        out: Any = output_dir(cfg) if cfg is not None else None
    except Exception:  # noqa: BLE001 - no Hydra context (called from Python): name no folder
        out = None
    print(f"\n{interrupt_line(e, out)}", file=sys.stderr)
    sys.exit(EXIT_CODE)
