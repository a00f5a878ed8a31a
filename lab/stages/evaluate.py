"""stage=evaluate: Acc@0.5, mIoU and pointing of the selected heads vs the all-heads mean vs random heads."""

from __future__ import annotations

import json

import numpy as np

from lab.analysis import grounding as G
from lab import figures as plots
from lab.records.record import AttentionRecord, check_compatible, record_path
from lab.analysis.gt_boxes import screen_gt_boxes
from lab.report import write_run_index
from lab.stages.batch import collect_batch
from lab.analysis.record_numbers import HeadSet, ground, ground_all_heads, score, smoothing_sigma_for
from lab.runs.heads_files import HeadsFile, heads_to_use
from lab.stages.context import StageContext
from lab.stages.segment import SegmentationRun, required_keys
from lab.stages.select import select_stage
from utils.io import jsonable
from utils.errors import UserError
from utils.io import atomic_write_json, atomic_write_text
from utils.settings.declarations import FinderConfig

NAMES = ["selected_heads", "all_heads_mean", "random_heads"]
SAMPLES_FILE = "evaluate_samples.jsonl"  # one line per sample: the selected heads' box, peak, IoU, hit


def evaluate_stage(cfg: FinderConfig, ctx: StageContext) -> dict:
    """Acc@0.5, mIoU and pointing of the selected heads vs the all-heads mean vs random heads;
    metrics.json, and evaluate_samples.jsonl with each sample's box, IoU and hit (selected heads)."""
    chosen = heads_to_use(cfg.heads_file, cfg.reselect, ctx.output_dir, cfg.top_k, "evaluate",
                          per_sample=cfg.selection.ranking == "per_sample")  # checked before any row is collected
    rows, summary = collect_batch(cfg, ctx, require=required_keys(cfg), heads=chosen)
    done = set(summary.ok) | set(summary.skipped)
    recs = [(row, AttentionRecord.load(record_path(ctx.output_dir, row.id))) for row in rows if row.id in done]
    boxes = screen_gt_boxes(recs, summary.manifest)  # a box missing its image fails its row; partly outside: clipped
    recs = boxes.kept
    if not recs:
        raise UserError("no sample could be collected; see the manifest for the reasons")
    check_compatible([rec for _, rec in recs])
    seg = SegmentationRun(cfg, ctx, cfg.data_file)  # masks / SAM (grounding.output, grounding.refine)
    recs = seg.check(recs, summary.manifest)  # rows whose mask is empty on the image fail in the manifest
    head_set, source = _head_set(cfg, ctx, chosen, [row.id for row in rows])
    heads, per_sample = head_set.heads, head_set.per_sample is not None
    sel, gr = cfg.selection, cfg.grounding
    first = recs[0][1]
    L, Hn = len(first.meta.layers), len(first.meta.heads)
    draws = G.random_head_sets(L, Hn, len(heads), gr.random_draws, cfg.seed,
                               exclude_layers=first.excluded_axes(sel.exclude_layers))
    draws = [first.model_heads(d) for d in draws]
    sel_m, all_m, rnd_m, no_heads, lines = _score_rows(recs, head_set, seg, draws, sel, gr)
    random_summary = _random_summary([m.summary() for m in rnd_m])
    metrics = {"selected_heads": sel_m.summary(), "all_heads_mean": all_m.summary(), "random_heads": random_summary,
               "heads": [list(h) for h in heads], "heads_source": source, "failed": len(summary.failed) + len(boxes.failed), **boxes.to_json(),
               "settings": {"sigma": smoothing_sigma_for(first, sel, gr), "hull": gr.hull, "top_k": len(heads),
                            "seed": cfg.seed}}
    if cfg.method_name != "paper" or per_sample or gr.region != "largest" or gr.geometry != "layout":
        metrics["settings"].update({"method": cfg.method_name, "region": gr.region,
                                    "geometry": gr.geometry, "per_sample_heads": per_sample})
    by_group = _by_group([row.group for row, _ in recs], sel_m, all_m, rnd_m)
    if by_group:
        metrics["by_group"] = by_group
    seg.finish(metrics, NAMES)
    if no_heads:
        metrics["samples_without_heads"] = no_heads
        print(f"warning: {len(no_heads)} sample(s) had no head passing both criteria; counted as misses "
              f"(metrics.json samples_without_heads)")
    if boxes.failed or boxes.clipped:
        print(f"warning: {len(boxes.failed)} row(s) not scored, their bbox misses the image (manifest: "
              f"{summary.manifest}); {len(boxes.clipped)} bbox(es) clipped to the image")
    path = atomic_write_json(ctx.output_dir / "metrics.json", jsonable(metrics))
    atomic_write_text(ctx.output_dir / SAMPLES_FILE, "".join(json.dumps(jsonable(d)) + "\n" for d in lines))
    _print_tables(metrics, by_group, random_summary, ctx.output_dir)
    print(f"metrics: {path}")
    index = write_run_index(ctx.output_dir, cfg=cfg)
    return {"metrics_file": str(path), "index": str(index), **{n: metrics[n] for n in NAMES}}


def _score_rows(recs, head_set: HeadSet, seg: SegmentationRun, draws, sel, gr):
    """Each row grounded by the selected heads (its own under ranking=per_sample), the all-heads mean
    and every random draw: the three metric accumulators, the rows without heads, and the lines of
    evaluate_samples.jsonl."""
    sel_m, all_m = G.GroundingMetrics(), G.GroundingMetrics()
    rnd_m = [G.GroundingMetrics() for _ in draws]
    no_heads: list[str] = []
    lines: list[dict] = []
    for row, rec in recs:
        mine = head_set.for_sample(rec.meta.sample_id)
        bbox = seg.gt_box(row)
        if mine:
            g = seg.apply(NAMES[0], row, rec, ground(rec, mine, sel, gr))
            sc = score(g, bbox)
            sel_m.add(g.box_xywh, bbox, sc.hit, rec.meta.image_size)
            lines.append({"id": row.id, "heads": [list(h) for h in mine], "box": list(g.box_xywh),
                          "peak": list(g.peak_xy), "iou": sc.iou, "hit": sc.hit})
        else:  # per_sample: no head passed both criteria in this sample -> counted as a miss, listed
            no_heads.append(row.id)
            seg.miss(NAMES[0], row, rec)
            sel_m.add((0.0, 0.0, 0.0, 0.0), bbox, False, rec.meta.image_size)
            lines.append({"id": row.id, "heads": [], "box": None, "peak": None, "iou": 0.0, "hit": False})
        all_m.add_grounding(seg.apply(NAMES[1], row, rec, ground_all_heads(rec, sel, gr)), bbox, rec.meta.image_size)
        for i, (m, d) in enumerate(zip(rnd_m, draws)):
            m.add_grounding(seg.apply(f"random_heads_{i}", row, rec, ground(rec, d, sel, gr)), bbox)
    return sel_m, all_m, rnd_m, no_heads, lines


def _print_tables(metrics: dict, by_group: dict, random_summary: dict, out) -> None:
    """The Acc@0.5 / mIoU / pointing table (overall and per group), the lmms-eval table, the bar chart."""
    print(f"\n{'':16s} {'Acc@0.5':>8s} {'mIoU':>7s} {'pointing':>9s} {'n':>5s}")
    for name in NAMES:
        m = metrics[name]
        print(f"{name:16s} {m['acc@0.5']:8.3f} {m['miou']:7.3f} {m['pointing']:9.3f} {int(m['n']):5d}")
    plots.bar_chart(NAMES, [metrics[n]["acc@0.5"] for n in NAMES], [0.0, 0.0, random_summary["acc@0.5_std"]],
                    out / "figures" / "grounding_acc.png", title="Acc@0.5 by head set", ylabel="Acc@0.5")
    for group, ms in by_group.items():
        print(f"{'  ' + group:16s} " + "  ".join(f"{n.split('_')[0]} {ms[n]['acc@0.5']:.3f}/{ms[n]['miou']:.3f}/{ms[n]['pointing']:.3f}"
                                              for n in NAMES) + f"  (Acc@0.5/mIoU/pointing, n={int(ms[NAMES[0]]['n'])})")
    print(G.benchmark_table([(n, metrics[n]) for n in NAMES] + [(f"  {g} {NAMES[0]}", ms[NAMES[0]]) for g, ms in by_group.items()]))


def _head_set(cfg: FinderConfig, ctx: StageContext, chosen: HeadsFile | None, ids: list[str]) -> tuple[HeadSet, str]:
    """heads_file= or the folder's heads.json (`chosen`), else selected on the fly over the rows `ids`
    (ranking=per_sample, the release: each sample is grounded with its own top_k heads; `heads` is their tally)."""
    if chosen is not None and chosen.per_sample is not None:
        return (HeadSet(chosen.heads, chosen.per_sample),
                f"per sample: each record's own top_k heads (selection.ranking=per_sample), from {chosen.path}")
    if chosen is not None:
        return HeadSet(chosen.heads), str(cfg.heads_file or chosen.path)
    res = select_stage(cfg, ctx, ids=ids)
    own = res.get("per_sample")
    heads = [tuple(h) for h in res["heads"]]
    if own:
        return (HeadSet(heads, {k: [tuple(h) for h in v] for k, v in own.items()}),
                "per sample: each record's own top_k heads (selection.ranking=per_sample)")
    return HeadSet(heads), "selected on the fly from this run"


def _by_group(groups: list, sel_m: G.GroundingMetrics, all_m: G.GroundingMetrics,
              rnd_m: list[G.GroundingMetrics]) -> dict[str, dict]:
    """The three head sets' metrics within each row `group` (the data's own classes, e.g. the planted
    scenes' distractors); {} when no row names one. Every tally holds one entry per sample, in order."""
    if all(g is None for g in groups):
        return {}
    out = {}
    for group in sorted({g for g in groups if g is not None}):  # a row without a group is in none (never "None")
        idx = [i for i, g in enumerate(groups) if g == group]

        def part(m: G.GroundingMetrics) -> dict:
            return m.subset(idx).summary()

        out[group] = {NAMES[0]: part(sel_m), NAMES[1]: part(all_m), NAMES[2]: _random_summary([part(m) for m in rnd_m])}
    return out


def _random_summary(rnd: list[dict]) -> dict:
    """Mean and spread of the random-head draws' metrics."""
    keys = ("acc@0.5", "miou", "pointing")
    out = {key: float(np.mean([r[key] for r in rnd])) for key in keys}
    out.update({f"{key}_std": float(np.std([r[key] for r in rnd])) for key in keys})
    out["n"] = rnd[0]["n"] if rnd else 0
    out["draws"] = len(rnd)
    return out
