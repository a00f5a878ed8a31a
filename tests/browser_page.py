"""Chromium for the explorer tests: where it is, why it cannot run, and a page that records its errors.

The `browser` fixture (tests/conftest.py) launches it once per session; tests/test_report_browser.py,
test_report_explorer.py and test_report_stale.py open pages with `Page`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM=<path>)"
    return None


class Page:
    """A page with its console errors, page errors and every request it made."""

    def __init__(self, browser, url: str | None = None, html: str | None = None):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console error: {m.text}") if m.type == "error"
                     else self.warnings.append(m.text) if m.type == "warning" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        if url:
            self.page.goto(url)
        else:
            self.page.set_content(html)

    def ready(self, frame=None):
        (frame or self.page).wait_for_selector('#map-view[data-state="ready"]', timeout=10_000)

    def view(self, frame=None) -> dict:
        """#map-view's data attributes and its canvas pixels."""
        return (frame or self.page).evaluate("""() => { const v = document.getElementById('map-view');
            return {attrs: Object.assign({}, v.dataset), pixels: document.getElementById('map-canvas').toDataURL()}; }""")

    def pixel(self, x: float, y: float) -> list[int]:
        """RGBA of the map canvas at original-image coordinates (x, y)."""
        return self.page.evaluate("""([x, y]) => { const v = document.getElementById('map-view').dataset;
            const c = document.getElementById('map-canvas');
            const px = Math.floor((x - +v.x0) * +v.scale), py = Math.floor((y - +v.y0) * +v.scale);
            return Array.from(c.getContext('2d').getImageData(px, py, 1, 1).data); }""", [x, y])

    def close(self):
        self.page.close()
