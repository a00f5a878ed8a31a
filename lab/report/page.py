"""One self-contained HTML page from the explorer's data: inline CSS (explorer.css) and JS (the
modules of js/, `SCRIPTS`, concatenated into one closure), the data as a JSON blob, a Content-Security-Policy that lets the page load nothing from
outside itself (no CDN, no server; it opens from file:// and inside a notebook's iframe)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from utils.io import jsonable

ASSETS = Path(__file__).resolve().parent
# Only inline script/style and data: images; anything else the page asked for would be refused.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


# Characters that must not appear raw inside a <script> element: `<` (`</script>`, `<!--` + `<script`
# change the HTML parser's state), `>` and `&` (for good measure, as Django's json_script does), and
# U+2028 / U+2029 (line terminators in older JavaScript). JSON reads the escapes back as the same text.
_SCRIPT_UNSAFE = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                  0x2028: "\\u2028", 0x2029: "\\u2029"}


def script_json(data: Any) -> str:
    """`data` as JSON that is safe inside an HTML <script> element: every `<`, `>`, `&`, U+2028 and
    U+2029 written as a `\\uXXXX` escape (inside strings, the only place JSON has them), so no text of
    a row (`<!-- <script>`, `</script>`) can end or re-mode the data block; `json.loads` gives `data` back.

    Args:
        data: anything `utils.io.jsonable` takes (no NaN: `allow_nan=False`).
    """
    blob = json.dumps(jsonable(data), allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return blob.translate(_SCRIPT_UNSAFE)


def _asset(name: str, *forbidden: str) -> str:
    """A file beside this module, inlined into the page; text that would end its element is refused."""
    text = (ASSETS / name).read_text(encoding="utf-8")
    bad = [f for f in forbidden if f in text.lower()]
    if bad:
        raise ValueError(f"{ASSETS / name} contains {bad[0]!r}: it cannot be inlined into the page")
    return text


# The page's script, one concern per file of js/, in load order: the files share one closure (function
# declarations are seen from every file; a file's top-level statements run in this order). A new panel:
# js/panel_<name>.js with a render function, listed here before main.js and added to main.js's PANELS.
SCRIPTS = ("data.js", "dom.js", "decode.js", "colors.js", "state.js", "panel_summary.js", "panel_heads.js",
           "panel_visual.js", "panel_results.js", "sample_list.js", "head_grid.js", "map_view.js", "interactions.js", "main.js")


def page_script() -> str:
    """The explorer's script: the files of `SCRIPTS` inside one strict-mode closure."""
    parts = [_asset(f"js/{name}", "</script", "<!--") for name in SCRIPTS]
    return ("/* Localization-heads run explorer: draws everything from the JSON blob #lh-data; loads nothing.\n"
            "   Built from lab/report/js/ (lab/report/page.py SCRIPTS). */\n(function () {\n\"use strict\";\n"
            + "\n".join(parts) + "})();\n")


def render_page(data: dict[str, Any]) -> str:
    blob = script_json(data)
    css = _asset("explorer.css", "</style")
    js = page_script()
    title = html.escape(str(data.get("title", "localization heads")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{css}</style>
</head><body>
<header><h1 id="title">{title}</h1><p id="subtitle"></p></header>
<noscript><p class="warn">This report draws its maps with JavaScript; the data is in the JSON files of the run folder.</p></noscript>
<main>
<section id="summary-section"><h2>Run</h2><div id="summary"></div><div id="notes"></div><div id="failures"></div><div id="settings"></div></section>
<section id="heads-section"><h2>Selected heads</h2><div class="row"><div id="heads-table"></div><div id="elbow"></div></div></section>
<section id="visual-section" hidden><h2>Visual heads (Bi et al.)</h2><div id="visual-heads"></div></section>
<section id="metrics-section" hidden><h2>Grounding (stage=evaluate)</h2><div id="metrics"></div></section>
<section id="ablation-section" hidden><h2>Ablation (stage=ablate)</h2><div id="ablation"></div></section>
<section id="explore-section"><h2>Explore</h2>
<div class="explore">
 <div class="pane" id="samples-pane"><h3>Samples <span id="sample-count"></span></h3>
  <div class="controls"><input id="sample-filter" type="search" placeholder="filter: id, prompt, answer" aria-label="filter samples">
  <button id="prev-sample" type="button" title="previous sample (k)">&#9650;</button><button id="next-sample" type="button" title="next sample (j)">&#9660;</button></div>
  <div class="controls"><label><input id="filter-wrong" type="checkbox"> wrong answers</label>
  <label><input id="filter-low" type="checkbox"> IoU &lt; 0.5</label></div>
  <p id="sample-stats" class="hint"></p>
  <div id="sample-list"></div></div>
 <div class="pane" id="grid-pane"><h3>Layer &times; head</h3>
  <div class="controls" id="stat-tabs"></div><div class="controls" id="scope-tabs"></div>
  <div id="head-grid"></div><div id="grid-legend"></div><p class="hint">Click a cell: that head's map on the image.</p></div>
 <div class="pane" id="map-pane"><h3 id="map-title">Map</h3>
  <div class="controls" id="source-tabs"></div>
  <div class="controls" id="row-controls" hidden><label for="row-slider" id="row-label">token</label>
   <input id="row-slider" type="range" min="0" max="0" step="1" value="0"><span id="row-token"></span></div>
  <div class="controls" id="grid-controls" hidden><label for="grid-select">grid</label><select id="grid-select"></select></div>
  <div class="controls"><label for="opacity-slider">overlay opacity</label>
   <input id="opacity-slider" type="range" min="0" max="100" step="5" value="70"><span id="opacity-value">70%</span>
   <label><input id="image-only" type="checkbox"> image only</label></div>
  <div id="map-view" data-state="empty"><canvas id="map-canvas" width="10" height="10"></canvas></div>
  <div id="map-cbar"><span id="cbar-lo"></span><canvas id="cbar-canvas" width="160" height="10"></canvas><span id="cbar-hi"></span>
   <div id="cbar-label"></div></div>
  <p id="map-hover" class="hint"></p><p id="map-legend" class="hint"></p>
  <div id="sample-detail"></div></div>
</div></section>
<section id="files-section" hidden><h2>Files</h2><div id="files"></div></section>
</main>
<script type="application/json" id="lh-data">{blob}</script>
<script>{js}</script>
</body></html>
"""
