"""Flat shapes for the constructed worlds (llava/toy, llava/planted): one drawing rule for both."""

from __future__ import annotations

from PIL import ImageDraw

SHAPES = ("square", "circle", "triangle", "cross", "diamond")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: int, y: int, s: int, fill) -> None:
    """Draw `shape` inside the square [x, x+s) x [y, y+s) (no anti-aliasing)."""
    x1, y1 = x + s - 1, y + s - 1
    if shape == "square":
        draw.rectangle([x, y, x1, y1], fill=fill)
    elif shape == "circle":
        draw.ellipse([x, y, x1, y1], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x + (s - 1) / 2, y), (x1, y1), (x, y1)], fill=fill)
    elif shape == "cross":
        t = max(2, s // 3)
        o = (s - t) // 2
        draw.rectangle([x + o, y, x + o + t - 1, y1], fill=fill)
        draw.rectangle([x, y + o, x1, y + o + t - 1], fill=fill)
    elif shape == "diamond":
        h = (s - 1) / 2
        draw.polygon([(x + h, y), (x1, y + h), (x + h, y1), (x, y + h)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
