"""Run reports: the offline explorer written as index.html into every run folder, and `show()`
for notebooks."""

from lab.report.explorer import explorer_html, write_explorer
from lab.report.index_html import write_index_html, write_run_index
from lab.report.notebook import show

__all__ = ["explorer_html", "show", "write_explorer", "write_index_html", "write_run_index"]
