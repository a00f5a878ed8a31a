"""PNGs of a generated-token record's maps: the image share per token and one overlay per token
(the numbers come from `lab.analysis.token_maps`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lab.analysis.token_maps import record_image_share, record_steps, record_token_maps, token_labels
from lab.figures.charts import token_attention_curve
from lab.figures.overlays import token_overlay_strip

def token_curve(rec: Any, out_path: str | Path, layers: Sequence[int] | None = None,
                heads: Sequence[int] | None = None, *, pairs: Sequence[tuple[int, int]] | None = None,
                title: str | None = None, steps: Any = None, weighting: str = "plain", **kw) -> Path:
    """PNG: share of attention on the image per generated token."""
    shares = record_image_share(rec, layers, heads, pairs=pairs, steps=steps, weighting=weighting)
    labels = token_labels(rec)
    labels = labels if steps is None else [labels[t] for t in record_steps(rec, steps)]
    what = "selected heads" if pairs is not None else "mean over " + (
        "all heads" if layers is None and heads is None else f"layers {layers or 'all'}, heads {heads or 'all'}")
    if weighting != "plain":
        what += f", {weighting} weighting"
    return token_attention_curve(labels, shares, out_path,
                                       title=title or f"attention on image per generated token ({what})", **kw)


def token_strip(rec: Any, image: Any, out_path: str | Path, layers: Sequence[int] | None = None,
                heads: Sequence[int] | None = None, *, pairs: Sequence[tuple[int, int]] | None = None,
                max_tokens: int = 12, title: str | None = None, steps: Any = None, weighting: str = "plain",
                **kw) -> Path:
    """PNG: one overlay per generated token of its (head/layer-averaged) image attention."""
    maps = record_token_maps(rec, layers, heads, pairs=pairs, steps=steps, weighting=weighting)  # (T, V)
    labels = token_labels(rec)
    labels = labels if steps is None else [labels[t] for t in record_steps(rec, steps)]
    return token_overlay_strip(image, rec.layout, maps, labels, out_path, max_tokens=max_tokens,
                                     title=title or f"{rec.meta.query}  ->  {rec.meta.generated_text}", **kw)
