"""Per-sample data of the explorer: what a record holds, reduced to what the page draws.

For each listed record: prompt, answers, boxes, the image thumbnail, the layout's grids (boxes in
original pixels + token order, so the page draws every map with the record's own geometry), the
per-head S_img and spatial entropy of the analysed query row (`lab.analysis.analyze_sample`, the
same criteria the select stage uses), the selected heads' combined map and predicted box
(`lab.grounding.predict_box`, as stage=evaluate computes them), 8-bit per-head maps within a byte
budget, and per-token maps (`lab.tokens`) when the record captured several query rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lab import grounding as G
from lab import tokens as TK
from lab.analysis import SampleAnalysis, analyze_sample
from lab.records import AttentionRecord
from lab.report.encode import float16_table, quantize_maps, thumbnail_data_url
from lab.report.settings import ReportSettings
from utils.config import excluded_layers, smoothing_sigma

LEVELS = ("full", "row", "selected")  # every row x every head | analysed row x every head | analysed row x selected heads


def analysis_row(rec: AttentionRecord, query_row: int | None) -> int:
    """The captured row the stages analyse (`lab.stages.common.analysis_row`'s rule, as an index >= 0):
    `grounding.query_row` if set, else the last input token's row (the answer's query), else row 0."""
    q = rec.image_attention.shape[0]
    if query_row is not None and -q <= int(query_row) < q:
        return int(query_row) % q
    last = len(rec.input_ids) - 1
    return rec.meta.query_positions.index(last) if last in rec.meta.query_positions else 0


def excluded_axes(rec: AttentionRecord, layers: Sequence[int] | None) -> list[int]:
    """Excluded model layers -> indices on the record's L axis."""
    wanted = set(excluded_layers(layers, rec.meta.num_layers))
    return [i for i, layer in enumerate(rec.meta.layers) if layer in wanted]


def heads_to_axes(rec: AttentionRecord, heads: Sequence[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Model (layer, head) -> record axes; None when one of them was not captured."""
    li = {layer: i for i, layer in enumerate(rec.meta.layers)}
    hi = {head: i for i, head in enumerate(rec.meta.heads)}
    if any(l not in li or h not in hi for l, h in heads):
        return None
    return [(li[l], hi[h]) for l, h in heads]


@dataclass
class SampleData:
    entry: dict[str, Any]  # JSON-able, what the page gets
    analysis: SampleAnalysis


def map_bytes(rec: AttentionRecord, level: str, n_selected: int) -> int:
    Q, L, H, V = rec.image_attention.shape
    return {"full": Q * L * H * V, "row": L * H * V, "selected": max(1, n_selected) * V}[level]


def analyze(rec: AttentionRecord, st: ReportSettings) -> SampleAnalysis:
    """Both criteria for every head of the analysed row, with the stages' selection settings."""
    return analyze_sample(rec.image_attention[analysis_row(rec, st.query_row)], rec.layout,
                          exclude_layers=excluded_axes(rec, st.exclude_layers), component_weight=st.component_weight,
                          connectivity=st.connectivity, bottom_row_filter=st.bottom_row_filter,
                          bottom_row_fraction=st.bottom_row_fraction, grid=st.grid)


def sample_data(rec: AttentionRecord, st: ReportSettings, heads: Sequence[tuple[int, int]], level: str,
                ablation: dict | None = None, ana: SampleAnalysis | None = None) -> SampleData:
    """Everything the page shows about one record; `heads` (model indices) give the combined map and
    the predicted box; `level` says which per-head maps are stored (see `LEVELS`); `ana`: the
    record's `analyze` result when already computed."""
    m, lay = rec.meta, rec.layout
    att = rec.image_attention  # (Q, L, H, V)
    row = analysis_row(rec, st.query_row)
    grid = lay.grid(st.grid)
    ana = ana if ana is not None else analyze(rec, st)
    image, found = thumbnail_data_url(m.image_path, tuple(m.image_size), st.image_side)
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
    axes = heads_to_axes(rec, heads) if heads else None
    if axes:
        maps = lay.to_grid(att[row], st.grid)  # (L, H, rows, cols)
        hm = np.stack([maps[li, hi] for li, hi in axes])  # (K, rows, cols)
        sigma = smoothing_sigma(st.sigma, max(grid.rows, grid.cols))
        g = G.predict_box(hm, lay, sigma=sigma, hull=st.hull, grid=st.grid)
        top = float(np.max(g.combined)) if g.combined.size else 0.0
        combined = g.combined / top if top > 0 else g.combined  # display: [0, 1]
        entry["combined"] = {**quantize_maps(combined.reshape(1, -1)), "grid": grid.name, "sigma": sigma}
        entry["pred_box"] = [float(v) for v in g.box_xywh]
        entry["peak"] = [float(v) for v in g.peak_xy]
        if gt is not None:
            entry["iou"] = G.iou(g.box_xywh, gt)
            entry["hit"] = bool(G.point_in_box(g.peak_xy, gt))
    elif heads:
        entry["note"] = "the selected heads were not all captured in this record: no combined map or box"
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
    """Per captured row: the mean map of the selected heads and of all heads (`lab.tokens`)."""
    m = rec.meta
    out: dict[str, Any] = {"labels": _row_labels(rec)}
    if m.query_mode == "generated":
        out["all"] = quantize_maps(TK.record_token_maps(rec))
        out.update(_weighted_maps(rec))
        if axes:
            pairs = [(m.layers[li], m.heads[hi]) for li, hi in axes]
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
