"""stage=evaluate's masks (grounding.output=mask|both, grounding.refine=sam): one object per run.

`SegmentationRun.apply(method, row, rec, grounding)` takes the grounding `predict_box` made for one
sample and one head set, makes its mask (the map's region, lab/analysis/masks.py, or SAM prompted by that
region through the segmenter the entry point handed in), writes `masks/<method>/<stem>.png`
(original size; the ground truth as `masks/ground_truth/<stem>.png`), scores it against the row's
`mask`, and returns the grounding whose box is the REC box: the map's own, or with
`refine=sam` the SAM mask's tight box (the map's box is then scored as `map_box`).
`masks/masks.csv` holds every sample's intersection, union, IoU and boxes, so every number of
metrics.json can be recomputed from the PNGs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lab.analysis import grounding as G
from lab.analysis import masks as M
from lab.analysis.gt_boxes import fail_row
from lab.records.record import AttentionRecord
from utils.data import Row, file_stem
from utils.errors import UserError
from utils.io import atomic_write_text, csv_text
from utils.images import load_image
from utils.masks import decode_mask, mask_box_xywh
from utils.settings.declarations import FinderConfig

GT = "ground_truth"
CSV_FIELDS = ["id", "method", "intersection", "union", "iou", "box_x", "box_y", "box_w", "box_h", "sam_score"]


def required_keys(cfg: FinderConfig) -> tuple[str, ...]:
    """Row keys evaluate needs: bbox for boxes, mask for masks (output=mask: the box target is the mask's box)."""
    out = cfg.grounding.output
    return {"box": ("bbox",), "mask": ("mask",), "both": ("bbox", "mask")}[out]


class SegmentationRun:
    """Masks, mask metrics and (refine=sam) SAM boxes of one evaluate run."""

    def __init__(self, cfg: FinderConfig, ctx, data_file: str) -> None:
        g = cfg.grounding
        self.masks = g.output in ("mask", "both")
        self.sam = g.refine == "sam"
        self.active = self.masks or self.sam
        self.grid = cfg.selection.grid
        self.edges, self.hull = g.mask_edges, bool(g.hull)
        self.data_file = data_file
        self.prompt, self.num_points, self.multimask = g.sam.prompt, int(g.sam.num_points), g.sam.multimask
        self.out = Path(ctx.output_dir) / "masks"
        self.segmenter = None
        if self.sam:
            if getattr(ctx, "sam_loader", None) is None:
                raise UserError("grounding.refine=sam needs a SAM model: run through localization_heads_finder.py "
                                "(it hands the stages a SAM loader), or set StageContext.sam_loader")
            self.segmenter = ctx.sam_loader()
        self.metrics: dict[str, M.MaskMetrics] = {}
        self.map_box: dict[str, G.GroundingMetrics] = {}
        self.rows: list[dict] = []
        self._gt: dict[str, object] = {}
        self.empty: list[tuple[str, str]] = []  # (id, reason): rows whose mask is empty on the image
        self.disagree: list[str] = []  # rows whose bbox has box IoU 0 with their mask's box
        self._image: tuple[str, object] | None = None

    # ---- per sample --------------------------------------------------------------------------
    def check(self, recs: list[tuple[Row, AttentionRecord]], manifest=None) -> list[tuple[Row, AttentionRecord]]:
        """Every row's mask decodes at its record's image size (else one UserError listing the rows);
        a row whose mask is empty there (a polygon entirely outside the image, an all-zero RLE) fails
        in `manifest`, as a box outside the image does; a bbox with no overlap with its mask's box is
        counted (`finish`). Returns the rows kept."""
        if not self.masks:
            return recs
        bad = []
        for row, rec in recs:
            try:
                self._gt[row.id] = decode_mask(row.mask, tuple(rec.meta.image_size))
            except ValueError as e:
                bad.append(f"{self.data_file}:{row.line}: {e}")
        if len(bad) == 1:
            raise UserError(bad[0])
        if bad:
            raise UserError(f"{len(bad)} row(s) whose mask does not fit the image:\n  " + "\n  ".join(bad[:20]))
        kept = [(row, rec) for row, rec in recs if self._screen(row, rec, manifest)]
        if not kept:
            raise UserError(f"no row has a mask to score: all {len(recs)} are empty on their image (reasons in {manifest})")
        for row, _ in kept:
            M.write_mask_png(self.out / GT / f"{file_stem(row.id)}.png", self._gt[row.id])
        return kept

    def _screen(self, row: Row, rec: AttentionRecord, manifest) -> bool:
        """False (the row failed in the manifest) when its mask is empty on the image; counts a bbox
        that does not overlap its mask's box."""
        gt = self._gt[row.id]
        if not gt.any():
            W, H = rec.meta.image_size
            what = "its polygon(s) lie entirely outside" if isinstance(row.mask, list) else "its RLE has no pixel set in"
            reason = f"mask is empty: {what} the {W}x{H} image; it cannot be scored (line {row.line} of the data file)"
            self.empty.append((row.id, reason))
            fail_row(manifest, row, reason)
            return False
        if row.bbox is not None and G.iou(row.bbox, mask_box_xywh(gt)) == 0.0:
            self.disagree.append(row.id)
        return True

    def gt_box(self, row: Row):
        """The box target: the row's bbox, else (output=mask) its mask's tight box."""
        return row.bbox if row.bbox is not None else list(mask_box_xywh(self._gt[row.id]))

    def _load(self, rec: AttentionRecord):
        path = rec.meta.image_path
        if self._image is None or self._image[0] != path:
            img = load_image(path)
            if tuple(img.size) != tuple(rec.meta.image_size):
                raise UserError(f"{path} is {img.size[0]}x{img.size[1]} but {rec.path} was made from "
                                f"{rec.meta.image_size[0]}x{rec.meta.image_size[1]}; collect it again")
            self._image = (path, img)
        return self._image[1]

    def apply(self, method: str, row: Row, rec: AttentionRecord, g: G.Grounding) -> G.Grounding:
        """The mask of one grounding (written and scored); returns the grounding with the REC box."""
        if not self.active:
            return g
        score = float("nan")
        if self.sam:
            p = M.sam_prompts(g, rec.layout, self.prompt, self.num_points, self.grid)
            single_point = p["box"] is None and len(p["points"] or []) == 1
            multi = self.multimask == "best" or (self.multimask == "auto" and single_point)
            mask, score = self.segmenter(self._load(rec), box=p["box"], points=p["points"], multimask=multi)
            self.map_box.setdefault(method, G.GroundingMetrics()).add_grounding(g, self.gt_box(row))
            g = dataclasses.replace(g, box_xywh=mask_box_xywh(mask))
        else:
            mask = M.region_mask(g, rec.layout, self.grid, self.edges, self.hull)
        self._record(method, row, mask, g.box_xywh, score)
        return g

    def miss(self, method: str, row: Row, rec: AttentionRecord) -> None:
        """A sample without heads (per-sample ranking): an empty mask, counted as a miss."""
        if not self.active:
            return
        w, h = rec.meta.image_size
        import numpy as np

        if self.sam:
            self.map_box.setdefault(method, G.GroundingMetrics()).add((0.0, 0.0, 0.0, 0.0), self.gt_box(row), False)
        self._record(method, row, np.zeros((h, w), dtype=bool), (0.0, 0.0, 0.0, 0.0), float("nan"))

    def _record(self, method: str, row: Row, mask, box, score: float) -> None:
        line = {"id": row.id, "method": method, "box_x": box[0], "box_y": box[1], "box_w": box[2], "box_h": box[3],
                "sam_score": score, "intersection": "", "union": "", "iou": ""}
        if self.masks:
            M.write_mask_png(self.out / method / f"{file_stem(row.id)}.png", mask)
            inter, union = M.mask_counts(mask, self._gt[row.id])
            self.metrics.setdefault(method, M.MaskMetrics()).add(mask, self._gt[row.id])
            line.update(intersection=inter, union=union, iou=inter / union if union else 0.0)
        self.rows.append(line)

    # ---- the run -----------------------------------------------------------------------------
    def _screened(self, metrics: dict) -> None:
        """metrics.json's keys and one printed line for masks that failed their row or disagree with the bbox
        (absent when every mask was good: the metrics.json a good run always wrote)."""
        if self.empty:
            metrics["masks_empty"] = [{"id": i, "reason": r} for i, r in self.empty]
            metrics["failed"] = metrics.get("failed", 0) + len(self.empty)
            print(f"warning: {len(self.empty)} row(s) not scored, their mask is empty on the image (polygon outside it "
                  "or an all-zero RLE; reasons in the manifest)")
        if self.disagree:
            metrics["mask_bbox_disagree"] = {"count": len(self.disagree), "ids": self.disagree[:100]}
            print(f"warning: {len(self.disagree)} row(s) whose bbox does not overlap their mask's box (box IoU 0; "
                  "metrics.json mask_bbox_disagree): the bbox or the mask is wrong")

    def finish(self, metrics: dict, names: list[str]) -> None:
        """Add `mask` (and with refine=sam `map_box`) to each head set's metrics; write masks.csv; print."""
        if not self.active:
            return
        rnd = sorted(m for m in set(self.metrics) | set(self.map_box) if m.startswith("random_heads_"))
        if self.masks:
            for name in names[:2]:
                metrics[name]["mask"] = self.metrics[name].summary()
            metrics["random_heads"]["mask"] = M.spread([self.metrics[m].summary() for m in rnd])
        if self.sam:
            for name in names[:2]:
                metrics[name]["map_box"] = self.map_box[name].summary()
            metrics["random_heads"]["map_box"] = M.spread([self.map_box[m].summary() for m in rnd])
        metrics["settings"]["masks"] = {
            "output": "mask" if self.masks else "box", "refine": "sam" if self.sam else "none", "edges": self.edges,
            **({"prompt": self.prompt, "num_points": self.num_points, "multimask": self.multimask} if self.sam else {}),
            "files": "masks/<method>/<id stem>.png, masks/ground_truth/, masks/masks.csv" if self.masks else "masks/masks.csv"}
        self._screened(metrics)
        atomic_write_text(self.out / "masks.csv", csv_text(self.rows, CSV_FIELDS))  # ids like =HYPERLINK(...) neutralised
        if self.masks:
            print(f"\n{'masks':16s} {'mIoU':>7s} {'cIoU':>7s} {'P@0.5':>7s} {'P@0.7':>7s} {'P@0.9':>7s}")
            for name in names:
                m = metrics[name]["mask"]
                if "miou" not in m:  # grounding.random_draws=0: no draws to print
                    continue
                print(f"{name:16s} {m['miou']:7.3f} {m['ciou']:7.3f} {m['p@0.5']:7.3f} {m['p@0.7']:7.3f} {m['p@0.9']:7.3f}")
