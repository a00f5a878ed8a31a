"""stage=collect: one image + query -> one record at <output_dir>/attention/<save_id>.safetensors."""

from __future__ import annotations

import logging
from pathlib import Path

from lab.records.record import record_path
from lab.capture.station import strategy_from_settings
from lab.stages.context import StageContext, require
from lab.capture.station import collect
from utils.cli import resolve_query
from utils.errors import UserError
from utils.images import load_image
from utils.settings.declarations import FinderConfig

log = logging.getLogger(__name__)


def collect_stage(cfg: FinderConfig, ctx: StageContext) -> dict:
    """One image + query (`query=` or `query_file=`) -> one record at <output_dir>/attention/<save_id>.safetensors."""
    query = resolve_query(cfg)
    if not query:
        need = "image_file=..., " if not cfg.image_file else ""
        raise UserError(f"stage={cfg.stage} needs {need}query=... (or query_file=<UTF-8 text file>)")
    require(cfg, "image_file", stage=cfg.stage)
    image = load_image(cfg.image_file)  # fail on a bad path before loading the model
    strategy = strategy_from_settings(cfg.strategy)
    save_id = str(cfg.save_id or Path(cfg.image_file).stem)  # the file name is utils.data.file_stem(save_id)
    vlm = ctx.load_vlm()
    (rec,) = collect(vlm, [(image, query, save_id, cfg.image_file)], strategy,
                     max_new_tokens=cfg.max_new_tokens)
    path = rec.save(record_path(ctx.output_dir, save_id))
    log.info("answer: %s", rec.meta.generated_text)
    print(f"record: {path}")
    return {"record": str(path), "answer": rec.meta.generated_text, "shape": list(rec.shape)}
