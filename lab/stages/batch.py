"""stage=batch: JSONL -> records (resumable, failures recorded) -> select -> heads.json + figures + index.html."""

from __future__ import annotations

import dataclasses
import logging

from lab.runs import distributed as D
from lab.runs.heads_files import HeadsFile, check_against_model
from lab.runs.collection import BatchSummary, collect_rows, manifest_path
from lab.records.folder import write_plan
from lab.report import write_run_index
from lab.analysis.record_numbers import smoothing_sigma_for
from lab.capture.station import strategy_from_settings, warn_visual_head_padding
from lab.stages.context import StageContext
from lab.stages.select import select_stage
from lab.stages.visualize import visualize_record
from utils.data import Row
from utils.errors import UserError
from utils.data import load_selection
from utils.runlock import RunLock
from utils.settings.declarations import FinderConfig

log = logging.getLogger(__name__)


def collect_batch(cfg: FinderConfig, ctx: StageContext, require: tuple[str, ...] = (),
                  heads: HeadsFile | None = None) -> tuple[list[Row], BatchSummary]:
    """The JSONL's rows (validated whole, `require`d keys present) -> records in <output_dir>/attention.
    Once the model is loaded, before any row is collected, `heads` (a heads file a later step uses) and
    selection.exclude_layers are checked against it."""
    picked = load_selection(cfg.data_file, require, cfg.start_index, cfg.end_index, cfg.shard)  # streaming
    rows = picked.rows
    write_plan(manifest_path(ctx.output_dir, cfg.shard), len(rows), picked.in_range, cfg.shard, cfg.data_file)
    strategy = strategy_from_settings(cfg.strategy)
    warn_visual_head_padding(strategy.maskout_mode, bool(strategy.maskout), int(cfg.batch_size))

    def on_record(rec, row) -> dict:
        smoothing_sigma_for(rec, cfg.selection, cfg.grounding)  # grounding.sigma above this grid: the run ends here, at once
        if not cfg.visualize_batch:
            return {}
        # per-sample figures as records arrive (visualize_batch=true); a failing figure goes to the manifest
        return {"figure": visualize_record(rec, cfg, ctx.output_dir / "figures" / "samples")["figure"]}

    def load_vlm():
        vlm = ctx.load_vlm()
        check_against_model(heads.all_heads() if heads else None, cfg.selection.exclude_layers, vlm.num_layers,
                            vlm.num_heads, heads.path if heads else None, cfg.strategy.layers)
        return vlm

    summary = collect_rows(rows, output_dir=ctx.output_dir, load_vlm=load_vlm, strategy=strategy,
                           batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                           overwrite=cfg.overwrite, shard=cfg.shard, on_record=on_record,
                           exclusive_since=ctx.exclusive_since)
    print(summary.text())
    return rows, summary


def batch_stage(cfg: FinderConfig, ctx: StageContext) -> dict:
    """JSONL -> records (resumable, failures recorded) -> select -> heads.json + figures + index.html.

    Under torchrun / accelerate launch every rank collects its shard of the rows into one shared
    folder; rank 0 waits for all of them, then selects over the union.
    """
    info = D.launched_info()
    if info.active:
        if cfg.shard:
            raise UserError("shard= and a multi-process launch do not mix: the launcher already shards by rank")
        D.init(info)
        ctx.output_dir = D.shared_output_dir(info, ctx.output_dir)
        cfg = dataclasses.replace(cfg, shard=info.shard)  # settings are frozen: this rank's copy
        ctx.lock = RunLock(ctx.output_dir, (info.rank, info.world_size)).acquire()
    try:
        rows, summary = collect_batch(cfg, ctx)
        result = {"collect": summary.to_dict()}
        if info.active:
            D.barrier(info)
            if info.rank != 0:
                return result
            cfg = dataclasses.replace(cfg, shard=None)
        elif cfg.shard:
            print("shard done; run stage=select attention_dir=... over the union of the shards' records")
            return result
        if not any((ctx.output_dir / "attention").glob("*.safetensors")):
            raise UserError(f"no record could be collected: all {len(summary.failed)} row(s) failed "
                            f"(reasons in {summary.manifest})")
        result["select"] = select_stage(cfg, ctx, ids=None if info.active else [row.id for row in rows])
        result["index"] = str(write_run_index(ctx.output_dir, cfg=cfg))
        print(f"index: {result['index']}")
        return result
    finally:
        if info.active and ctx.lock is not None:
            ctx.lock.release()
        D.finish(info)
