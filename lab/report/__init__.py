"""Run reports: the index.html written into every run folder."""

from lab.report.index_html import write_index_html, write_run_index

__all__ = ["write_index_html", "write_run_index"]
