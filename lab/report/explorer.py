"""The run explorer: `index.html` of a run folder, one self-contained page (inline JS/CSS/data,
nothing loaded from anywhere) drawn from the folder's files and records.

`write_explorer(run_dir, cfg)` is what the stages call (through `write_run_index`);
`explorer_html(...)` returns the page for notebooks and other front ends (`lab.report.show`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Collection, Sequence

from lab.records.record import AttentionRecord
from lab.report.page import render_page
from lab.report.rundata import RUN_CONFIG, build_run_data, load_run_config
from utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def plain_config(cfg: Any) -> dict[str, Any] | None:
    """A settings object (utils/settings/declarations.py) or a mapping -> a plain dict (what run_config.json keeps)."""
    if cfg is None:
        return None
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return dict(cfg)


def stage_label(cfg: dict[str, Any]) -> str:
    if cfg.get("stage"):
        return f"stage={cfg['stage']}"
    if cfg.get("mode"):
        return f"visualize_attention mode={cfg['mode']}"
    return "run"


def remember_config(run_dir: Path, cfg: dict[str, Any]) -> None:
    """Keep the composed config of each stage that wrote into the folder (run_config.json)."""
    configs = load_run_config(run_dir)
    label = stage_label(cfg)
    configs.pop(label, None)  # the latest stage last
    configs[label] = cfg
    atomic_write_json(run_dir / RUN_CONFIG, configs)


def explorer_html(run_dir: str | os.PathLike | None = None, cfg: Any = None, *,
                  records: Sequence[AttentionRecord] | None = None, title: str | None = None,
                  link_files: bool = True, ids: Collection[str] | None = None) -> str:
    """The explorer page as a string: of a run folder (only the records of `ids`, when given), or of
    `records` (no folder needed)."""
    data = build_run_data(Path(run_dir) if run_dir is not None else None, plain_config(cfg), records=records,
                          title=title, link_files=link_files, ids=ids)
    return render_page(data)


def write_explorer(run_dir: str | os.PathLike, cfg: Any = None, *, filename: str = "index.html",
                   ids: Collection[str] | None = None) -> Path:
    """`run_dir/index.html`: the explorer of the folder (and run_config.json, when `cfg` is given);
    `ids`: list only the records of these sample ids. Prints one warning line per results table
    the page marks stale (`lab.report.staleness`)."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    plain = plain_config(cfg)
    if plain is not None:
        remember_config(run_dir, plain)
    data = build_run_data(run_dir, plain, ids=ids)
    page = render_page(data)
    out = atomic_write_text(run_dir / filename, page)
    for stale in data["stale"].values():  # lab/report/staleness.py: tables not about the current heads.json
        print(stale["console"])
    log.info("%s: %.2f MB in %.2f s", out, len(page.encode("utf-8")) / 1e6, time.perf_counter() - t0)
    return out
