"""stage=visualize: the top-k heads' maps on the record's image, their combined map, box and components."""

from __future__ import annotations

from pathlib import Path

from lab import figures as plots
from lab.records.record import AttentionRecord
from lab.analysis.record_numbers import ground, head_maps, own_heads, score, smoothing_sigma_for
from lab.stages.common import image_or_blank
from lab.runs.heads_files import heads_from_file
from lab.stages.context import StageContext, require
from utils.data import file_stem
from utils.errors import UserError


def short_text(text: str, n: int = 100) -> str:
    """A figure title's part: one line, at most n characters (records may carry long texts)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def visualize_record(rec: AttentionRecord, cfg, out_dir: Path, heads: list[tuple[int, int]] | None = None) -> dict:
    """Overlay of the top-k heads (given, else the record's own lowest-entropy heads above its elbow)."""
    if heads is None:
        heads = own_heads(rec, cfg.selection, cfg.grounding, cfg.top_k)
    if not heads:
        raise UserError(f"{rec.path}: no head passes both criteria; try selection.exclude_layers=[] or another sample")
    maps = head_maps(rec, heads, cfg.selection, cfg.grounding)  # (K, rows, cols)
    layout = rec.layout
    sigma = smoothing_sigma_for(rec, cfg.selection, cfg.grounding)
    g = ground(rec, heads, cfg.selection, cfg.grounding)
    gt = rec.meta.extra.get("bbox")
    sid = file_stem(rec.meta.sample_id)
    path = plots.overlay_heads(
        image_or_blank(rec), layout, {h: m for h, m in zip(heads, maps)}, out_dir / f"{sid}_heads.png",
        combined=g.combined, pred_box=g.box_xywh, gt_box=gt, show_components=cfg.show_components,
        title=f"{short_text(rec.meta.query)}  ->  {short_text(rec.meta.generated_text)}", grid=cfg.selection.grid, sigma=sigma,
        show=cfg.show_plot)
    res = {"figure": str(path), "heads": heads, "box": [float(x) for x in g.box_xywh]}
    if gt is not None:
        res["iou"] = score(g, gt).iou
    return res


def visualize_stage(cfg, ctx: StageContext) -> dict:
    """Figures for one record: each top-k head's map on the image, their combined map and box."""
    require(cfg, "attention_file", stage="visualize")
    rec = AttentionRecord.load(cfg.attention_file)
    heads = heads_from_file(cfg.heads_file, cfg.top_k) if cfg.heads_file else None
    res = visualize_record(rec, cfg, ctx.output_dir / "figures", heads)
    print(f"figure: {res['figure']}")
    return res
