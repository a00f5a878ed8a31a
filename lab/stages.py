"""Stages of localization_heads_finder.py: each a plain function `stage(cfg, ctx) -> dict`.

`lab/` never imports the model layer: the entry point hands in a `StageContext` whose
`load_vlm()` builds (once) whatever model the config names. Every stage reads the files of the
previous one, so each can be re-run alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lab.records import AttentionRecord, record_path, safe_id
from lab.stations import Strategy, collect
from utils.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What stages need from outside lab/: a model loader and the run's output folder."""

    loader: Callable[[], Any]
    output_dir: Path
    _vlm: Any = field(default=None, repr=False)

    def load_vlm(self) -> Any:
        if self._vlm is None:
            self._vlm = self.loader()
        return self._vlm


def strategy_from_cfg(cfg) -> Strategy:
    s = cfg.strategy
    qp: Any = list(s.positions) if s.positions is not None else s.query_positions
    return Strategy(
        query_positions=qp,
        layers=None if s.layers is None else list(s.layers),
        heads=None if s.heads is None else list(s.heads),
        maskout=[list(p) for p in s.maskout],
        maskout_mode=s.maskout_mode,
        modify=[list(p) for p in s.modify],
        modify_factor=float(s.modify_factor),
        modify_mode=s.modify_mode,
        steps=s.steps,
    )


def _require(cfg, *keys: str, stage: str) -> None:
    missing = [k for k in keys if cfg.get(k) in (None, "")]
    if missing:
        raise UserError(f"stage={stage} needs {', '.join(k + '=...' for k in missing)}")


def collect_stage(cfg, ctx: StageContext) -> dict:
    """One image + query -> one record at <output_dir>/attention/<save_id>.safetensors."""
    from utils.io import load_image

    _require(cfg, "image_file", "query", stage=cfg.stage)
    image = load_image(cfg.image_file)  # fail on a bad path before loading the model
    strategy = strategy_from_cfg(cfg)
    save_id = safe_id(cfg.save_id or Path(cfg.image_file).stem)
    vlm = ctx.load_vlm()
    (rec,) = collect(vlm, [(image, cfg.query, save_id, str(cfg.image_file))], strategy,
                     max_new_tokens=int(cfg.max_new_tokens))
    path = rec.save(record_path(ctx.output_dir, save_id))
    log.info("answer: %s", rec.meta.generated_text)
    print(f"record: {path}")
    return {"record": str(path), "answer": rec.meta.generated_text, "shape": list(rec.shape)}


STAGES: dict[str, Callable[[Any, StageContext], dict]] = {
    "collect": collect_stage,
}


def run_stage(cfg, ctx: StageContext) -> dict:
    """Dispatch `cfg.stage`; an unknown stage is answered with the list of valid ones."""
    if cfg.stage not in STAGES:
        raise UserError(f"unknown stage={cfg.stage!r}; valid stages: {', '.join(STAGES)}")
    return STAGES[cfg.stage](cfg, ctx)
