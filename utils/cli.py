"""Entry-point plumbing that knows nothing of the rooms above: the output folder, and user errors ->
one line + exit 2. The entry points themselves wire the model layer (llava) to the stages (lab)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from utils.errors import UserError


def output_dir(cfg) -> Path:
    """`output_dir=` if given, else Hydra's run directory (outputs/<entry>/<date_time>)."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir).expanduser().resolve()
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_entry(job: Callable[[], Any]) -> Any:
    """Run `job()`; a UserError prints `error: ...` (one line, no traceback) and exits with status 2."""
    try:
        return job()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(UserError.exit_code)


def read_query_file(path: str | Path) -> str:
    """The text of a `query_file=`: UTF-8 (a leading BOM is dropped), surrounding whitespace and the
    final newline stripped, inner newlines kept. The text never passes through Hydra's override
    grammar or OmegaConf, so commas, quotes, `$`, `${...}`, backslashes and any script are taken
    literally."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"query_file not found: {p}")
    data = p.read_bytes()
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
    query, qfile = cfg.get("query"), cfg.get("query_file")
    if qfile:
        if query:
            raise UserError(f"give query= or query_file=, not both (query_file={qfile})")
        return read_query_file(qfile)
    return query or None
