"""What every stage gets from outside lab/: a lazy model loader, the output folder, the strategy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from utils.errors import UserError
from utils.settings.declarations import FinderConfig


@dataclass
class StageContext:
    """A model loader (the entry point wires it to the model layer) and the run's output folder."""

    loader: Callable[[], Any]
    output_dir: Path
    _vlm: Any = field(default=None, repr=False)
    lock: Any = field(default=None, repr=False)  # utils.runlock.RunLock held by this stage, if any
    sam_loader: Callable[[], Any] | None = field(default=None, repr=False)  # grounding.refine=sam: () -> prompts-in-pixels -> mask

    @property
    def exclusive_since(self) -> float | None:
        """When this run took the output folder's lock exclusively (None: shared with shards, or no lock)."""
        return self.lock.since if self.lock is not None and self.lock.exclusive else None

    def load_vlm(self) -> Any:
        """The model, loaded on first use (stages that only read records never load it)."""
        if self._vlm is None:
            self._vlm = self.loader()
        return self._vlm


def require(cfg: FinderConfig, *keys: str, stage: str) -> None:
    """A stage's required keys, all reported in one line."""
    missing = [k for k in keys if getattr(cfg, k) in (None, "")]
    if missing:
        raise UserError(f"stage={stage} needs {', '.join(k + '=...' for k in missing)}")
