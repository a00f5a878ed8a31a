"""stage=evaluate: Acc@0.5, mIoU and pointing of the selected heads vs the all-heads mean vs random heads."""

from __future__ import annotations

import numpy as np

from lab import grounding as G
from lab import plots
from lab.records import AttentionRecord, check_compatible, record_path
from lab.report import write_run_index
from lab.stages.batch import collect_batch
from lab.stages.common import analysis_row, excluded_axes, grounding_options, head_maps, heads_from_file, sigma_for
from lab.stages.context import StageContext
from lab.stages.segment import SegmentationRun, required_keys
from lab.stages.select import select_stage
from lab.writers import jsonable
from utils.errors import UserError
from utils.io import atomic_write_json

NAMES = ["selected_heads", "all_heads_mean", "random_heads"]


def evaluate_stage(cfg, ctx: StageContext) -> dict:
    """Acc@0.5, mIoU and pointing of the selected heads vs the all-heads mean vs random heads."""
    rows, summary = collect_batch(cfg, ctx, require=required_keys(cfg))
    done = set(summary.ok) | set(summary.skipped)
    recs = [(row, AttentionRecord.load(record_path(ctx.output_dir, row.id))) for row in rows if row.id in done]
    if not recs:
        raise UserError("no sample could be collected; see the manifest for the reasons")
    check_compatible([rec for _, rec in recs])
    seg = SegmentationRun(cfg, ctx, str(cfg.data_file))  # masks / SAM (grounding.output, grounding.refine)
    seg.check(recs)
    own: dict = {}
    if cfg.heads_file:
        heads = heads_from_file(cfg.heads_file, cfg.top_k)
        source = str(cfg.heads_file)
    else:  # ranking=per_sample (the release): each sample is grounded with its own top_k heads; `heads` is their tally
        sel = select_stage(cfg, ctx)
        heads = [tuple(h) for h in sel["heads"]]
        own = sel.get("per_sample") or {}
        source = ("per sample: each record's own top_k heads (selection.ranking=per_sample)" if own
                  else "selected on the fly from this run")
    per_sample = bool(own)
    first = recs[0][1]
    L, Hn = len(first.meta.layers), len(first.meta.heads)
    draws = G.random_head_sets(L, Hn, len(heads), int(cfg.grounding.random_draws), int(cfg.seed),
                               exclude_layers=excluded_axes(first, cfg.selection.exclude_layers))
    draws = [[(first.meta.layers[li], first.meta.heads[hi]) for li, hi in d] for d in draws]
    sel_m, all_m = G.GroundingMetrics(), G.GroundingMetrics()
    rnd_m = [G.GroundingMetrics() for _ in draws]
    sigma = sigma_for(cfg, first)
    kw = dict(sigma=sigma, **grounding_options(cfg))
    no_heads: list[str] = []
    for row, rec in recs:
        layout = rec.layout
        mine = [tuple(h) for h in own.get(rec.meta.sample_id, [])] if per_sample else heads
        bbox = seg.gt_box(row)
        if mine:
            sel_m.add_grounding(seg.apply(NAMES[0], row, rec, G.predict_box(head_maps(rec, mine, cfg), layout, **kw)), bbox)
        else:  # per_sample: no head passed both criteria in this sample -> counted as a miss, listed
            no_heads.append(row.id)
            seg.miss(NAMES[0], row, rec)
            sel_m.add((0.0, 0.0, 0.0, 0.0), bbox, False)
        all_maps = layout.to_grid(rec.image_attention[analysis_row(rec, cfg.grounding.query_row)], cfg.selection.grid)
        # (L, H, rows, cols) -> (L*H, rows, cols), scaled to the mean over heads
        g_all = G.predict_box(all_maps.reshape(-1, *all_maps.shape[-2:]) / (L * Hn), layout, **kw)
        all_m.add_grounding(seg.apply(NAMES[1], row, rec, g_all), bbox)
        for i, (m, d) in enumerate(zip(rnd_m, draws)):
            m.add_grounding(seg.apply(f"random_heads_{i}", row, rec, G.predict_box(head_maps(rec, d, cfg), layout, **kw)), bbox)
    random_summary = _random_summary([m.summary() for m in rnd_m])
    metrics = {"selected_heads": sel_m.summary(), "all_heads_mean": all_m.summary(), "random_heads": random_summary,
               "heads": [list(h) for h in heads], "heads_source": source, "failed": len(summary.failed),
               "settings": {"sigma": sigma, "hull": cfg.grounding.hull, "top_k": len(heads), "seed": cfg.seed}}
    if cfg.get("method_name", "paper") != "paper" or per_sample or cfg.grounding.region != "largest" \
            or cfg.grounding.geometry != "layout":
        metrics["settings"].update({"method": cfg.get("method_name"), "region": cfg.grounding.region,
                                    "geometry": cfg.grounding.geometry, "per_sample_heads": per_sample})
    seg.finish(metrics, NAMES)
    if no_heads:
        metrics["samples_without_heads"] = no_heads
        print(f"warning: {len(no_heads)} sample(s) had no head passing both criteria; counted as misses "
              f"(metrics.json samples_without_heads)")
    path = atomic_write_json(ctx.output_dir / "metrics.json", jsonable(metrics))
    print(f"\n{'':16s} {'Acc@0.5':>8s} {'mIoU':>7s} {'pointing':>9s} {'n':>5s}")
    for name in NAMES:
        m = metrics[name]
        print(f"{name:16s} {m['acc@0.5']:8.3f} {m['miou']:7.3f} {m['pointing']:9.3f} {int(m['n']):5d}")
    plots.bar_chart(NAMES, [metrics[n]["acc@0.5"] for n in NAMES], [0.0, 0.0, random_summary["acc@0.5_std"]],
                    ctx.output_dir / "figures" / "grounding_acc.png", title="Acc@0.5 by head set", ylabel="Acc@0.5")
    print(f"metrics: {path}")
    index = write_run_index(ctx.output_dir, {"metrics": str(path)}, cfg=cfg)
    return {"metrics_file": str(path), "index": str(index), **{n: metrics[n] for n in NAMES}}


def _random_summary(rnd: list[dict]) -> dict:
    """Mean and spread of the random-head draws' metrics."""
    keys = ("acc@0.5", "miou", "pointing")
    out = {key: float(np.mean([r[key] for r in rnd])) for key in keys}
    out.update({f"{key}_std": float(np.std([r[key] for r in rnd])) for key in keys})
    out["n"] = rnd[0]["n"] if rnd else 0
    out["draws"] = len(rnd)
    return out
