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
from utils.files import read_text_regular
from utils.io import load_image

log = logging.getLogger(__name__)


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
        d = json.loads(read_text_regular(p, "heads_file"))
        heads = [(int(h["layer"]), int(h["head"])) for h in (d["heads"] if "heads" in d else d["ranked"])]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise UserError(f"{p}: not a heads.json file ({type(e).__name__}: {str(e)[:100]})") from None
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
    """The record's image (utils.io.load_image: upright, 8-bit RGB), or a grey canvas of its size
    when the file is gone, unreadable or no longer the size the record was made from."""
    from PIL import Image

    p = rec.meta.image_path
    size = tuple(rec.meta.image_size)
    why = "no image path in the record"
    if p:
        try:
            img = load_image(p)
            if img.size == size:
                return img
            why = f"it is {img.size[0]}x{img.size[1]} now, the record was made from {size[0]}x{size[1]}"
        except UserError as e:
            why = str(e)
    log.warning("image %s of %s: %s; drawing on a blank canvas", p, rec.path, why)
    return Image.new("RGB", size, (128, 128, 128))
