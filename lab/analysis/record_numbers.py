"""Every per-record number the tool shows, one function each, from the typed settings.

The stages, the views, the chat and the explorer all call these (never their own variants), with
the run's `SelectionConfig` (criteria + selection) and `GroundingConfig` (utils/settings/declarations.py):

* `analysis_row`: which captured query row is analysed;
* `analyze_record` / `thresholded_analysis` / `selection_analysis`: both criteria for every head
  (S_img table, entropy table, eligibility), without, with the record's own, or with the
  selection's notion of criterion 1;
* `head_maps`, `smoothing_sigma_for`, `ground` / `ground_all_heads`: the combined map and the box;
* `score`: IoU and pointing hit against a ground-truth box;
* `HeadSet`: which heads a sample is grounded with (one set, or each sample's own under
  `selection.ranking=per_sample`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lab.analysis import grounding as G
from lab.analysis.per_sample import SampleAnalysis, analyze_sample
from lab.criteria.elbow import Elbow, elbow_threshold
from lab.records.record import AttentionRecord
from utils.settings.declarations import GroundingConfig, SelectionConfig, smoothing_sigma
from utils.errors import UserError

Head = tuple[int, int]


def analysis_row(rec: AttentionRecord, gr: GroundingConfig) -> int:
    """The captured row to analyse, as an index >= 0: `grounding.query_row`, else the last input
    token's row (the answer's query), else row 0."""
    q = rec.image_attention.shape[0]
    if q == 0:
        raise UserError(f"{rec.path}: the record captured no query rows")
    if gr.query_row is not None:
        if not -q <= gr.query_row < q:
            raise UserError(f"grounding.query_row={gr.query_row} but {rec.path} has {q} captured rows")
        return int(gr.query_row) % q
    last = len(rec.input_ids) - 1
    return rec.meta.query_positions.index(last) if last in rec.meta.query_positions else 0


def analyze_record(rec: AttentionRecord, sel: SelectionConfig, gr: GroundingConfig,
                   threshold: float | None = None) -> SampleAnalysis:
    """Both criteria for every head of one record's analysed row (`analyze_sample`).

    Args:
        threshold: the criterion-1 threshold, or None (criterion 1 not applied; `min_keep` off).
    """
    return analyze_sample(rec.image_attention[analysis_row(rec, gr)], rec.layout, threshold,
                          rec.excluded_axes(sel.exclude_layers), settings=sel)


def thresholded_analysis(rec: AttentionRecord, sel: SelectionConfig, gr: GroundingConfig) -> tuple[Elbow, SampleAnalysis]:
    """The record's own elbow (criterion 1 within one sample: over the included heads, or every head
    with `selection.elbow.include_excluded`), then both criteria per head with that threshold."""
    first = analyze_record(rec, sel, gr)
    values = first.s_img if sel.elbow.include_excluded else first.s_img[first.included]
    elbow = elbow_threshold(values, method=sel.elbow.method)
    return elbow, analyze_record(rec, sel, gr, threshold=elbow.threshold)


def selection_analysis(rec: AttentionRecord, sel: SelectionConfig, gr: GroundingConfig) -> SampleAnalysis:
    """What the selection takes from one record: with `selection.elbow.scope=per_sample` the record's
    own thresholded analysis (its `eligible` is the per-sample criterion 1), else the plain one."""
    if sel.elbow.scope == "per_sample":
        return thresholded_analysis(rec, sel, gr)[1]
    return analyze_record(rec, sel, gr)


def own_heads(rec: AttentionRecord, sel: SelectionConfig, gr: GroundingConfig, top_k: int) -> list[Head]:
    """A record's own top-k heads (model indices): lowest entropy among those above its own elbow."""
    _, res = thresholded_analysis(rec, sel, gr)
    return rec.model_heads(res.ranked_heads(top_k))


def head_maps(rec: AttentionRecord, heads: Sequence[Head], sel: SelectionConfig, gr: GroundingConfig) -> np.ndarray:
    """(K, rows, cols) maps of the given model heads for the analysed query row."""
    maps = rec.layout.to_grid(rec.image_attention[analysis_row(rec, gr)], sel.grid)  # (L, H, rows, cols)
    return np.stack([maps[li, hi] for li, hi in rec.axes_of(heads)])


def smoothing_sigma_for(rec: AttentionRecord, sel: SelectionConfig, gr: GroundingConfig) -> float:
    """The smoothing sigma in grid cells: `grounding.sigma`, else scaled to the record's grid."""
    g = rec.layout.grid(sel.grid)
    return smoothing_sigma(gr.sigma, max(g.rows, g.cols))


def _predict(maps: np.ndarray, rec: AttentionRecord, sel: SelectionConfig, gr: GroundingConfig) -> G.Grounding:
    return G.predict_box(maps, rec.layout, sigma=smoothing_sigma_for(rec, sel, gr), hull=bool(gr.hull), grid=sel.grid,
                         region=gr.region, geometry=gr.geometry)


def ground(rec: AttentionRecord, heads: Sequence[Head], sel: SelectionConfig, gr: GroundingConfig) -> G.Grounding:
    """The heads' combined map, region, box and peak in original pixels (`grounding.predict_box`)."""
    return _predict(head_maps(rec, heads, sel, gr), rec, sel, gr)


def ground_all_heads(rec: AttentionRecord, sel: SelectionConfig, gr: GroundingConfig) -> G.Grounding:
    """The all-heads-mean baseline: every captured head's map, scaled to the mean over heads."""
    maps = rec.layout.to_grid(rec.image_attention[analysis_row(rec, gr)], sel.grid)  # (L, H, rows, cols)
    L, H = maps.shape[:2]
    return _predict(maps.reshape(-1, *maps.shape[-2:]) / (L * H), rec, sel, gr)  # (L*H, rows, cols)


@dataclass(frozen=True)
class Score:
    iou: float
    hit: bool


def score(g: G.Grounding, gt_box_xywh: Sequence[float]) -> Score:
    """IoU of the predicted box and pointing (the combined map's peak inside the ground-truth box)."""
    return Score(G.iou(g.box_xywh, gt_box_xywh), bool(G.point_in_box(g.peak_xy, gt_box_xywh)))


@dataclass(frozen=True)
class HeadSet:
    """The heads samples are grounded with: `heads` for every sample, or, with `per_sample`
    (`selection.ranking=per_sample`), each sample's own (a sample without an entry has none)."""

    heads: list[Head] = field(default_factory=list)
    per_sample: dict[str, list[Head]] | None = None

    def for_sample(self, sample_id: str) -> list[Head]:
        if self.per_sample is not None:
            return [tuple(h) for h in self.per_sample.get(sample_id, [])]  # type: ignore[misc]
        return list(self.heads)
