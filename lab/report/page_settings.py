"""The explorer's settings: the ones the stages ran with, read from the run's run_config.json (each
stage's settings as it wrote them), never the page's own defaults.

Per-sample tables, boxes, IoUs and hits on the page come from `lab.analysis.record_numbers` with
these `SelectionConfig` / `GroundingConfig` objects, so they are the numbers stage=analyze,
stage=select and stage=evaluate computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from utils.settings.declarations import TOP_K, GroundingConfig, ReportConfig, SelectionConfig
from utils.settings.reading import from_plain

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
