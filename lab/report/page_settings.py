"""The explorer's settings: the ones the stages ran with, read from the run's run_config.json (each
stage's settings as it wrote them), never the page's own defaults.

Per-sample tables, boxes, IoUs and hits on the page come from `lab.analysis.record_numbers` with
these `SelectionConfig` / `GroundingConfig` objects, so they are the numbers stage=analyze,
stage=select and stage=evaluate computed. The figures of a run's records read the same settings
(`run_settings`: visualize_attention.py, stage=visualize, cli_llava.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from utils.settings.declarations import TOP_K, GroundingConfig, ReportConfig, SelectionConfig
from utils.settings.reading import from_plain

log = logging.getLogger(__name__)

# stages whose settings decide the heads, the analyses and the boxes of a run folder
ANALYSIS_STAGES = ("stage=select", "stage=batch", "stage=evaluate", "stage=ablate", "stage=analyze")


@dataclass(frozen=True)
class PageSettings:
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    top_k: int = TOP_K
    attention_dir: str | None = None
    heads_file: str | None = None
    source: str = "defaults"  # whose settings these are (a run_config.json label, or "this view")
    match: str = "exact"  # how an answer is compared with the expected one (ablation.match; lab.runs.conditions)


def load_run_config(run_dir: Path) -> dict[str, Any]:
    """run_config.json of a run folder (stage label -> that stage's settings), {} when absent or unreadable."""
    path = Path(run_dir) / "run_config.json"
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("%s: not readable JSON (%s); its settings are not used", path, e)
        return {}
    return d if isinstance(d, dict) else {}


def page_settings(configs: Mapping[str, Any], current: Mapping[str, Any] | None = None) -> PageSettings:
    """The page's settings.

    Args:
        configs: run_config.json: stage label -> that stage's settings (plain), latest last.
        current: the settings of whoever writes the page now (a stage, a view, the chat), if any.

    Selection, grounding, top_k and the folders come from the latest analysis stage in `configs`
    (the one that wrote heads.json / metrics.json), else from `current`; the report caps from
    `current` when given.
    """
    staged = [(label, c) for label, c in configs.items() if label in ANALYSIS_STAGES and isinstance(c, Mapping)]
    label, src = staged[-1] if staged else ("this view", current or {})
    caps = current if current is not None else src
    return PageSettings(
        selection=from_plain(SelectionConfig, src.get("selection"), strict=False, where=f"run_config.json {label}: selection."),
        grounding=from_plain(GroundingConfig, src.get("grounding"), strict=False, where=f"run_config.json {label}: grounding."),
        report=from_plain(ReportConfig, (caps or {}).get("report"), strict=False, where="report."),
        top_k=src.get("top_k") or TOP_K,
        attention_dir=(current or {}).get("attention_dir") or src.get("attention_dir"),
        heads_file=(current or {}).get("heads_file") or src.get("heads_file"),
        source=label if src else "defaults",
        match=str(((src.get("ablation") or {}) if isinstance(src.get("ablation"), Mapping) else {}).get("match") or "exact"))


def run_folder_of(record_file: str | os.PathLike | None) -> Path | None:
    """The run folder a record belongs to: the folder holding run_config.json beside `attention/`
    (`<run>/attention/<id>.safetensors`) or beside the record itself; None when neither has one."""
    if record_file is None:
        return None
    parent = Path(record_file).resolve().parent
    for folder in (parent.parent, parent) if parent.name == "attention" else (parent,):
        if (folder / "run_config.json").is_file():
            return folder
    return None


def _keep_given(view: Any, default: Any, run: Any, prefix: str, given: list[str]) -> Any:
    """`run`'s settings, except the fields where `view` differs from the declared `default` (keys the
    view was given), whose names are appended to `given`."""
    if dataclasses.is_dataclass(view):
        return dataclasses.replace(run, **{f.name: _keep_given(getattr(view, f.name), getattr(default, f.name),
                                                               getattr(run, f.name), f"{prefix}{f.name}.", given)
                                           for f in dataclasses.fields(view) if f.init})
    if view != default:
        given.append(prefix.rstrip("."))
        return view
    return run


def run_settings(run_dir: Path | None, selection: SelectionConfig, grounding: GroundingConfig, top_k: int) -> PageSettings:
    """The settings a figure draws a run's record with: the selection, grounding and top_k the run's
    stages wrote into `run_dir/run_config.json` (`page_settings`), except the keys the view itself was
    given a non-default value for (those win, and `source` names them); without a run folder or an
    analysis stage in it, the view's own.

    Args:
        run_dir: the record's run folder (`run_folder_of`), or None.
        selection, grounding, top_k: the view's (or chat's, or stage=visualize's) settings.
    """
    configs = load_run_config(run_dir) if run_dir else {}
    st = page_settings(configs)
    if st.source == "defaults":
        return PageSettings(selection=selection, grounding=grounding, top_k=top_k, source="this view's settings")
    given: list[str] = []
    sel = _keep_given(selection, SelectionConfig(), st.selection, "selection.", given)
    gr = _keep_given(grounding, GroundingConfig(), st.grounding, "grounding.", given)
    k = _keep_given(top_k, TOP_K, st.top_k, "top_k.", given)
    source = f"{run_dir / 'run_config.json'} {st.source}" + (f" (this view's {', '.join(given)})" if given else "")
    return dataclasses.replace(st, selection=sel, grounding=gr, top_k=int(k), source=source)


EVALUATE_SAMPLES = "evaluate_samples.jsonl"  # stage=evaluate (lab/stages/evaluate.py SAMPLES_FILE): each sample's heads, box, IoU, hit


def evaluated_samples(run_dir: Path | None) -> dict[str, dict]:
    """stage=evaluate's lines of a run folder's evaluate_samples.jsonl, by sample id ({} when none)."""
    from utils.io import read_jsonl_lenient

    if run_dir is None:
        return {}
    return {str(d["id"]): d for d in read_jsonl_lenient(Path(run_dir) / EVALUATE_SAMPLES) if "id" in d}


def sam_line(line: dict | None, heads: Any) -> dict | None:
    """`line` (an evaluate_samples.jsonl line) when it holds a box stage=evaluate scored with exactly
    `heads`: under grounding.refine=sam, the SAM mask's box the figures and the page draw; else None."""
    if not line or line.get("box") is None:
        return None
    same = [tuple(map(int, h)) for h in line.get("heads") or []] == [tuple(map(int, h)) for h in heads or []]
    return line if same else None
