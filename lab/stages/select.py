"""stage=select: across a folder of records, the localization heads -> heads.json, heads.csv, figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from lab import figures as plots
from lab.records.record import AttentionRecord, check_compatible
from lab.analysis.across_samples import sample_count_warning, select_from_analyses
from lab.analysis.record_numbers import analysis_row, selection_analysis
from lab.stages.common import record_files
from lab.records.folder import NameCheck, check_complete, refuse_live_writer, run_records
from lab.stages.context import StageContext
from lab.analysis.visual_heads import aggregate_visual_head_stats, attention_concentration, format_named, named_block
from lab.report import write_run_index
from lab.runs.heads_files import check_exclude_layers, write_head_table_csv, write_heads_by_layer, write_heads_json
from utils.io import jsonable
from utils.io import atomic_write_json
from utils.settings.declarations import FinderConfig


def select_stage(cfg: FinderConfig, ctx: StageContext, ids: list[str] | None = None) -> dict:
    """Across the records of a folder: elbow on mean S_img, k lowest-entropy heads per sample, frequency.
    `ids`: the rows of the calling stage's data_file (None: the ids the folder's manifests name)."""
    folder = Path(cfg.attention_dir) if cfg.attention_dir else ctx.output_dir / "attention"
    refuse_live_writer(folder, ctx.output_dir if ctx.lock is not None else None)  # lab/records/folder.py
    files = run_records(folder, record_files(folder), ids, cfg.data_file)  # stray records named, left out
    missing = check_complete(folder, cfg.allow_partial)
    names = NameCheck()
    sel, gr = cfg.selection, cfg.grounding
    analyses, conc, groups, ids, first = [], [], [], [], None
    bar = tqdm(files, desc="analyze", unit="record", disable=len(files) < 20)
    try:  # closed before an error line is printed (a bad record ends the run naming its file)
        for f in bar:
            rec = AttentionRecord.load(f)
            names.add(f, rec)  # its sample_id is the one its file name says, and no sample twice
            if first is None:
                first = rec
                check_exclude_layers(sel.exclude_layers, rec.meta.num_layers, rec.meta.layers)
            else:
                check_compatible([first, rec])
            analyses.append(selection_analysis(rec, sel, gr))
            conc.append(attention_concentration(rec.image_attention[analysis_row(rec, gr)]))
            ids.append(rec.meta.sample_id)
            groups.append(rec.meta.extra.get("group"))
    finally:
        bar.close()
    assert first is not None
    excluded = first.excluded_axes(sel.exclude_layers)
    selection = select_from_analyses(analyses, excluded, sel, cfg.top_k)
    payload = _heads_payload(selection, first, cfg, folder, len(files), ids)
    if missing:
        payload["records"]["missing_rows"] = missing
    too_few = sample_count_warning(len(files))
    if too_few:
        payload["warnings"] = [too_few]
        print(f"warning: {too_few}")
    out = ctx.output_dir
    heads_json = write_heads_json(out / "heads.json", jsonable(payload))  # an earlier one that differs is kept
    write_heads_by_layer(out / "heads_by_layer.json", payload["heads"])  # plain {layer: [heads]} for other head tools
    write_head_table_csv(out / "heads.csv", selection.mean_s_img, selection.mean_entropy, selection.frequency,
                         selection.eligible, selection.selected)
    S = np.stack([a.s_img for a in analyses])  # (N, L, H)
    visual = aggregate_visual_head_stats(S, np.stack(conc), groups)
    visual["named"] = _named_visual_heads(S, np.stack(conc), groups, cfg.visual_heads, selection.selected, first)
    atomic_write_json(out / "visual_heads.json", jsonable(visual))
    paths = _figures(selection, out / "figures", excluded, S.shape[1])
    paths["head kinds"] = plots.head_kinds_grid(visual["named"]["heads"], first.meta.layers, first.meta.heads,
                                                out / "figures" / "head_kinds.png")
    ranked = first.model_heads(selection.head_list)
    print(selection.summary())
    print(f"localization heads: {', '.join(f'L{l}H{h}' for l, h in ranked)}")
    print("\n".join(format_named(visual["named"], S.shape[1] * S.shape[2])))
    print(f"heads: {heads_json}")
    if cfg.stage == "select":  # stage=batch / evaluate / ablate write the page once they are done
        print(f"index: {write_run_index(out, cfg=cfg)}")
    return {"heads_file": str(heads_json), "heads": ranked, "records": len(files),
            "figures": {k: str(v) for k, v in paths.items()}, "per_sample": payload.get("per_sample")}


def _heads_payload(selection, first: AttentionRecord, cfg: FinderConfig, folder: Path, n_files: int, ids: list[str]) -> dict:
    """heads.json: the selection with record axes turned into model indices, where the records came
    from, the method, and (ranking=per_sample) each sample's own heads."""
    payload = selection.to_json_dict()
    seen: set[int] = set()
    for item in payload.get("ranked", []) + payload.get("heads", []):
        if id(item) not in seen:
            seen.add(id(item))
            item["layer"], item["head"] = first.model_head(item["layer"], item["head"])
    payload["records"] = {"folder": str(folder), "count": n_files, "model_id": first.meta.model_id}
    if cfg.method_name != "paper":
        payload["method"] = cfg.method_name
    if cfg.selection.ranking == "per_sample":
        H = selection.n_heads
        payload["per_sample"] = {sid: [list(first.model_head(int(i) // H, int(i) % H)) for i in row if i >= 0]
                                 for sid, row in zip(ids, selection.per_sample_choices)}
        payload["heads_note"] = ("selection.ranking=per_sample: each sample's own top_k heads are in per_sample; "
                                 "heads/ranked count how often a head is among them (a tally the release does not make)")
    return payload


def _named_visual_heads(S, conc, groups, rule, localization, first: AttentionRecord) -> dict:
    """visual_heads.json's "named" block (lab/analysis/visual_heads.py), heads as model indices."""
    block = named_block(S, conc, groups, rule, localization)
    for item in block["heads"] + [h for b in block["by_group"].values() for h in b["heads"]]:
        item["layer"], item["head"] = first.model_head(item["layer"], item["head"])
    return block


def _figures(selection, figs: Path, excluded: list[int], n_layers: int) -> dict[str, Path]:
    """Layer x head heatmaps (mean S_img, mean entropy, frequency) and the elbow curve."""
    marked = [tuple(map(int, h)) for h in np.argwhere(selection.selected)]
    paths = {
        "mean S_img": plots.layer_head_heatmap(selection.mean_s_img, figs / "mean_s_img.png", title="mean S_img (image attention)", marked=marked, cbar_label="S_img"),
        "mean entropy": plots.layer_head_heatmap(selection.mean_entropy, figs / "mean_entropy.png", title="mean spatial entropy", marked=marked, cbar_label="entropy"),
        "frequency": plots.layer_head_heatmap(selection.frequency.astype(float), figs / "frequency.png", title="selection frequency", marked=marked, cbar_label="samples"),
    }
    curve = np.sort(selection.mean_s_img[~np.isin(np.arange(n_layers), excluded)].ravel())[::-1]
    paths["elbow"] = plots.elbow_curve(curve, selection.threshold, figs / "elbow.png", knee_index=selection.elbow.index)
    return paths
