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

import numpy as np

from lab import heads as H
from lab.ablation import ablate_stage
from lab.records import AttentionRecord, check_compatible, record_path, safe_id
from lab.stations import Strategy, collect
from utils.errors import UserError
from utils.io import atomic_write_json

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


# ---- analysis helpers ---------------------------------------------------------------------
def analysis_row(rec: AttentionRecord, query_row: int | None = None) -> int:
    """The captured row to analyse: `query_row`, else the last input token (the answer's query)."""
    q = rec.image_attention.shape[0]
    if q == 0:
        raise UserError(f"{rec.path}: the record captured no query rows")
    if query_row is not None:
        if not -q <= query_row < q:
            raise UserError(f"grounding.query_row={query_row} but {rec.path} has {q} captured rows")
        return query_row
    last = len(rec.input_ids) - 1
    return rec.meta.query_positions.index(last) if last in rec.meta.query_positions else 0


def sample_analysis(rec: AttentionRecord, cfg, threshold: float | None = None) -> H.SampleAnalysis:
    sel = cfg.selection
    return H.analyze_sample(
        rec.image_attention[analysis_row(rec, cfg.grounding.query_row)], rec.layout, threshold,
        exclude_layers=_excluded(rec, sel.exclude_layers), component_weight=sel.component_weight,
        connectivity=sel.connectivity, bottom_row_filter=sel.bottom_row_filter,
        bottom_row_fraction=sel.bottom_row_fraction, grid=sel.grid)


def _excluded(rec: AttentionRecord, layers) -> list[int]:
    """Excluded model layers -> indices on the record's L axis (records may hold a layer subset)."""
    from utils.config import excluded_layers

    wanted = set(excluded_layers(layers, rec.meta.num_layers))
    return [i for i, layer in enumerate(rec.meta.layers) if layer in wanted]


def record_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise UserError(f"no attention folder {folder}; run stage=batch first or pass attention_dir=<folder of records>")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"no records (*.safetensors) in {folder}; run stage=batch first or pass attention_dir=")
    return files


def heads_from_file(path: str, top_k: int | None = None) -> list[tuple[int, int]]:
    import json

    p = Path(path)
    if not p.exists():
        raise UserError(f"heads_file not found: {p} (a heads.json written by stage=select or stage=batch)")
    try:
        d = json.loads(p.read_text())
        heads = [(int(h["layer"]), int(h["head"])) for h in (d["heads"] if "heads" in d else d["ranked"])]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{p}: not a heads.json file ({e})") from None
    return heads[:top_k] if top_k else heads


def _model_heads_to_axes(rec: AttentionRecord, heads: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(layer, head) model indices -> indices on the record's (L, H) axes; missing ones are an error."""
    li = {layer: i for i, layer in enumerate(rec.meta.layers)}
    hi = {head: i for i, head in enumerate(rec.meta.heads)}
    out = []
    for layer, head in heads:
        if layer not in li or head not in hi:
            raise UserError(f"{rec.path}: head L{layer}H{head} was not captured in this record "
                            f"(layers {rec.meta.layers[:3]}..., heads {rec.meta.heads[:3]}...)")
        out.append((li[layer], hi[head]))
    return out


def _sigma(cfg, rec: AttentionRecord) -> float:
    from utils.config import smoothing_sigma

    g = rec.layout.grid(cfg.selection.grid)
    return smoothing_sigma(cfg.grounding.sigma, max(g.rows, g.cols))


def head_maps(rec: AttentionRecord, heads: list[tuple[int, int]], cfg) -> np.ndarray:
    """(K, rows, cols) maps of the given model heads for the analysed query row."""
    maps = rec.layout.to_grid(rec.image_attention[analysis_row(rec, cfg.grounding.query_row)], cfg.selection.grid)
    return np.stack([maps[li, hi] for li, hi in _model_heads_to_axes(rec, heads)])


def _load_image_or_blank(rec: AttentionRecord):
    from PIL import Image

    p = rec.meta.image_path
    if p and Path(p).exists():
        with Image.open(p) as im:
            return im.convert("RGB")
    log.warning("image %s of %s not found; drawing on a blank canvas", p, rec.path)
    return Image.new("RGB", tuple(rec.meta.image_size), (128, 128, 128))


# ---- stages ---------------------------------------------------------------------------------
def analyze_stage(cfg, ctx: StageContext) -> dict:
    """Per-record analysis: both criteria for every head, saved next to the record."""
    _require(cfg, "attention_file", stage="analyze")
    rec = AttentionRecord.load(cfg.attention_file)
    return analyze_record(rec, cfg)


def analyze_record(rec: AttentionRecord, cfg) -> dict:
    first = sample_analysis(rec, cfg)
    included = first.included
    elbow = H.elbow_threshold(first.s_img[included], method=cfg.selection.elbow.method)
    res = sample_analysis(rec, cfg, threshold=elbow.threshold)
    out = Path(str(rec.path).removesuffix(".safetensors") + ".analysis.json")
    payload = {"record": str(rec.path), "sample_id": rec.meta.sample_id, "elbow": elbow.to_dict(),
               **res.to_dict(), "lowest_entropy_heads": [list(lh) for lh in res.ranked_heads(cfg.top_k * 3)]}
    atomic_write_json(out, payload)
    print(res.summary())
    print(f"analysis: {out}")
    return {"analysis": str(out), "eligible": int(res.eligible.sum()), "top": res.ranked_heads(cfg.top_k)}


def select_stage(cfg, ctx: StageContext) -> dict:
    """Across the records of a folder: elbow on mean S_img, k lowest-entropy heads per sample, frequency."""
    from lab import plots

    folder = Path(cfg.attention_dir) if cfg.attention_dir else ctx.output_dir / "attention"
    files = record_files(folder)
    s_img, ent, groups, first = [], [], [], None
    ratio, conc = [], []
    from tqdm import tqdm

    for f in tqdm(files, desc="analyze", unit="record", disable=len(files) < 20):
        rec = AttentionRecord.load(f)
        if first is None:
            first = rec
        else:
            check_compatible([first, rec])
        res = sample_analysis(rec, cfg)
        s_img.append(res.s_img)
        ent.append(res.entropy)
        row = rec.image_attention[analysis_row(rec, cfg.grounding.query_row)]
        ratio.append(res.s_img)
        conc.append(H.attention_concentration(row))
        groups.append(rec.meta.extra.get("group"))
    assert first is not None
    S, E = np.stack(s_img), np.stack(ent)
    sel_cfg = cfg.selection
    selection = H.select_heads(S, E, exclude_layers=_excluded(first, sel_cfg.exclude_layers),
                               elbow_method=sel_cfg.elbow.method, k=sel_cfg.k, top_k=cfg.top_k)
    # record axes -> model indices (identical unless a layer/head subset was captured)
    def model_idx(li: int, hi: int) -> tuple[int, int]:
        return first.meta.layers[li], first.meta.heads[hi]

    out = ctx.output_dir
    payload = selection.to_json_dict()
    seen: set[int] = set()
    for item in payload.get("ranked", []) + payload.get("heads", []):
        if id(item) not in seen:
            seen.add(id(item))
            item["layer"], item["head"] = model_idx(item["layer"], item["head"])
    payload["records"] = {"folder": str(folder), "count": len(files), "model_id": first.meta.model_id}
    heads_json = atomic_write_json(out / "heads.json", H.jsonable(payload))
    H.write_head_table_csv(out / "heads.csv", selection.mean_s_img, selection.mean_entropy, selection.frequency,
                           selection.eligible, selection.selected)
    visual = H.aggregate_visual_head_stats(np.stack(ratio), np.stack(conc), groups)
    atomic_write_json(out / "visual_heads.json", H.jsonable(visual))
    figs = out / "figures"
    marked = [tuple(map(int, h)) for h in np.argwhere(selection.selected)]
    paths = {
        "mean S_img": plots.layer_head_heatmap(selection.mean_s_img, figs / "mean_s_img.png", title="mean S_img (image attention)", marked=marked, cbar_label="S_img"),
        "mean entropy": plots.layer_head_heatmap(selection.mean_entropy, figs / "mean_entropy.png", title="mean spatial entropy", marked=marked, cbar_label="entropy"),
        "frequency": plots.layer_head_heatmap(selection.frequency.astype(float), figs / "frequency.png", title="selection frequency", marked=marked, cbar_label="samples"),
    }
    curve = np.sort(selection.mean_s_img[~np.isin(np.arange(S.shape[1]), _excluded(first, sel_cfg.exclude_layers))].ravel())[::-1]
    paths["elbow"] = plots.elbow_curve(curve, selection.threshold, figs / "elbow.png", knee_index=selection.elbow.index)
    ranked = [model_idx(int(li), int(hi)) for li, hi in selection.head_list]
    print(selection.summary())
    print(f"localization heads: {', '.join(f'L{l}H{h}' for l, h in ranked)}")
    print(f"heads: {heads_json}")
    return {"heads_file": str(heads_json), "heads": ranked, "records": len(files),
            "figures": {k: str(v) for k, v in paths.items()}}


def _visualize_record(rec: AttentionRecord, cfg, out_dir: Path, heads: list[tuple[int, int]] | None = None) -> dict:
    """Overlay of the top-k heads (given, else the record's own lowest-entropy heads above its elbow)."""
    from lab import grounding, plots

    if heads is None:
        first = sample_analysis(rec, cfg)
        elbow = H.elbow_threshold(first.s_img[first.included], method=cfg.selection.elbow.method)
        res = sample_analysis(rec, cfg, threshold=elbow.threshold)
        heads = [(rec.meta.layers[li], rec.meta.heads[hi]) for li, hi in res.ranked_heads(cfg.top_k)]
    if not heads:
        raise UserError(f"{rec.path}: no head passes both criteria; try selection.exclude_layers=[] or another sample")
    maps = head_maps(rec, heads, cfg)
    layout = rec.layout
    sigma = _sigma(cfg, rec)
    g = grounding.predict_box(maps, layout, sigma=sigma, hull=cfg.grounding.hull, grid=cfg.selection.grid)
    gt = rec.meta.extra.get("bbox")
    sid = safe_id(rec.meta.sample_id)
    path = plots.overlay_heads(
        _load_image_or_blank(rec), layout, {h: m for h, m in zip(heads, maps)}, out_dir / f"{sid}_heads.png",
        combined=g.combined, pred_box=g.box_xywh, gt_box=gt, show_components=cfg.show_components,
        title=f"{rec.meta.query}  ->  {rec.meta.generated_text}", grid=cfg.selection.grid, sigma=sigma,
        show=cfg.show_plot)
    res = {"figure": str(path), "heads": heads, "box": [float(x) for x in g.box_xywh]}
    if gt is not None:
        res["iou"] = grounding.iou(g.box_xywh, gt)
    return res


def visualize_stage(cfg, ctx: StageContext) -> dict:
    """Figures for one record: each top-k head's map on the image, their combined map and box."""
    _require(cfg, "attention_file", stage="visualize")
    rec = AttentionRecord.load(cfg.attention_file)
    heads = heads_from_file(cfg.heads_file, cfg.top_k) if cfg.heads_file else None
    res = _visualize_record(rec, cfg, ctx.output_dir / "figures", heads)
    print(f"figure: {res['figure']}")
    return res


def pipeline_stage(cfg, ctx: StageContext) -> dict:
    """collect + analyze + visualize for one image_file + query."""
    col = collect_stage(cfg, ctx)
    rec = AttentionRecord.load(col["record"])
    ana = analyze_record(rec, cfg)
    heads = heads_from_file(cfg.heads_file, cfg.top_k) if cfg.heads_file else None
    vis = _visualize_record(rec, cfg, ctx.output_dir / "figures", heads)
    print(f"figure: {vis['figure']}")
    return {**col, "analysis": ana["analysis"], "figure": vis["figure"], "heads": vis["heads"]}


def _batch_collect(cfg, ctx: StageContext, require: tuple[str, ...] = ()) -> tuple[list, object]:
    from lab.batch import collect_rows
    from utils.data import load_rows, select_rows

    rows = select_rows(load_rows(cfg.data_file, require), cfg.start_index, cfg.end_index, cfg.shard)
    strategy = strategy_from_cfg(cfg)

    def sample_figure(rec, row) -> None:  # per-sample figures as records arrive (visualize_batch=true)
        try:
            _visualize_record(rec, cfg, ctx.output_dir / "figures" / "samples")
        except UserError as e:
            log.warning("no figure for %s: %s", row.id, e)

    on_record = sample_figure if cfg.visualize_batch else None
    summary = collect_rows(rows, output_dir=ctx.output_dir, load_vlm=ctx.load_vlm, strategy=strategy,
                           batch_size=int(cfg.batch_size), max_new_tokens=int(cfg.max_new_tokens),
                           overwrite=bool(cfg.overwrite), shard=cfg.shard, on_record=on_record)
    print(summary.text())
    return rows, summary


def batch_stage(cfg, ctx: StageContext) -> dict:
    """JSONL -> records (resumable, failures recorded) -> select -> heads.json + figures + index.html.

    Under torchrun / accelerate launch every rank collects its shard of the rows into one shared
    folder; rank 0 waits for all of them, then selects over the union.
    """
    from lab import distributed as D

    info = D.launched_info()
    if info.active:
        if cfg.shard:
            raise UserError("shard= and a multi-process launch do not mix: the launcher already shards by rank")
        D.init(info)
        ctx.output_dir = D.shared_output_dir(info, ctx.output_dir)
        cfg.shard = info.shard
    try:
        rows, summary = _batch_collect(cfg, ctx)
        result = {"collect": summary.to_dict()}
        if info.active:
            D.barrier(info)
            if info.rank != 0:
                return result
            cfg.shard = None
        elif cfg.shard:
            print("shard done; run stage=select attention_dir=... over the union of the shards' records")
            return result
        result["select"] = select_stage(cfg, ctx)
        result["index"] = str(write_index(ctx.output_dir, result))
        print(f"index: {result['index']}")
        return result
    finally:
        D.finish(info)


def write_index(run_dir: Path, result: dict) -> Path:
    from lab import plots

    figs = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "figures").glob("*.png")) if (run_dir / "figures").exists() else []
    samples = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "figures").glob("*/*.png")) if (run_dir / "figures").exists() else []
    sections = {"run figures": figs}
    if samples:
        sections["samples"] = samples
    metrics = {}
    for name in ("metrics.json", "ablation.json", "heads.json"):
        if (run_dir / name).exists():
            metrics[name] = name
    summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
    return plots.write_index_html(run_dir, "localization heads run", sections, {**summary, **{"files": ", ".join(metrics)}})


def evaluate_stage(cfg, ctx: StageContext) -> dict:
    """Acc@0.5, mIoU and pointing of the selected heads vs the all-heads mean vs random heads."""
    from lab import grounding as G
    from lab import plots

    rows, summary = _batch_collect(cfg, ctx, require=("bbox",))
    done = set(summary.ok) | set(summary.skipped)
    recs = [(row, AttentionRecord.load(record_path(ctx.output_dir, row.id))) for row in rows if row.id in done]
    if not recs:
        raise UserError("no sample could be collected; see the manifest for the reasons")
    if cfg.heads_file:
        heads = heads_from_file(cfg.heads_file, cfg.top_k)
        source = str(cfg.heads_file)
    else:
        heads = [tuple(h) for h in select_stage(cfg, ctx)["heads"]]
        source = "selected on the fly from this run"
    first = recs[0][1]
    L, Hn = len(first.meta.layers), len(first.meta.heads)
    draws = G.random_head_sets(L, Hn, len(heads), int(cfg.grounding.random_draws), int(cfg.seed),
                               exclude_layers=_excluded(first, cfg.selection.exclude_layers))
    draws = [[(first.meta.layers[li], first.meta.heads[hi]) for li, hi in d] for d in draws]
    sel_m, all_m = G.GroundingMetrics(), G.GroundingMetrics()
    rnd_m = [G.GroundingMetrics() for _ in draws]
    sigma = _sigma(cfg, first)
    kw = dict(sigma=sigma, hull=cfg.grounding.hull, grid=cfg.selection.grid)
    for row, rec in recs:
        layout = rec.layout
        g = G.predict_box(head_maps(rec, heads, cfg), layout, **kw)
        sel_m.add_grounding(g, row.bbox)
        all_maps = layout.to_grid(rec.image_attention[analysis_row(rec, cfg.grounding.query_row)], cfg.selection.grid)
        g_all = G.predict_box(all_maps.reshape(-1, *all_maps.shape[-2:]) / (L * Hn), layout, **kw)
        all_m.add_grounding(g_all, row.bbox)
        for m, d in zip(rnd_m, draws):
            m.add_grounding(G.predict_box(head_maps(rec, d, cfg), layout, **kw), row.bbox)
    rnd = [m.summary() for m in rnd_m]
    random_summary = {key: float(np.mean([r[key] for r in rnd])) for key in ("acc@0.5", "miou", "pointing")}
    random_summary.update({f"{key}_std": float(np.std([r[key] for r in rnd])) for key in ("acc@0.5", "miou", "pointing")})
    random_summary["n"] = rnd[0]["n"] if rnd else 0
    random_summary["draws"] = len(rnd)
    metrics = {"selected_heads": sel_m.summary(), "all_heads_mean": all_m.summary(), "random_heads": random_summary,
               "heads": [list(h) for h in heads], "heads_source": source, "failed": len(summary.failed),
               "settings": {"sigma": sigma, "hull": cfg.grounding.hull, "top_k": len(heads), "seed": cfg.seed}}
    path = atomic_write_json(ctx.output_dir / "metrics.json", H.jsonable(metrics))
    names = ["selected_heads", "all_heads_mean", "random_heads"]
    print(f"\n{'':16s} {'Acc@0.5':>8s} {'mIoU':>7s} {'pointing':>9s} {'n':>5s}")
    for name in names:
        m = metrics[name]
        print(f"{name:16s} {m['acc@0.5']:8.3f} {m['miou']:7.3f} {m['pointing']:9.3f} {int(m['n']):5d}")
    plots.bar_chart(names, [metrics[n]["acc@0.5"] for n in names], [0.0, 0.0, random_summary["acc@0.5_std"]],
                    ctx.output_dir / "figures" / "grounding_acc.png", title="Acc@0.5 by head set", ylabel="Acc@0.5")
    print(f"metrics: {path}")
    index = write_index(ctx.output_dir, {"metrics": str(path)})
    return {"metrics_file": str(path), "index": str(index), **{n: metrics[n] for n in names}}


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


def run_stage(cfg, ctx: StageContext) -> dict:
    """Dispatch `cfg.stage`; an unknown stage is answered with the list of valid ones."""
    if cfg.stage not in STAGES:
        raise UserError(f"unknown stage={cfg.stage!r}; valid stages: {', '.join(STAGES)}")
    return STAGES[cfg.stage](cfg, ctx)
