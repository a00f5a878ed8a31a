"""Figures for localization-head analyses: head overlays on the original image, layer x head
heatmaps, the S_img elbow, per-token attention, bar charts.

Every function saves one PNG at `out_path` (parent folders created, written atomically) and
returns that path as a `pathlib.Path`. Pixels the grid does not cover are dimmed (`base`).
"""

from lab.figures.charts import (
    bar_chart,
    elbow_curve,
    layer_head_heatmap,
    token_attention_curve,
)
from lab.figures.head_grid import head_kinds_grid
from lab.figures.overlays import OverlayStyle, overlay_heads, token_overlay_strip

__all__ = ["OverlayStyle", "bar_chart", "elbow_curve", "head_kinds_grid", "layer_head_heatmap", "overlay_heads",
           "token_attention_curve", "token_overlay_strip"]
