"""What the explorer needs from the composed config: analysis options (the same keys the stages
read) and the page's own caps (`report.*`). Missing keys take the schema defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from utils.config import GroundingConfig, ReportConfig, SelectionConfig


@dataclass
class ReportSettings:
    grid: str | None = None
    query_row: int | None = None
    exclude_layers: list[int] | None = None  # model layers; None = the model-scaled default
    component_weight: str = "mass"
    connectivity: int = 8
    bottom_row_filter: bool = False
    bottom_row_fraction: float = 0.5
    elbow_method: str = "kneedle"
    k: int = 10
    top_k: int = 3
    sigma: float | None = None
    hull: bool = False
    max_samples: int = ReportConfig.max_samples
    map_budget_mb: float = ReportConfig.map_budget_mb
    image_side: int = ReportConfig.image_side
    attention_dir: str | None = None
    heads_file: str | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "ReportSettings":
        """From a plain (resolved) config dict of any entry point; absent groups keep the defaults."""
        cfg = dict(cfg or {})
        sel = {**_defaults(SelectionConfig), **dict(cfg.get("selection") or {})}
        gr = {**_defaults(GroundingConfig), **dict(cfg.get("grounding") or {})}
        rep = {**_defaults(ReportConfig), **dict(cfg.get("report") or {})}
        excl = sel.get("exclude_layers")
        return cls(
            grid=sel.get("grid"), query_row=gr.get("query_row"),
            exclude_layers=None if excl is None else [int(x) for x in excl],
            component_weight=str(sel["component_weight"]), connectivity=int(sel["connectivity"]),
            bottom_row_filter=bool(sel["bottom_row_filter"]), bottom_row_fraction=float(sel["bottom_row_fraction"]),
            elbow_method=str((sel.get("elbow") or {}).get("method", "kneedle")), k=int(sel["k"]),
            top_k=int(cfg.get("top_k") or 3), sigma=gr.get("sigma"), hull=bool(gr["hull"]),
            max_samples=int(rep["max_samples"]), map_budget_mb=float(rep["map_budget_mb"]),
            image_side=int(rep["image_side"]), attention_dir=cfg.get("attention_dir"), heads_file=cfg.get("heads_file"),
        )


def _defaults(schema: type) -> dict[str, Any]:
    from dataclasses import MISSING, fields

    out = {}
    for f in fields(schema):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            v = f.default_factory()  # type: ignore[misc]
            out[f.name] = {g.name: getattr(v, g.name) for g in fields(v)} if hasattr(v, "__dataclass_fields__") else v
    return out
