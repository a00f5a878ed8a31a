"""stage=visualize: the top-k heads' maps on the record's image, their combined map, box and components.

Every number a figure draws (the heads, the combined map, the box, the IoU) comes from
`lab.analysis.record_numbers` with the settings of the run that made the record (its run_config.json,
`lab.report.page_settings.run_settings`), never from the figure's own defaults; with
`grounding.refine=sam` the box is the one stage=evaluate wrote (evaluate_samples.jsonl). Beside each
figure, `<figure>.json` holds those numbers and where the settings came from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from lab import figures as plots
from lab.figures.overlays import OverlayStyle
from lab.analysis.grounding import Grounding
from lab.records.record import AttentionRecord
from lab.analysis.record_numbers import ground, head_maps, own_heads, score, smoothing_sigma_for
from lab.report.explorer import plain_config
from lab.report.page_settings import EVALUATE_SAMPLES, PageSettings, evaluated_samples, run_folder_of, run_settings, sam_line
from lab.stages.common import image_or_blank
from lab.runs.heads_files import heads_from_file
from lab.stages.context import StageContext, require
from utils.data import file_stem
from utils.errors import UserError
from utils.io import atomic_write_json, jsonable
from utils.settings.declarations import FinderConfig, VisualizeConfig


Head = tuple[int, int]


def short_text(text: str, n: int = 100) -> str:
    """A figure title's part: one line, at most n characters (records may carry long texts)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def record_settings(rec: AttentionRecord, cfg: Any) -> PageSettings:
    """The settings `rec`'s figures are drawn with: its run's (run_config.json beside its `attention/`
    folder), except the keys `cfg` (a view's, the chat's or stage=visualize's settings) sets itself."""
    return run_settings(run_folder_of(rec.path), cfg.selection, cfg.grounding, int(cfg.top_k))


@dataclasses.dataclass(frozen=True)
class FigureNumbers:
    """What an overlay draws: the heads' grounding (combined map, region, box, peak), the IoU and
    pointing hit against the record's box (when it has one), and where the box came from."""

    heads: list[Head]
    grounding: Grounding
    iou: float | None
    hit: bool | None
    box_source: str

    def to_json(self, settings: PageSettings, figure: Path, rec: AttentionRecord) -> dict:
        return jsonable({
            "figure": figure.name, "sample_id": rec.meta.sample_id, "record": str(rec.path) if rec.path else None,
            "heads": [list(h) for h in self.heads], "box": list(self.grounding.box_xywh), "box_source": self.box_source,
            "peak": list(self.grounding.peak_xy), "gt_box": rec.meta.extra.get("bbox"), "iou": self.iou, "hit": self.hit,
            "settings_source": settings.source, "top_k": settings.top_k,
            "grounding": plain_config(settings.grounding), "selection": plain_config(settings.selection)})


def figure_numbers(rec: AttentionRecord, heads: Sequence[Head], st: PageSettings) -> FigureNumbers:
    """The heads' grounding, IoU and hit with the settings `st` (`record_numbers.ground`, `score`).

    With `grounding.refine=sam` the box, IoU and hit are stage=evaluate's (evaluate_samples.jsonl:
    the SAM mask's box) when it grounded this sample with the same heads; else the map's box, and
    `box_source` says so (a view loads no SAM)."""
    heads = [tuple(map(int, h)) for h in heads]
    g = ground(rec, heads, st.selection, st.grounding)
    gt = rec.meta.extra.get("bbox")
    sc = score(g, gt) if gt is not None else None
    numbers = FigureNumbers(heads, g, sc.iou if sc else None, sc.hit if sc else None, "combined map (record_numbers.ground)")
    if st.grounding.refine != "sam":
        return numbers
    line = sam_line(evaluated_samples(run_folder_of(rec.path)).get(rec.meta.sample_id), heads)
    if line is None:
        return dataclasses.replace(numbers, box_source="combined map: grounding.refine=sam boxes exist only for the "
                                                        "heads stage=evaluate scored (evaluate_samples.jsonl)")
    g = dataclasses.replace(g, box_xywh=tuple(float(v) for v in line["box"]))
    return FigureNumbers(heads, g, line.get("iou"), line.get("hit"), f"SAM mask's box ({EVALUATE_SAMPLES})")


def write_figure_numbers(figure: Path, numbers: FigureNumbers, st: PageSettings, rec: AttentionRecord) -> Path:
    """`<figure>.json` beside the figure (same name, .json): the numbers it draws and their settings."""
    return atomic_write_json(Path(figure).with_suffix(".json"), numbers.to_json(st, Path(figure), rec))


def _title_box(numbers: FigureNumbers) -> str:
    return "pred (SAM)" if numbers.box_source.startswith("SAM") else "pred"


def visualize_record(rec: AttentionRecord, cfg: FinderConfig | VisualizeConfig, out_dir: Path, heads: list[Head] | None = None,
                     heads_file: str | None = None) -> dict:
    """Overlay of the top-k heads (given, else the first top_k of `heads_file`, else the record's own
    lowest-entropy heads above its elbow), drawn with the record's run settings (`record_settings`:
    its top_k too), and its `<figure>.json`."""
    st = record_settings(rec, cfg)
    if heads is None and heads_file:
        heads = heads_from_file(heads_file, st.top_k)
    if heads is None:
        heads = own_heads(rec, st.selection, st.grounding, st.top_k)
    if not heads:
        raise UserError(f"{rec.path}: no head passes both criteria; try selection.exclude_layers=[] or another sample")
    numbers = figure_numbers(rec, heads, st)
    path = draw_overlay(rec, cfg, numbers, st, out_dir / f"{file_stem(rec.meta.sample_id)}_heads.png",
                 f"{short_text(rec.meta.query)}  ->  {short_text(rec.meta.generated_text)}")
    return figure_result(path, numbers, st)


def figure_result(path: Path, numbers: FigureNumbers, st: PageSettings) -> dict:
    """What a view or stage returns for one drawn figure: its path, heads, box, IoU and settings source."""
    res = {"figure": str(path), "heads": numbers.heads, "box": [float(x) for x in numbers.grounding.box_xywh],
           "settings_source": st.source}
    if numbers.iou is not None:
        res["iou"] = numbers.iou
    return res


def draw_overlay(rec: AttentionRecord, cfg: FinderConfig | VisualizeConfig, numbers: FigureNumbers, st: PageSettings, out: Path, title: str) -> Path:
    """The overlay of `numbers` (one panel per head, the combined map and box) and its `<figure>.json`."""
    g = numbers.grounding
    per_head = head_maps(rec, numbers.heads, st.selection, st.grounding)  # (K, rows, cols)
    sigma = smoothing_sigma_for(rec, st.selection, st.grounding)
    path = plots.overlay_heads(
        image_or_blank(rec), rec.layout, {h: m for h, m in zip(numbers.heads, per_head)}, out,
        grounding=g, gt_box=rec.meta.extra.get("bbox"), iou=numbers.iou, show_components=cfg.show_components,
        title=title, grid=st.selection.grid, show=cfg.show_plot,
        style=OverlayStyle(box_label=_title_box(numbers), combined_label=f"combined: smoothed (sigma {sigma:.2f} cells), / max"))
    write_figure_numbers(path, numbers, st, rec)
    return path


def visualize_stage(cfg: FinderConfig, ctx: StageContext) -> dict:
    """Figures for one record: each top-k head's map on the image, their combined map and box."""
    require(cfg, "attention_file", stage="visualize")
    rec = AttentionRecord.load(cfg.attention_file)
    res = visualize_record(rec, cfg, ctx.output_dir / "figures", heads_file=cfg.heads_file)
    print(f"figure: {res['figure']}")
    return res
