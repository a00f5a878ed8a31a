"""stage=pipeline: collect + analyze + visualize for one image_file + query."""

from __future__ import annotations

from lab.records.record import AttentionRecord
from lab.stages.analyze import analyze_record
from lab.stages.collect import collect_stage
from lab.runs.heads_files import heads_from_file
from lab.stages.context import StageContext
from lab.stages.visualize import visualize_record
from utils.settings.declarations import FinderConfig


def pipeline_stage(cfg: FinderConfig, ctx: StageContext) -> dict:
    """collect + analyze + visualize for one image_file + query."""
    heads = heads_from_file(cfg.heads_file, cfg.top_k) if cfg.heads_file else None  # a bad file: refused before collecting
    col = collect_stage(cfg, ctx)
    rec = AttentionRecord.load(col["record"])
    ana = analyze_record(rec, cfg, ctx.output_dir)
    vis = visualize_record(rec, cfg, ctx.output_dir / "figures", heads)
    print(f"figure: {vis['figure']}")
    return {**col, "analysis": ana["analysis"], "figure": vis["figure"], "heads": vis["heads"]}
