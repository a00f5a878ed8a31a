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
