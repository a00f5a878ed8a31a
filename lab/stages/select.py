"""stage=select: across a folder of records, the localization heads -> heads.json, heads.csv, figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from lab import plots
from lab.record_folder import NameCheck, check_complete, refuse_live_writer
from lab.records import AttentionRecord, check_compatible
from lab.selection import select_heads
from lab.stages.common import analysis_row, excluded_axes, record_files, sample_analysis, thresholded_analysis
from lab.stages.context import StageContext
from lab.visual_heads import aggregate_visual_head_stats, attention_concentration
from lab.writers import jsonable, write_head_table_csv
from utils.io import atomic_write_json


def select_stage(cfg, ctx: StageContext) -> dict:
    """Across the records of a folder: elbow on mean S_img, k lowest-entropy heads per sample, frequency."""
    folder = Path(cfg.attention_dir) if cfg.attention_dir else ctx.output_dir / "attention"
    refuse_live_writer(folder, ctx.output_dir if ctx.lock is not None else None)  # lab/record_folder.py
    files = record_files(folder)
    missing = check_complete(folder, bool(cfg.get("allow_partial", False)))
    names = NameCheck()
    sel_cfg = cfg.selection
    per_sample_c1 = sel_cfg.elbow.scope == "per_sample"
    s_img, ent, groups, first = [], [], [], None
    ratio, conc, masks, bottom, ids = [], [], [], [], []
    bar = tqdm(files, desc="analyze", unit="record", disable=len(files) < 20)
    try:  # closed before an error line is printed (a bad record ends the run naming its file)
        for f in bar:
            rec = AttentionRecord.load(f)
            names.add(f, rec)  # its sample_id is the one its file name says, and no sample twice
            if first is None:
                first = rec
            else:
                check_compatible([first, rec])
            if per_sample_c1:  # criterion 1 on each sample's own S_img curve (the release)
                _, res = thresholded_analysis(rec, cfg)
                masks.append(res.eligible)
            else:
                res = sample_analysis(rec, cfg)
                if res.bottom_row_artifact is not None:
                    bottom.append(res.bottom_row_artifact)
            ids.append(rec.meta.sample_id)
            s_img.append(res.s_img)
            ent.append(res.entropy)
            row = rec.image_attention[analysis_row(rec, cfg.grounding.query_row)]
            ratio.append(res.s_img)
            conc.append(attention_concentration(row))
            groups.append(rec.meta.extra.get("group"))
    finally:
        bar.close()
    assert first is not None
    S, E = np.stack(s_img), np.stack(ent)  # (N, L, H) each
    excluded = excluded_axes(first, sel_cfg.exclude_layers)
    k = cfg.top_k if sel_cfg.ranking == "per_sample" else sel_cfg.k  # per_sample: each sample's own top_k
    selection = select_heads(S, E, exclude_layers=excluded, elbow_method=sel_cfg.elbow.method, k=k,
                             top_k=cfg.top_k, bottom_row_mask=np.stack(bottom) if bottom else None,
                             elbow_include_excluded=bool(sel_cfg.elbow.include_excluded),
                             sample_mask=np.stack(masks) if per_sample_c1 else None, tie_break=sel_cfg.tie_break)

    def model_idx(li: int, hi: int) -> tuple[int, int]:
        """Record axes -> model indices (identical unless a layer/head subset was captured)."""
        return first.meta.layers[li], first.meta.heads[hi]

    out = ctx.output_dir
    payload = selection.to_json_dict()
    seen: set[int] = set()
    for item in payload.get("ranked", []) + payload.get("heads", []):
        if id(item) not in seen:
            seen.add(id(item))
            item["layer"], item["head"] = model_idx(item["layer"], item["head"])
    payload["records"] = {"folder": str(folder), "count": len(files), "model_id": first.meta.model_id}
    if missing:
        payload["records"]["missing_rows"] = missing
    if cfg.get("method_name", "paper") != "paper":
        payload["method"] = cfg.method_name
    if sel_cfg.ranking == "per_sample":
        H = S.shape[2]
        payload["per_sample"] = {sid: [list(model_idx(int(i) // H, int(i) % H)) for i in row if i >= 0]
                                 for sid, row in zip(ids, selection.per_sample_choices)}
        payload["heads_note"] = ("selection.ranking=per_sample: each sample's own top_k heads are in per_sample; "
                                 "heads/ranked count how often a head is among them (a tally the release does not make)")
    heads_json = atomic_write_json(out / "heads.json", jsonable(payload))
    write_head_table_csv(out / "heads.csv", selection.mean_s_img, selection.mean_entropy, selection.frequency,
                         selection.eligible, selection.selected)
    visual = aggregate_visual_head_stats(np.stack(ratio), np.stack(conc), groups)
    atomic_write_json(out / "visual_heads.json", jsonable(visual))
    paths = _figures(selection, out / "figures", excluded, S.shape[1])
    ranked = [model_idx(int(li), int(hi)) for li, hi in selection.head_list]
    print(selection.summary())
    print(f"localization heads: {', '.join(f'L{l}H{h}' for l, h in ranked)}")
    print(f"heads: {heads_json}")
    return {"heads_file": str(heads_json), "heads": ranked, "records": len(files),
            "figures": {k: str(v) for k, v in paths.items()}, "per_sample": payload.get("per_sample")}


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
