"""Helpers several stages share: which query row to analyse, record axes vs model indices, head maps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lab.analysis import SampleAnalysis, analyze_sample
from lab.criteria.elbow import Elbow, elbow_threshold
from lab.records import AttentionRecord
from utils.config import excluded_layers, smoothing_sigma
from utils.errors import UserError

log = logging.getLogger(__name__)


CHOICES = {
    "selection.elbow.method": ("kneedle", "chord", "chord_raw"),
    "selection.elbow.scope": ("mean", "per_sample"),
    "selection.component_weight": ("mass", "area", "relu_mass"),
    "selection.bottom_row_rule": ("share", "any_cell"),
    "selection.ranking": ("frequency", "per_sample"),
    "selection.tie_break": ("s_img", "index"),
    "grounding.region": ("largest", "all"),
    "grounding.geometry": ("layout", "stretch"),
}


def check_choices(cfg) -> None:
    """The analysis/selection/grounding options that take a fixed set of values (one line per mistake)."""
    from omegaconf import OmegaConf

    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in allowed:
            raise UserError(f"{key}={value!r} is not valid: use {' | '.join(allowed)}")
    if OmegaConf.select(cfg, "selection.connectivity") not in (None, 4, 8):
        raise UserError(f"selection.connectivity={cfg.selection.connectivity} is not valid: use 4 or 8")


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


def excluded_axes(rec: AttentionRecord, layers) -> list[int]:
    """Excluded model layers -> indices on the record's L axis (records may hold a layer subset)."""
    wanted = set(excluded_layers(layers, rec.meta.num_layers))
    return [i for i, layer in enumerate(rec.meta.layers) if layer in wanted]


def sample_analysis(rec: AttentionRecord, cfg, threshold: float | None = None) -> SampleAnalysis:
    """Both criteria for every head of one record, with the config's selection settings."""
    sel = cfg.selection
    return analyze_sample(
        rec.image_attention[analysis_row(rec, cfg.grounding.query_row)], rec.layout, threshold,
        exclude_layers=excluded_axes(rec, sel.exclude_layers), component_weight=sel.component_weight,
        connectivity=sel.connectivity, bottom_row_filter=sel.bottom_row_filter,
        bottom_row_fraction=sel.bottom_row_fraction, grid=sel.grid, mean_factor=float(sel.mean_factor),
        binarize_threshold=float(sel.binarize_threshold), bottom_row_rule=sel.bottom_row_rule,
        bottom_row_cell=float(sel.bottom_row_cell), tie_break=sel.tie_break,
        min_keep=int(sel.min_keep) if threshold is not None else 0)


def thresholded_analysis(rec: AttentionRecord, cfg) -> tuple[Elbow, SampleAnalysis]:
    """The record's own elbow (criterion 1 within one sample: over the included heads, or every head
    with `selection.elbow.include_excluded`), then both criteria per head with that threshold."""
    first = sample_analysis(rec, cfg)
    values = first.s_img if cfg.selection.elbow.include_excluded else first.s_img[first.included]
    elbow = elbow_threshold(values, method=cfg.selection.elbow.method)
    return elbow, sample_analysis(rec, cfg, threshold=elbow.threshold)


def own_heads(rec: AttentionRecord, cfg, top_k: int) -> list[tuple[int, int]]:
    """A record's own top-k heads (model indices): lowest entropy among those above its own elbow."""
    _, res = thresholded_analysis(rec, cfg)
    return [(rec.meta.layers[li], rec.meta.heads[hi]) for li, hi in res.ranked_heads(top_k)]


def record_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise UserError(f"no attention folder {folder}; run stage=batch first or pass attention_dir=<folder of records>")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"no records (*.safetensors) in {folder}; run stage=batch first or pass attention_dir=")
    return files


def heads_from_file(path: str, top_k: int | None = None) -> list[tuple[int, int]]:
    """(layer, head) pairs of a heads.json (its `heads`, else its `ranked` list), the first `top_k`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"heads_file not found: {p} (a heads.json written by stage=select or stage=batch)")
    try:
        d = json.loads(p.read_text())
        heads = [(int(h["layer"]), int(h["head"])) for h in (d["heads"] if "heads" in d else d["ranked"])]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{p}: not a heads.json file ({e})") from None
    return heads[:top_k] if top_k else heads


def model_heads_to_axes(rec: AttentionRecord, heads: list[tuple[int, int]]) -> list[tuple[int, int]]:
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


def sigma_for(cfg, rec: AttentionRecord) -> float:
    """The smoothing sigma in grid cells: `grounding.sigma`, else scaled to the record's grid."""
    g = rec.layout.grid(cfg.selection.grid)
    return smoothing_sigma(cfg.grounding.sigma, max(g.rows, g.cols))


def grounding_options(cfg) -> dict:
    """predict_box keywords from the config: hull, grid, region, geometry."""
    g = cfg.grounding
    return dict(hull=bool(g.hull), grid=cfg.selection.grid, region=g.region, geometry=g.geometry)


def head_maps(rec: AttentionRecord, heads: list[tuple[int, int]], cfg) -> np.ndarray:
    """(K, rows, cols) maps of the given model heads for the analysed query row."""
    maps = rec.layout.to_grid(rec.image_attention[analysis_row(rec, cfg.grounding.query_row)], cfg.selection.grid)
    return np.stack([maps[li, hi] for li, hi in model_heads_to_axes(rec, heads)])


def image_or_blank(rec: AttentionRecord):
    """The record's image, or a grey canvas of its size when the file is gone."""
    from PIL import Image

    p = rec.meta.image_path
    if p and Path(p).exists():
        with Image.open(p) as im:
            return im.convert("RGB")
    log.warning("image %s of %s not found; drawing on a blank canvas", p, rec.path)
    return Image.new("RGB", tuple(rec.meta.image_size), (128, 128, 128))
