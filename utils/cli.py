"""Entry-point plumbing that knows nothing of the rooms above: the output folder, and user errors ->
one line + exit 2. The entry points themselves wire the model layer (llava) to the stages (lab)."""

from __future__ import annotations

import logging
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


def run_entry(job: Callable[[], Any], cfg: Any = None) -> Any:
    """Check `cfg` (utils.settings.check_config: unknown keys, value ranges) and run `job()`.

    A UserError prints `error: ...` (no traceback) and exits with status 2; so does an OSError that
    reaches this far (disk full, read-only folder, ...): one line naming the file."""
    logging.raiseExceptions = False  # a log file on a full disk must not print a traceback per message
    try:
        if cfg is not None:
            from utils.settings import check_config

            check_config(cfg)
        return job()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(UserError.exit_code)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where} (errno {e.errno}); files finished so far are kept, "
              "fix it and run again", file=sys.stderr)
        sys.exit(UserError.exit_code)
