"""`show(run_dir | record)`: the run explorer inline in Jupyter (and the page for other front ends).

    from lab.report import show
    show("runs/toy")                          # a run folder (its index.html's explorer)
    show(AttentionRecord.load("runs/toy/attention/toy_0000.safetensors"))   # one record

The page is the same self-contained HTML as a run's index.html, shown in a sandboxed iframe
(`srcdoc`, scripts allowed, nothing else); without IPython only the HTML string is returned.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Sequence

from lab.records.record import AttentionRecord
from lab.report.explorer import explorer_html
from utils.errors import UserError


def _records(target: Any) -> list[AttentionRecord] | None:
    if isinstance(target, AttentionRecord):
        return [target]
    if isinstance(target, Sequence) and not isinstance(target, (str, bytes)) and target and \
            all(isinstance(r, AttentionRecord) for r in target):
        return list(target)
    return None


def page_for(target: Any, cfg: Any = None, title: str | None = None) -> str:
    """The explorer page of a run folder, a record file, a record or a list of records."""
    recs = _records(target)
    if recs is not None:
        return explorer_html(None, cfg, records=recs, title=title or f"localization heads: {recs[0].meta.sample_id}"
                             + (f" (+{len(recs) - 1})" if len(recs) > 1 else ""), link_files=False)
    if isinstance(target, (str, os.PathLike)):
        p = Path(target).expanduser()
        if p.is_dir():
            return explorer_html(p, cfg, title=title, link_files=False)
        if p.suffix == ".safetensors":
            return page_for(AttentionRecord.load(p), cfg, title)
        raise UserError(f"show(): {p} is neither a run folder nor an attention record (.safetensors)")
    raise UserError(f"show() takes a run folder, a record file or AttentionRecord(s), not {type(target).__name__}")


def iframe(page: str, height: int = 900) -> str:
    """The page in a sandboxed iframe (scripts only: no same-origin access, no navigation of the notebook)."""
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
            f'style="width:100%;height:{int(height)}px;border:1px solid #ddd" title="localization heads explorer"></iframe>')


def show(target: Any, cfg: Any = None, *, height: int = 900, display: bool = True, title: str | None = None) -> str:
    """Render the explorer of `target` inline (IPython/Jupyter) and return the page's HTML."""
    page = page_for(target, cfg, title)
    if display:
        try:
            from IPython.display import HTML
            from IPython.display import display as ipy_display
        except ImportError:
            return page
        ipy_display(HTML(iframe(page, height)))
    return page
