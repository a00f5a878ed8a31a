"""The explorer's data for a run folder (or for records given directly): one JSON-able dict.

Read from the folder, never recomputed when a file has it: heads.json (selected heads, threshold,
elbow), heads.csv (every head's mean S_img / entropy / frequency), metrics.json (stage=evaluate),
ablation.json (stage=ablate), manifest*.jsonl (failures and their reasons), run_config.json (the
composed config of each stage that wrote the page). Per sample, from the records (`samples`).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np

from lab.records.folder import check_record_name, folder_notes
from lab.records.record import AttentionRecord, check_compatible
from lab.report.encode import float32_table
from lab.analysis.across_samples import select_from_analyses
from lab.analysis.record_numbers import HeadSet, selection_analysis
from lab.report.samples import LEVELS, map_bytes, sample_data
from lab.report.page_data import PageData
from lab.report.page_settings import EVALUATE_SAMPLES, PageSettings, evaluated_samples, load_run_config, page_settings, sam_line
from lab.report.mask_overlay import mask_overlays
from lab.report.staleness import needs_sample_heads, stale_tables
from utils.data import file_stem
from utils.errors import UserError
from utils.io import read_jsonl_lenient

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"
SAMPLES_FILE = EVALUATE_SAMPLES
FILE_GLOBS = ("heads.json", "heads.csv", "visual_heads.json", "metrics.json", "ablation.json", "manifest*.jsonl",
              RUN_CONFIG, "figures/*.png", "figures/samples/*.png")


def _json(path: Path, notes: list[str]) -> Any:
    """A JSON file of the run, or None (absent; unreadable ones are said in the page's notes)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path.name} is not readable JSON ({e}); the page leaves it out")
        log.warning("%s: not readable JSON (%s); left out of index.html", path, e)
        return None


def _heads_csv(path: Path) -> dict[str, np.ndarray] | None:
    """heads.csv -> [L, H] arrays (record axes), or None when absent."""
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    L = 1 + max(int(r["layer"]) for r in rows)
    H = 1 + max(int(r["head"]) for r in rows)
    out = {k: np.full((L, H), np.nan) for k in ("s_img", "entropy", "frequency")}
    out.update({k: np.zeros((L, H), bool) for k in ("eligible", "selected")})
    for r in rows:
        l, h = int(r["layer"]), int(r["head"])
        out["s_img"][l, h] = float(r["mean_s_img"])
        out["entropy"][l, h] = float(r["mean_entropy"])
        out["frequency"][l, h] = float(r["frequency"])
        out["eligible"][l, h] = r["eligible"] == "true"
        out["selected"][l, h] = r["selected"] == "true"
    return out


def failures(run_dir: Path) -> list[dict[str, Any]]:
    """Rows whose last manifest line (over every shard's manifest) says failed, with the reason."""
    last: dict[str, dict] = {}
    for p in sorted(run_dir.glob("manifest*.jsonl")):
        for d in read_jsonl_lenient(p):
            if "id" in d:
                last[str(d["id"])] = d
    return [{"id": i, "line": d.get("line"), "reason": d.get("reason", "")} for i, d in last.items()
            if d.get("status") == "failed"]


def build_run_data(run_dir: Path | None, cfg: dict[str, Any] | None = None, *,
                   records: Sequence[AttentionRecord] | None = None, title: str | None = None,
                   link_files: bool = True, ids: Collection[str] | None = None) -> PageData:
    """The explorer's data (its shape: lab/report/page_data.py `PageData`): a run folder (its records under `attention/` or `attention_dir=`), or
    `records` given directly (then `run_dir` may be None). `cfg`: the plain settings of whoever writes
    the page now; the analysis settings are those the stages wrote into run_config.json
    (`lab.report.page_settings.page_settings`). `ids`: list only the folder's records of these sample ids
    (visualize_attention.py mode=batch data_file=)."""
    configs = load_run_config(run_dir) if run_dir else {}
    st = page_settings(configs, cfg)
    rd = Path(run_dir) if run_dir else None
    heads_path = Path(st.heads_file) if st.heads_file else (rd / "heads.json" if rd else None)
    notes: list[str] = []
    heads_json = _json(heads_path, notes) if heads_path else None
    table = _heads_csv(heads_path.with_name("heads.csv")) if heads_path else None
    metrics = _json(rd / "metrics.json", notes) if rd else None
    ablation = _json(rd / "ablation.json", notes) if rd else None
    visual = _json(rd / "visual_heads.json", notes) if rd else None

    files = list(records) if records is not None else _record_files(st, rd, ids, notes)
    n_total = len(files)
    listed = files[: max(0, st.report.max_samples)]
    if len(listed) < n_total:
        notes.append(f"{len(listed)} of {n_total} samples listed (report.max_samples={st.report.max_samples})")

    own = {str(d["id"]): d.get("heads") for d in read_jsonl_lenient(rd / SAMPLES_FILE) if "id" in d} \
        if rd and needs_sample_heads(metrics) else None  # stage=evaluate's per-sample heads
    sam_boxes = _sam_boxes(rd, metrics)
    stale = stale_tables(heads_json, {"metrics": metrics, "ablation": ablation}, configs, own)
    stale_metrics = any(x.table == "metrics" for x in stale)
    if stale_metrics and heads_json:
        notes.append("metrics.json is stale (see the Grounding table): each sample's combined map, box and IoU "
                     "below use heads.json's heads, not the ones stage=evaluate scored")
    head_set = _head_set(None if stale_metrics else metrics, heads_json, st.top_k)
    load = _Loader()
    cached: dict[str, Any] = {}
    if head_set is None and listed:  # no heads.json: select over the listed samples, as stage=select would
        recs = [r for r in map(load, listed) if r is not None]
        head_set, analyses = _select_listed(recs, st)
        cached = {r.meta.sample_id: a for r, a in zip(recs, analyses)}
        if head_set.heads:
            notes.append("no heads.json: heads selected by the report over the listed samples")
        load = _Loader()  # the listing below loads them again, and says again which were skipped
    if stale_metrics:
        sam_boxes = {}
    samples, analyses_listed, excl, layouts = _sample_entries(listed, load, st, head_set, ablation, rd,
                                                              cached, notes, sam_boxes)
    first = load.first
    grids = _grids(first, analyses_listed, excl, heads_json, table, st, samples, notes)
    return {
        "title": title or (f"localization heads: {rd.name}" if rd else "localization heads"),
        "summary": _summary(first, n_total, len(samples), st),
        "failures": (failures(rd) if rd else []) + load.skipped,
        "configs": configs or ({"this stage": cfg} if cfg else {}),
        "heads": _heads_block(heads_json, head_set.heads if head_set else None, heads_path),
        "settings_source": st.source,
        "grid_mean": grids,
        "metrics": metrics,
        "ablation": {k: v for k, v in ablation.items() if k != "samples"} if ablation else None,
        "visual_heads": visual.get("named") if isinstance(visual, dict) else None,
        "stale": {x.table: x.to_json() for x in stale},
        "answer_match": st.match,
        "samples": samples,
        "layouts": [json.loads(k) for k in layouts],
        "files": _files(rd) if (rd and link_files) else [],
        "notes": notes,
    }


def _record_files(st: PageSettings, rd: Path | None, ids: Collection[str] | None, notes: list[str]) -> list[Path]:
    """The run's record files (`attention_dir=` or `<run>/attention`), only those of `ids` when given."""
    folder = Path(st.attention_dir) if st.attention_dir else (rd / "attention" if rd else None)
    files = sorted(folder.glob("*.safetensors")) if folder and folder.is_dir() else []
    if ids is not None:
        stems, n_folder = {file_stem(i) for i in ids}, len(files)
        files = [f for f in files if f.stem in stems]
        notes.append(f"{len(files)} of the folder's {n_folder} records: the {len(stems)} ids given")
    notes.extend(folder_notes(folder) if files else [])  # lab/records/folder.py: live writer, rows missing
    return files


class _Loader:
    """Loads the listed records one by one: the first is kept (the others must be compatible with it),
    a record that cannot be used is listed in `skipped` with the reason."""

    def __init__(self) -> None:
        self.first: AttentionRecord | None = None
        self.skipped: list[dict[str, Any]] = []

    def __call__(self, item) -> AttentionRecord | None:
        try:
            rec = item if isinstance(item, AttentionRecord) else AttentionRecord.load(item)
            if not isinstance(item, AttentionRecord):
                check_record_name(Path(item), rec)  # a copied / renamed record is listed as skipped
            if self.first is None:
                self.first = rec
            else:
                check_compatible([self.first, rec])
            return rec
        except UserError as e:
            self.skipped.append({"id": Path(str(getattr(item, "path", item))).stem, "line": None, "reason": str(e)})
            return None


def _sam_boxes(rd: Path | None, metrics: Any) -> dict[str, dict]:
    """grounding.refine=sam: stage=evaluate's lines of evaluate_samples.jsonl by id (the SAM mask's box,
    its IoU and hit, and the heads it came from), which the page shows instead of the map's box."""
    masks = ((metrics or {}).get("settings") or {}).get("masks") or {}
    if rd is None or masks.get("refine") != "sam":
        return {}
    return evaluated_samples(rd)


def _sample_entries(listed, load: _Loader, st: PageSettings, head_set: HeadSet | None, ablation: Any,
                    rd: Path | None, cached: dict[str, Any], notes: list[str], sam_boxes: dict[str, dict]):
    """Each listed sample's page entry (its maps at the level report.map_budget_mb leaves), their
    analyses, the excluded layer axes and the distinct grid layouts (one copy each in the page)."""
    budget = int(max(0.0, st.report.map_budget_mb) * 1e6)
    n_sel = len(head_set.heads) if head_set else 0
    levels = {lv: 0 for lv in LEVELS}
    ab_rows = {str(s["id"]): s for s in (ablation or {}).get("samples", [])}
    samples, analyses_listed, excl, layouts = [], [], [], {}
    for item in listed:
        rec = load(item)
        if rec is None:
            continue
        level = next((lv for lv in LEVELS[:2] if map_bytes(rec, lv, n_sel) <= budget), "selected")
        budget -= map_bytes(rec, level, n_sel)
        levels[level] += 1
        sd = sample_data(rec, st, head_set, level, ab_rows.get(rec.meta.sample_id), cached.get(rec.meta.sample_id))
        _use_sam_box(sd.entry, sam_boxes.get(rec.meta.sample_id))
        if rd:  # stage=evaluate's masks (grounding.output=mask|both), when there are any
            sd.entry.update(mask_overlays(rd, rec.meta.sample_id, tuple(rec.meta.image_size), st.report.image_side))
        key = json.dumps(sd.entry["grids"])  # one copy of each distinct layout in the page
        sd.entry["layout"] = layouts.setdefault(key, len(layouts))
        del sd.entry["grids"]
        samples.append(sd.entry)
        analyses_listed.append(sd.analysis)
        if not excl:
            excl = rec.excluded_axes(st.selection.exclude_layers)
    if levels["row"] or levels["selected"]:
        notes.append(f"per-head maps: every head for {levels['full'] + levels['row']} sample(s), the selected heads only "
                     f"for {levels['selected']} (report.map_budget_mb={st.report.map_budget_mb:g})")
    return samples, analyses_listed, excl, layouts


def _use_sam_box(entry: dict, line: dict | None) -> None:
    """The SAM mask's box stage=evaluate scored (grounding.refine=sam), when it came from the heads the
    page draws this sample with; the map's own box stays as `map_box`."""
    line = sam_line(line, entry.get("heads"))
    if line is None or "pred_box" not in entry:
        return
    entry["map_box"] = entry["pred_box"]
    entry["pred_box"] = [float(v) for v in line["box"]]
    for k in ("iou", "hit"):
        if k in line and entry.get("gt_box") is not None:
            entry[k] = line[k]
    entry["box_source"] = "the SAM mask's box stage=evaluate scored (grounding.refine=sam, evaluate_samples.jsonl)"


def _head_set(metrics: Any, heads_json: Any, top_k: int) -> HeadSet | None:
    """The heads each sample's combined map and box are drawn with, as stage=evaluate grounded them:
    evaluate's heads (each sample's own from heads.json when it grounded per sample), else
    heads.json's top_k (and its per-sample heads under selection.ranking=per_sample)."""
    own = (heads_json or {}).get("per_sample")
    per_sample = {str(k): [tuple(map(int, h)) for h in v] for k, v in own.items()} if isinstance(own, dict) else None
    if metrics and metrics.get("heads"):
        use_own = bool((metrics.get("settings") or {}).get("per_sample_heads")) and per_sample is not None
        return HeadSet([(int(l), int(h)) for l, h in metrics["heads"]], per_sample if use_own else None)
    if heads_json:
        lst = heads_json.get("heads") or heads_json.get("ranked") or []
        return HeadSet([(int(d["layer"]), int(d["head"])) for d in lst][: top_k or None], per_sample)
    return None


def _select_listed(recs: list[AttentionRecord], st: PageSettings) -> tuple[HeadSet, list]:
    """Heads selected over `recs` as stage=select would, and each record's analysis (reused later)."""
    if not recs:
        return HeadSet(), []
    sel, gr = st.selection, st.grounding
    analyses = [selection_analysis(rec, sel, gr) for rec in recs]
    res = select_from_analyses(analyses, recs[0].excluded_axes(sel.exclude_layers), sel, st.top_k)
    return HeadSet(recs[0].model_heads(res.head_list)), analyses


def _grids(first, analyses, excl, heads_json, table, st: PageSettings, samples, notes) -> dict[str, Any] | None:
    """Layer x head means (heads.csv when there is one) and each sample's chosen heads (recomputed
    with the run's selection settings and heads.json's threshold, so the page can show one sample's choice)."""
    if first is None:
        return None
    thr = heads_json.get("threshold") if heads_json else None
    sel = select_from_analyses(analyses, excl, st.selection, st.top_k, threshold=thr)
    H = sel.n_heads
    for s, ch in zip(samples, sel.per_sample_choices):
        s["chosen"] = [int(c) for c in ch if c >= 0]
    src = "heads.csv"
    if table is None or table["s_img"].shape != sel.mean_s_img.shape:
        table = {"s_img": sel.mean_s_img, "entropy": sel.mean_entropy, "frequency": sel.frequency.astype(float),
                 "eligible": sel.eligible, "selected": sel.selected}
        src = f"computed over the {len(samples)} listed samples"
    elif len(samples) == int((heads_json or {}).get("n_samples", -1)) and not np.array_equal(table["frequency"], sel.frequency):
        notes.append("per-sample choices recomputed with the run's settings do not add up to heads.csv's frequencies; "
                     "heads.csv was written with other settings than the latest stage's (see the settings panel)")
    keep = [i for i in range(sel.n_layers) if i not in set(excl)]
    curve = np.sort(np.asarray(table["s_img"])[keep].ravel())[::-1] if keep else np.zeros(0)
    elbow = (heads_json or {}).get("elbow") or sel.elbow.to_dict()
    return {
        "source": src, "n_samples": int((heads_json or {}).get("n_samples", len(samples))),
        "s_img": float32_table(table["s_img"]), "entropy": float32_table(table["entropy"]),
        "frequency": float32_table(table["frequency"]),
        "eligible": np.asarray(table["eligible"]).ravel().astype(int).tolist(),
        "selected": np.asarray(table["selected"]).ravel().astype(int).tolist(),
        "excluded_layers": list(excl), "n_heads_axis": H,
        "elbow": {"values": [float(v) for v in curve if np.isfinite(v)],
                  "threshold": float(thr) if thr is not None else float(sel.threshold),
                  "knee_index": elbow.get("index"), "method": elbow.get("method_used") or elbow.get("method")},
    }


def _summary(first: AttentionRecord | None, n_total: int, n_listed: int, st: PageSettings) -> dict[str, Any]:
    if first is None:
        return {"records": n_total, "listed": n_listed}
    m, lay = first.meta, first.layout
    g = lay.grid(st.selection.grid)
    return {"model_id": m.model_id, "model_type": m.model_type, "num_layers": m.num_layers, "num_heads": m.num_heads,
            "layers": list(m.layers), "heads": list(m.heads), "grid": f"{g.name} {g.rows}x{g.cols}",
            "aspect": lay.aspect, "query_mode": m.query_mode, "prompt_template": m.prompt_template,
            "records": n_total, "listed": n_listed, "tool_version": m.tool_version}


def _heads_block(heads_json: Any, sel_heads, path: Path | None) -> dict[str, Any]:
    if heads_json:
        return {"selected": heads_json.get("heads", []), "ranked": heads_json.get("ranked", []),
                "threshold": heads_json.get("threshold"), "settings": heads_json.get("settings", {}),
                "n_samples": heads_json.get("n_samples"), "source": str(path.name if path else "heads.json")}
    return {"selected": [{"layer": l, "head": h} for l, h in (sel_heads or [])], "ranked": [], "threshold": None,
            "settings": {}, "n_samples": None, "source": "computed by the report"}


def _files(run_dir: Path) -> list[str]:
    seen: list[str] = []
    for pat in FILE_GLOBS:
        for p in sorted(run_dir.glob(pat)):
            rel = p.relative_to(run_dir).as_posix()
            if rel not in seen:
                seen.append(rel)
    return seen
