"""stage=analyze: both criteria for every head of one record -> <output_dir>/analysis/<id>.analysis.json."""

from __future__ import annotations

from pathlib import Path

from lab.records.record import AttentionRecord
from lab.analysis.record_numbers import thresholded_analysis
from lab.stages.context import StageContext, require
from utils.data import file_stem
from utils.io import atomic_write_json
from utils.settings.declarations import FinderConfig


def analyze_stage(cfg: FinderConfig, ctx: StageContext) -> dict:
    """Per-record analysis: both criteria for every head, saved under the output folder (the record's
    own folder may be read-only or someone else's)."""
    require(cfg, "attention_file", stage="analyze")
    rec = AttentionRecord.load(cfg.attention_file)
    return analyze_record(rec, cfg, ctx.output_dir)


def analyze_record(rec: AttentionRecord, cfg: FinderConfig, output_dir: Path) -> dict:
    """The record's own elbow (criterion 1 within one sample), then both criteria per head."""
    elbow, res = thresholded_analysis(rec, cfg.selection, cfg.grounding)
    out = Path(output_dir) / "analysis" / f"{file_stem(rec.meta.sample_id)}.analysis.json"
    payload = {"record": str(rec.path), "sample_id": rec.meta.sample_id, "method": cfg.method_name,
               "elbow": elbow.to_dict(),
               **res.to_dict(), "lowest_entropy_heads": [list(lh) for lh in res.ranked_heads(cfg.top_k * 3)]}
    atomic_write_json(out, payload)
    print(res.summary())
    print(f"analysis: {out}")
    return {"analysis": str(out), "eligible": int(res.eligible.sum()), "top": res.ranked_heads(cfg.top_k)}
