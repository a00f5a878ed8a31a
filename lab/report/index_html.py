"""A plain gallery page (`write_index_html`: a metrics table and figures by relative link) and
`write_run_index`, which writes a run folder's explorer (lab/report/explorer.py)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence
from urllib.parse import quote

import numpy as np

from utils.io import atomic_write_text

PathLike = str | os.PathLike

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def write_index_html(
    run_dir: PathLike,
    title: str,
    sections: Mapping[str, Sequence[PathLike]],
    metrics: Mapping[str, Any] | None = None,
    *,
    filename: str = "index.html",
) -> Path:
    """Write `run_dir/index.html`: a metrics table and, per section, every figure embedded
    (`<img>` with a relative path, linked to itself) or linked (other files). Paths are relative to
    `run_dir` (absolute ones inside it are made relative); missing files are listed, not linked."""
    run_dir = Path(run_dir)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1600px}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 8px;text-align:left}"
        "td.num{text-align:right;font-family:monospace}"
        "figure{display:inline-block;margin:6px;vertical-align:top}"
        "figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:small;color:#444}"
        ".missing{color:#a00}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if metrics:
        parts.append("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>")
        for k, v in _flatten(metrics):
            cls = ' class="num"' if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else ""
            parts.append(f"<tr><td>{esc(str(k))}</td><td{cls}>{esc(_fmt(v))}</td></tr>")
        parts.append("</table>")
    for name, paths in sections.items():
        parts.append(f"<h2>{esc(str(name))}</h2><div>")
        for p in paths:
            p = Path(p)
            full = p if p.is_absolute() else run_dir / p
            try:
                rel = os.path.relpath(full, run_dir)
            except ValueError:  # other drive (Windows)
                rel = str(full)
            rel = rel.replace(os.sep, "/")
            href = esc(quote(rel), quote=True)
            if not full.exists():
                parts.append(f'<p class="missing">{esc(rel)} (missing)</p>')
            elif full.suffix.lower() in IMAGE_EXTS:
                parts.append(f'<figure><a href="{href}"><img src="{href}" alt="{esc(rel, quote=True)}" loading="lazy"></a><figcaption>{esc(rel)}</figcaption></figure>')
            else:
                parts.append(f'<p><a href="{href}">{esc(rel)}</a></p>')
        parts.append("</div>")
    parts.append("</body></html>")
    out = run_dir / filename
    atomic_write_text(out, "\n".join(parts) + "\n")
    return out


def write_run_index(run_dir: PathLike, *, cfg: Any = None, ids: Collection[str] | None = None) -> Path:
    """Leave a run folder's page true: write `run_dir/index.html` (the offline explorer,
    `lab.report.explorer.write_explorer`) from the folder's files as they are now, and print one
    warning line per results table the page marks stale (`lab.report.staleness`). Every stage that
    writes into a run folder calls it last.

    Args:
        run_dir: the run folder (heads.json, metrics.json, ablation.json, attention/ ...).
        cfg: the settings of the stage writing it (a settings object or a plain mapping), kept in
            run_config.json under its stage and shown on the page; None: run_config.json as it is.
        ids: list only the records of these sample ids (visualize_attention.py mode=batch data_file=).
    """
    from lab.report.explorer import write_explorer

    return write_explorer(run_dir, cfg, ids=ids)
