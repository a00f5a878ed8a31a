"""Stages of localization_heads_finder.py: one module per stage, each a plain function `stage(cfg, ctx) -> dict`.

`lab/` never imports the model layer: the entry point hands in a `StageContext` whose
`load_vlm()` builds (once) whatever model the config names. Every stage reads the files of the
previous one, so each can be re-run alone. Helpers several stages share live in `common`.
"""

from __future__ import annotations

from typing import Any, Callable

from lab.runs import distributed as D
from lab.stages.ablate import ablate_stage
from lab.stages.analyze import analyze_stage
from lab.stages.batch import batch_stage
from lab.stages.collect import collect_stage
from lab.stages.context import StageContext
from lab.stages.evaluate import evaluate_stage
from lab.stages.pipeline import pipeline_stage
from lab.stages.select import select_stage
from lab.stages.visualize import visualize_stage
from utils.data import parse_shard
from utils.errors import UserError
from utils.runlock import run_lock
from utils.settings.reading import settings_from_config
from utils.settings.declarations import FinderConfig

STAGES: dict[str, Callable[[Any, StageContext], dict]] = {
    "collect": collect_stage,
    "analyze": analyze_stage,
    "select": select_stage,
    "visualize": visualize_stage,
    "evaluate": evaluate_stage,
    "ablate": ablate_stage,
    "pipeline": pipeline_stage,
    "batch": batch_stage,
}


# Stages that write records or run-level results hold the output folder's lock (utils/runlock.py):
# a second run on the same output_dir is refused, naming the holder; shards share the folder.
LOCKED = {"collect", "pipeline", "batch", "evaluate", "ablate", "select"}


def run_stage(cfg: FinderConfig, ctx: StageContext) -> dict:
    """Dispatch `cfg.stage`; an unknown stage is answered with the list of valid ones.

    Args:
        cfg: the run's settings (`utils.settings.declarations.FinderConfig`), or a composed config from Python, which
            is checked and built into them here (`utils.settings.reading.settings_from_config`).
        ctx: the model loader and the output folder.
    """
    cfg = settings_from_config(cfg)
    if cfg.stage not in STAGES:
        raise UserError(f"unknown stage={cfg.stage!r}; valid stages: {', '.join(STAGES)}")
    if cfg.stage not in LOCKED:
        return STAGES[cfg.stage](cfg, ctx)
    info = D.launched_info()
    if info.active and cfg.stage == "batch":  # each rank locks its shard once the shared folder is known
        return STAGES[cfg.stage](cfg, ctx)
    shard = parse_shard(cfg.shard) if cfg.shard else ((info.rank, info.world_size) if info.active else None)
    with run_lock(ctx.output_dir, shard) as lock:
        ctx.lock = lock
        return STAGES[cfg.stage](cfg, ctx)


__all__ = ["STAGES", "StageContext", "run_stage"]
