"""Is a results table of a run folder still about its heads.json?

stage=evaluate writes metrics.json (the Grounding table) and stage=ablate ablation.json (the
Ablation table), each with the heads it used. A later stage=batch / stage=select into the same
folder (say `top_k=5`) replaces heads.json and leaves those files as they were: their numbers are
then about other heads than the page's "Selected heads". `stale_tables` is the one place that
decides it, from the files alone: a table is stale when

* its heads (metrics.json `heads`, ablation.json `selected_heads.heads`) are not heads.json's
  `heads` (in the same order: evaluate and ablate take heads.json's first `top_k`), or, when
  stage=evaluate grounded each sample with its own heads (`selection.ranking=per_sample`), some
  sample's heads in evaluate_samples.jsonl are not heads.json's `per_sample` ones, or
* a setting that decides the heads differs between the stage that wrote the table and the stage
  that wrote heads.json (their composed configs in run_config.json: `top_k`, and when the table's
  stage selected its heads itself, no `heads_file=`, also `selection.*`, `method_name`, the model
  and `attention_dir`). Without those run_config.json entries only the heads decide (the files'
  own `top_k` is the number of heads they used, which says nothing more).

The page shows a badge naming what differs (lab/report/js/panel_results.js) and `write_explorer` prints
one line per stale table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from utils.settings.declarations import FinderConfig, deciding_keys

# stages that always write heads.json; stage=evaluate / stage=ablate do too when they select on the fly
HEAD_WRITERS = ("stage=batch", "stage=select")
# settings that decide which heads a stage selects (flattened keys of the composed config)
DECIDING = deciding_keys(FinderConfig)  # declared with setting(decides=True) (utils/settings/declarations.py)
TABLES = {"metrics": ("metrics.json", "stage=evaluate", "Grounding"),
          "ablation": ("ablation.json", "stage=ablate", "Ablation")}

Head = tuple[int, int]


@dataclass(frozen=True)
class Staleness:
    """Why one table is not about the current heads.json."""

    table: str  # "metrics" | "ablation"
    table_heads: list[Head] | None  # the heads the table used
    current_heads: list[Head]  # heads.json's
    heads_differ: bool
    settings: list[tuple[str, Any, Any]] = field(default_factory=list)  # (key, table stage's, heads.json writer's)
    writer: str = "heads.json"  # the stage that wrote heads.json (run_config.json label), when known
    samples_differ: tuple[int, int] | None = None  # (samples whose own heads differ, samples compared)

    @property
    def file(self) -> str:
        return TABLES[self.table][0]

    @property
    def stage(self) -> str:
        return TABLES[self.table][1]

    def reasons(self) -> str:
        parts = []
        if self.heads_differ:
            parts.append(f"heads {_names(self.table_heads)} (heads.json now: {_names(self.current_heads)})")
        if self.samples_differ:
            parts.append(f"each sample's own heads differ from heads.json's per_sample in "
                         f"{self.samples_differ[0]} of {self.samples_differ[1]} samples")
        if self.settings:
            diff = ", ".join(f"{k} {_show(a)} (now {_show(b)})" for k, a, b in self.settings)
            parts.append(f"settings differ from {self.writer}'s: {diff}")
        return "; ".join(parts)

    def sentence(self) -> str:
        """What the page says above the table."""
        return (f"Stale: {self.file} ({self.stage}) is not about the current heads.json: {self.reasons()}. "
                f"Re-run {self.stage} into this folder to refresh it.")

    def console_line(self) -> str:
        name = TABLES[self.table][2]
        return (f"warning: index.html: the {name} table ({self.file}, {self.stage}) is stale: {self.reasons()}; "
                f"re-run {self.stage} to refresh it")

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "stage": self.stage, "heads_differ": self.heads_differ,
                "table_heads": [list(h) for h in self.table_heads or []],
                "current_heads": [list(h) for h in self.current_heads],
                "settings": [{"key": k, "table": a, "current": b} for k, a, b in self.settings],
                "samples_differ": list(self.samples_differ) if self.samples_differ else None,
                "writer": self.writer, "sentence": self.sentence(), "console": self.console_line()}


def stale_tables(heads_json: Any, tables: Mapping[str, Any], configs: Mapping[str, Any],
                 sample_heads: Mapping[str, Any] | None = None) -> list[Staleness]:
    """The tables that are not about the current heads.json.

    Args:
        heads_json: heads.json's content (None: nothing to compare with, no table is stale).
        tables: {"metrics": metrics.json, "ablation": ablation.json}, None when absent.
        configs: run_config.json (stage label -> composed config, latest last).
        sample_heads: evaluate_samples.jsonl as {id: heads}, read when metrics.json says each sample
            was grounded with its own heads (`needs_sample_heads`).
    """
    if not isinstance(heads_json, Mapping):
        return []
    current = _heads_json_heads(heads_json)
    writer = heads_writer(configs)
    out = []
    for name, doc in tables.items():
        if not isinstance(doc, Mapping) or name not in TABLES:
            continue
        used = table_heads(name, doc)
        heads_differ = used is not None and used != current
        cfg = configs.get(TABLES[name][1])
        settings: list[tuple[str, Any, Any]] = []
        if writer is not None and isinstance(cfg, Mapping) and writer[0] != TABLES[name][1]:
            settings = setting_differences(cfg, writer[1], ("top_k",) if cfg.get("heads_file") else DECIDING)
        samples = _sample_differences(heads_json, sample_heads) if name == "metrics" and needs_sample_heads(doc) else None
        if heads_differ or settings or samples:
            out.append(Staleness(name, used, current, heads_differ, settings, writer[0] if writer else "heads.json", samples))
    return out


def needs_sample_heads(metrics: Any) -> bool:
    """Did stage=evaluate ground each sample with its own heads (selection.ranking=per_sample)?"""
    return isinstance(metrics, Mapping) and bool((metrics.get("settings") or {}).get("per_sample_heads"))


def _sample_differences(heads_json: Mapping[str, Any], sample_heads: Mapping[str, Any] | None) -> tuple[int, int] | None:
    own = heads_json.get("per_sample")
    if not isinstance(own, Mapping) or not sample_heads:
        return None
    ids = [i for i in sample_heads if i in own]
    n = sum(1 for i in ids if _pairs(sample_heads[i]) != _pairs(own[i]))
    missing = len(sample_heads) - len(ids)  # evaluated samples heads.json does not know any more
    return (n + missing, len(sample_heads)) if n + missing else None


def _pairs(v: Any) -> list[Head] | None:
    try:
        return [(int(h[0]), int(h[1])) for h in v]
    except (TypeError, ValueError, IndexError, KeyError):
        return None


def table_heads(name: str, doc: Mapping[str, Any]) -> list[Head] | None:
    """The heads a table was computed with (model indices), or None when its file does not say."""
    raw = doc.get("heads") if name == "metrics" else (doc.get("selected_heads") or {}).get("heads")
    try:
        return [(int(h[0]), int(h[1])) for h in raw] if raw is not None else None
    except (TypeError, ValueError, IndexError, KeyError):
        return None


def heads_writer(configs: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(label, config) of the latest stage in run_config.json that wrote heads.json. stage=evaluate and
    stage=ablate without heads_file= use the folder's heads.json when one is there (they select and
    write it only with reselect=true, or as the first stage to give the folder one)."""
    labels = list(configs)
    for i in reversed(range(len(labels))):
        label, cfg = labels[i], configs[labels[i]]
        if not isinstance(cfg, Mapping):
            continue
        if label in HEAD_WRITERS:
            return label, cfg
        if label in _USERS and not cfg.get("heads_file"):
            earlier = any(l in HEAD_WRITERS or l in _USERS for l in labels[:i])
            if cfg.get("reselect") or not earlier:
                return label, cfg
    return None


_USERS = ("stage=evaluate", "stage=ablate")  # stages that select on the fly when they have no heads


def setting_differences(a: Mapping[str, Any], b: Mapping[str, Any], keys: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """(key, a's value, b's value) for every flattened key under `keys` where two configs differ."""
    fa, fb = _flatten(a), _flatten(b)
    out = []
    for k in sorted(set(fa) | set(fb)):
        if any(k == p or k.startswith(p + ".") for p in keys) and fa.get(k) != fb.get(k):
            out.append((k, fa.get(k), fb.get(k)))
    return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _heads_json_heads(heads_json: Mapping[str, Any]) -> list[Head]:
    out = []
    for d in heads_json.get("heads") or []:
        try:
            out.append((int(d["layer"]), int(d["head"])))
        except (TypeError, ValueError, KeyError):
            continue
    return out


def _names(heads: list[Head] | None) -> str:
    return ", ".join(f"L{l}H{h}" for l, h in heads) if heads else "none"


def _show(v: Any) -> str:
    return "unset" if v is None else str(v)
