"""visualize_attention.py mode=tokens: where the model looked while it wrote each word, from a record.

Reads one record captured with `query_positions=generated` (cli_llava.py writes them), never the
model. Writes into `output_dir`:

* `<sample_id>_tokens.safetensors`: tensors `maps` `[*lead, rows, cols]` (LLM attention over the
  image-token grid after the chosen steps / layers / heads, weighting and reductions; lead =
  `[T]` by default), `image_maps` `[*lead, rows_p, cols_p]` (patch grid, each map sums to 1) when
  `vision.aggregate` is on, `image_share` `[S]`, `steps` `[S]`; JSON metadata: the token strings,
  axes, settings and both grids' geometry (`token_maps` key);
* `figures/<sample_id>_tokens.png` (one panel per map, in a grid), `figures/<sample_id>_tokens_vision.png`
  (the image maps) and `figures/<sample_id>_image_share.png` (image-share curve).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from lab import figures as plots
from lab.figures.overlays import STRIP_STYLE
from utils.console import printable
from lab.analysis import token_maps as TK
from lab.records.record import AttentionRecord, safe_id
from lab.stages.common import image_or_blank
from lab.stages.context import StageContext
from utils.errors import UserError
from utils.io import atomic_write_bytes
from utils.settings.declarations import VisualizeConfig

log = logging.getLogger(__name__)

FORMAT = "token_maps"
FORMAT_VERSION = 1


def _options(cfg: VisualizeConfig) -> dict:
    """token_view()'s keywords from the view settings (checked when the config was composed)."""
    t, v = cfg.tokens, cfg.vision
    return {"steps": t.steps, "layers": t.layers, "heads": t.heads, "reduce": list(t.reduce), "weighting": t.weighting,
            "vision": v.aggregate, "grid": cfg.selection.grid}


def _grid_dict(layout, grid: str | None) -> dict:
    g = layout.grid(grid)
    return {"name": g.name, "rows": g.rows, "cols": g.cols, "box": list(g.box), "image_size": list(layout.image_size)}


def save_token_maps(view: TK.TokenView, rec: AttentionRecord, path: Path) -> Path:
    """The view's numbers as safetensors (no pickle); metadata JSON under `token_maps`."""
    from safetensors.numpy import save

    tensors = {"maps": np.ascontiguousarray(view.maps, dtype=np.float32),
               "image_share": np.ascontiguousarray(view.shares, dtype=np.float32),
               "steps": np.asarray(view.steps, dtype=np.int64)}
    if view.image_maps is not None:
        tensors["image_maps"] = np.ascontiguousarray(view.image_maps, dtype=np.float32)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "record": str(rec.path), "sample_id": rec.meta.sample_id,
        "model_id": rec.meta.model_id, "query": rec.meta.query, "generated_text": rec.meta.generated_text,
        "tokens": view.labels, "axes": view.axes + ["rows", "cols"],
        "axis_values": {k: v for k, v in view.axis_values.items() if k in view.axes}, **view.settings,
        "grid": _grid_dict(view.layout, view.settings.get("grid")),
        "patch_grid": _grid_dict(view.patch_layout, None) if view.patch_layout is not None else None,
        "maps": ("LLM attention of each step's query on the image tokens, mean over the reduced axes; "
                 + ("per layer (per head if heads are kept) the first prompt token's column zeroed and the rest "
                    "renormalised to 1 before averaging (VLM-Visualizer)" if view.settings["weighting"] != "plain"
                    else "raw softmax probabilities (XAI toolkit)")),
        "image_maps": None if view.image_maps is None else (
            f"maps / maps.sum() @ the vision tower's {view.settings['vision_aggregate']} token->patch matrix: "
            "sums to 1 per map (the figure divides by the max, as VLM-Visualizer does)"),
        "image_share": "per step: sum over the image tokens, mean over the chosen layers and heads, same weighting",
    }
    blob = save(tensors, metadata={FORMAT: json.dumps(meta, allow_nan=False), "tokens": json.dumps(view.labels)})
    atomic_write_bytes(path, blob)
    return path


def tokens_view(cfg: VisualizeConfig, ctx: StageContext) -> dict:
    """mode=tokens: numbers + figures of one record's per-token view (module docstring)."""
    if not cfg.attention_file:
        raise UserError("mode=tokens needs attention_file=<record captured with query_positions=generated>")
    opts = _options(cfg)
    rec = AttentionRecord.load(cfg.attention_file)
    view = TK.token_view(rec, **opts)
    sid = safe_id(rec.meta.sample_id)
    out = ctx.output_dir
    before = {p for p in _view_files(out, sid) if p.exists()}
    res = {"maps": str(save_token_maps(view, rec, out / f"{sid}_tokens.safetensors"))}
    t = cfg.tokens
    image = image_or_blank(rec)
    maps, labels = view.panels("maps")
    what = _describe(view)
    n = min(len(labels), int(t.max_tokens))
    inner = int(np.prod(view.maps.shape[1:-2])) if view.maps.ndim > 3 else 1  # e.g. layers kept: one row per step
    ncols = inner if 1 < inner <= max(int(t.ncols), 12) else int(t.ncols)
    kw = dict(max_tokens=t.max_tokens, style=replace(STRIP_STYLE, ncols=min(n, ncols)), grid=opts["grid"],
              show=cfg.show_plot)
    width = 24 * min(n, ncols)  # characters per title line: about 24 per 1.8-inch panel
    res["figure"] = str(plots.token_overlay_strip(
        image, view.layout, maps, labels, out / "figures" / f"{sid}_tokens.png",
        title=_wrap(f"{rec.meta.query} -> {rec.meta.generated_text}", width) + "\n"
        + _wrap(f"LLM attention on image tokens ({what})", width), **kw))
    if view.image_maps is not None:
        pm, plabels = view.panels("image_maps")
        peak = pm.max(axis=(1, 2), keepdims=True)
        pm = np.divide(pm, peak, out=np.zeros_like(pm), where=peak > 0)
        kw["grid"] = None
        res["vision_figure"] = str(plots.token_overlay_strip(
            image, view.patch_layout, pm, plabels, out / "figures" / f"{sid}_tokens_vision.png",
            title=_wrap(f"through the vision tower ({view.settings['vision_aggregate']} token->patch matrix), "
                        f"each map divided by its max ({what})", width), **kw))
    if len(view.steps) > 1 or "steps" not in view.settings["reduce"]:
        res["image_share"] = str(plots.token_attention_curve(
            [f"{s}:{lab}" for s, lab in zip(view.steps, view.labels)], view.shares,
            out / "figures" / f"{sid}_image_share.png", title=_wrap(f"attention on the image per generated token ({what})", 80),
            show=cfg.show_plot))
    for line in _left_by_earlier_views(out, sid, before, res):
        print(line)
    for k, v in res.items():
        print(f"{k}: {v}")
    return res


def _view_files(out: Path, sid: str) -> list[Path]:
    """Every file a per-token view of sample `sid` may write into `out` (module docstring)."""
    figs = out / "figures"
    return [out / f"{sid}_tokens.safetensors", figs / f"{sid}_tokens.png", figs / f"{sid}_tokens_vision.png",
            figs / f"{sid}_image_share.png"]


def _left_by_earlier_views(out: Path, sid: str, before: set[Path], written: dict) -> list[str]:
    """The files of this sample's view belong to this run: an earlier view's file this run replaced is
    said, one it did not write again (e.g. `_tokens_vision.png` of a view with the vision tower) is
    removed and said, so the folder never mixes two views of one sample.

    Args:
        out: the view's output folder.
        sid: the sample's file stem.
        before: which of `_view_files(out, sid)` existed before this run wrote anything.
        written: this run's results (paths as strings).
    """
    now = {Path(v) for v in written.values()}
    lines = []
    for path in _view_files(out, sid):
        if path in before and path in now:
            lines.append(f"replaced: {path} (an earlier per-token view of {printable(sid)})")
        elif path in before and path.exists():
            path.unlink()
            lines.append(f"removed: {path} (left by an earlier per-token view of {printable(sid)}; not part of this one)")
    return lines


def _wrap(text: str, width: int) -> str:
    """`text` on one line, cut with " ..." past 3 lines of `width` characters (at least 300 characters
    kept, so the settings a title describes stay whole); the figures wrap it to their width."""
    import textwrap

    return textwrap.shorten(text, max(3 * width, 300), placeholder=" ...")


def _describe(view: TK.TokenView) -> str:
    s = view.settings
    parts = [f"weighting {s['weighting']}", "mean over " + ("+".join(s["reduce"]) or "nothing")]
    if s.get("pairs"):
        parts.append("heads " + ",".join(f"L{l}H{h}" for l, h in s["pairs"]))
    else:
        parts.append(f"layers {_short(s['layers'])}, heads {_short(s['heads'])}")
    return "; ".join(parts)


def _short(vals: list[int] | None) -> str:
    if vals is None:
        return "all"
    if len(vals) > 3 and vals == list(range(vals[0], vals[-1] + 1)):
        return f"{vals[0]}-{vals[-1]}"
    return ",".join(map(str, vals))
