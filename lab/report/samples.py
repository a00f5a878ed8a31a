"""Per-sample data of the explorer: what a record holds, reduced to what the page draws.

For each listed record: prompt, answers, boxes, the image thumbnail, the layout's grids (boxes in
original pixels + token order, so the page draws every map with the record's own geometry), the
per-head S_img and spatial entropy of the analysed query row, the selected heads' combined map,
predicted box, IoU and hit (all from `lab.analysis.record_numbers` with the run's settings: the
functions stage=analyze, stage=select and stage=evaluate call), 8-bit per-head maps within a byte
budget, and per-token maps (`lab.analysis.token_maps`) when the record captured several query rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lab.analysis import token_maps as TK
from lab.analysis.per_sample import SampleAnalysis
from lab.analysis.record_numbers import (HeadSet, analysis_row, ground, score, selection_analysis,
                                         smoothing_sigma_for)
from lab.records.record import AttentionRecord
from lab.runs.conditions import answer_correct
from lab.report.encode import float16_table, quantize_maps, thumbnail_data_url
from lab.report.page_settings import PageSettings

LEVELS = ("full", "row", "selected")  # every row x every head | analysed row x every head | analysed row x selected heads


@dataclass
class SampleData:
    entry: dict[str, Any]  # JSON-able, what the page gets
    analysis: SampleAnalysis


def map_bytes(rec: AttentionRecord, level: str, n_selected: int) -> int:
    Q, L, H, V = rec.image_attention.shape
    return {"full": Q * L * H * V, "row": L * H * V, "selected": max(1, n_selected) * V}[level]


def sample_data(rec: AttentionRecord, st: PageSettings, heads: HeadSet | None, level: str,
                ablation: dict | None = None, ana: SampleAnalysis | None = None) -> SampleData:
    """Everything the page shows about one record.

    Args:
        heads: the heads (model indices) of the combined map and the predicted box, for this
            sample as stage=evaluate grounds it (`HeadSet.for_sample`); None: no heads known.
        level: which per-head maps are stored (see `LEVELS`).
        ana: the record's `selection_analysis` when already computed.
    """
    m, lay = rec.meta, rec.layout
    att = rec.image_attention  # (Q, L, H, V)
    sel, gr = st.selection, st.grounding
    row = analysis_row(rec, gr)
    grid = lay.grid(sel.grid)
    ana = ana if ana is not None else selection_analysis(rec, sel, gr)
    image, found = thumbnail_data_url(m.image_path, tuple(m.image_size), st.report.image_side)
    extra = m.extra or {}
    gt = extra.get("bbox")
    entry: dict[str, Any] = {
        "id": m.sample_id, "prompt": m.query, "answer": m.generated_text, "gt_answer": extra.get("answer"),
        "group": extra.get("group"), "gt_box": [float(v) for v in gt] if gt is not None else None,
        "image": image, "image_found": found, "image_path": m.image_path, "image_size": list(m.image_size),
        "aspect": lay.aspect, "grid": grid.name,
        "grids": [{"name": g.name, "rows": g.rows, "cols": g.cols, "box": [float(v) for v in g.box],
                   "token_index": list(g.token_index)} for g in lay.grids],
        "query_mode": m.query_mode, "row": row, "row_labels": _row_labels(rec),
        "s_img": float16_table(ana.s_img), "entropy": float16_table(ana.entropy),
    }
    if entry["gt_answer"] is not None and m.generated_text is not None and st.match in ("exact", "contains"):
        entry["correct"] = answer_correct(m.generated_text, str(entry["gt_answer"]), st.match)  # stage=ablate's match
    mine = heads.for_sample(m.sample_id) if heads is not None else []
    axes = rec.axes_of(mine) if mine and rec.has_heads(mine) else None
    if axes:
        g = ground(rec, mine, sel, gr)
        top = float(np.max(g.combined)) if g.combined.size else 0.0
        combined = g.combined / top if top > 0 else g.combined  # display: [0, 1]
        entry["heads"] = [list(h) for h in mine]
        ent = float(np.mean([ana.entropy[a] for a in axes]))  # the selected heads' mean spatial entropy here
        if np.isfinite(ent):
            entry["sel_entropy"] = round(ent, 4)
        entry["combined"] = {**quantize_maps(combined.reshape(1, -1)), "grid": grid.name,
                             "sigma": smoothing_sigma_for(rec, sel, gr)}
        entry["pred_box"] = [float(v) for v in g.box_xywh]
        entry["peak"] = [float(v) for v in g.peak_xy]
        if gt is not None:
            sc = score(g, gt)
            entry["iou"], entry["hit"] = sc.iou, sc.hit
    elif mine:
        entry["note"] = "the selected heads were not all captured in this record: no combined map or box"
    elif heads is not None and heads.per_sample is not None:
        entry["note"] = "no head passed both criteria in this sample (selection.ranking=per_sample): no combined map or box"
    entry.update(_maps(rec, level, axes or [], row))
    if att.shape[0] > 1:
        entry["tokens"] = _token_maps(rec, axes)
    if ablation:
        entry["ablation"] = ablation
    return SampleData(entry, ana)


def _row_labels(rec: AttentionRecord) -> list[str]:
    m = rec.meta
    if m.query_mode == "generated":
        return TK.token_labels(rec)
    toks = list(m.query_tokens)
    return [toks[i] if i < len(toks) else f"q{i}" for i in range(rec.image_attention.shape[0])]


def _maps(rec: AttentionRecord, level: str, axes: list[tuple[int, int]], row: int) -> dict[str, Any]:
    """Per-head maps at the stored level, 8-bit with one scale per map."""
    att = rec.image_attention
    if level == "full":
        return {"maps": {**quantize_maps(att), "level": "full", "rows": list(range(att.shape[0]))}}
    if level == "row" or not axes:
        return {"maps": {**quantize_maps(att[row:row + 1]), "level": "row", "rows": [row]}}
    li = np.array([a[0] for a in axes])
    hi = np.array([a[1] for a in axes])
    sel = att[row][li, hi]  # (K, V)
    return {"maps": {**quantize_maps(sel[None, :, None, :]), "level": "selected", "rows": [row],
                     "heads": [list(a) for a in axes]}}


def _token_maps(rec: AttentionRecord, axes: list[tuple[int, int]] | None) -> dict[str, Any]:
    """Per captured row: the mean map of the selected heads and of all heads (`lab.analysis.token_maps`)."""
    m = rec.meta
    out: dict[str, Any] = {"labels": _row_labels(rec)}
    if m.query_mode == "generated":
        out["all"] = quantize_maps(TK.record_token_maps(rec))
        out.update(_weighted_maps(rec))
        if axes:
            pairs = rec.model_heads(axes)
            out["selected"] = quantize_maps(TK.record_token_maps(rec, pairs=pairs))
            out["share"] = [float(v) for v in TK.record_image_share(rec, pairs=pairs)]
        else:
            out["share"] = [float(v) for v in TK.record_image_share(rec)]
    else:
        out["all"] = quantize_maps(TK.reduce_token_maps(rec.image_attention))
        if axes:
            out["selected"] = quantize_maps(TK.reduce_token_maps(rec.image_attention, pairs=axes))
    return out


def _weighted_maps(rec: AttentionRecord) -> dict[str, Any]:
    """VLM-Visualizer's view of a generated-token record, when it carries what that needs (see
    docs/tokens.md): the all-heads mean with its weighting, and that map through the vision tower
    when the patch grid is the token grid (LLaVA-1.5), in token order so the page draws it alike."""
    if rec.first_attention is None:
        return {}
    view = TK.token_view(rec, weighting="vlm_visualizer",
                         vision="vlm_visualizer" if "vlm_visualizer" in rec.vision else "none")
    out: dict[str, Any] = {"weighted": quantize_maps(view.values)}  # (T, V)
    g = rec.layout.grid()
    if view.image_maps is not None and view.image_maps.shape[1:] == (g.rows, g.cols):
        ti = np.asarray(g.token_index)  # (rows * cols,) row-major cell -> index into V, -1 = no token
        cells = view.image_maps.reshape(view.image_maps.shape[0], -1)  # (T, rows_p * cols_p)
        tok = np.zeros((cells.shape[0], rec.image_attention.shape[-1]))  # (T, V)
        tok[:, ti[ti >= 0]] = cells[:, ti >= 0]
        out["vision"] = quantize_maps(tok)
    return out
