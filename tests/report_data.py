"""Synthetic attention records with known geometry, for the explorer's tests (no model needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from lab.records.record import AttentionRecord, RecordMeta, record_path
from utils.contracts.layout import Grid, ImageLayout, square_grid_layout

L, H = 2, 3  # layers x heads of the synthetic model


def pad_layout(W: int, H_: int, side: int = 4) -> ImageLayout:
    M = max(W, H_)
    ox, oy = (M - W) / 2, (M - H_) / 2
    return square_grid_layout((W, H_), range(side * side), side, (-ox, -oy, M - ox, M - oy), "pad")


def crop_layout(W: int, H_: int, side: int = 4) -> ImageLayout:
    m = min(W, H_)
    return square_grid_layout((W, H_), range(side * side), side, ((W - m) / 2, (H_ - m) / 2, (W + m) / 2, (H_ + m) / 2), "crop")


def anyres_layout(W: int, H_: int) -> ImageLayout:
    """A 2x2 base grid and a 4x4 high-res grid over the whole image, one separator token."""
    base = Grid("base", 2, 2, (0, 1, 2, 3), (0.0, 0.0, float(W), float(H_)))
    high = Grid("highres", 4, 4, tuple(range(4, 20)), (0.0, 0.0, float(W), float(H_)))
    return ImageLayout((W, H_), tuple(range(21)), (base, high), "anyres", separator_index=(20,), default_grid="highres")


def peaked(layout: ImageLayout, cell: tuple[int, int], rows: int = 1, grid: str | None = None, seed: int = 0) -> np.ndarray:
    """(rows, L, H, V) attention: small noise everywhere, a peak at `cell` of `grid` for every head
    (head (0, 0) peaks hardest), total mass per map < 1."""
    rng = np.random.default_rng(seed)
    V = layout.num_tokens
    a = 0.01 * rng.random((rows, L, H, V))
    g = layout.grid(grid)
    tok = g.token_index[cell[0] * g.cols + cell[1]]
    a[..., tok] += 0.5
    a[:, 0, 0, tok] += 0.3
    return a.astype(np.float32)


def make_record(sid: str, image: Path, layout: ImageLayout, att: np.ndarray, *, query: str = "where is the red one?",
                extra: dict | None = None, generated: list[str] | None = None) -> AttentionRecord:
    Q = att.shape[0]
    S = 30
    mode = "generated" if generated else "last_input"
    qpos = [S - 1 + t for t in range(Q)] if generated else [S - 1]
    meta = RecordMeta(sample_id=sid, model_id="synthetic", model_type="llava", num_layers=L, num_heads=H,
                      layers=list(range(L)), heads=list(range(H)), prompt=f"USER: <image>\n{query} ASSISTANT:",
                      query=query, query_mode=mode, query_positions=qpos, query_tokens=[":"] * (1 if not generated else Q),
                      image_path=str(image), image_size=list(layout.image_size), image_aspect=layout.aspect,
                      layout=layout.to_dict(), generated_text="".join(generated or ["red"]),
                      generated_tokens=list(generated or ["red"]), extra=dict(extra or {}))
    gen = np.arange(len(generated or ["red"]), dtype=np.int64)  # as many ids as generated tokens
    return AttentionRecord(att, np.arange(S, dtype=np.int64), meta, generated_ids=gen)


def white_image(path: Path, W: int, H_: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H_), (255, 255, 255)).save(path)
    return path


def geometry_run(run: Path) -> dict[str, tuple[ImageLayout, tuple[int, int]]]:
    """A run folder with three 100x50 samples: pad (peak in the padding above the image), crop (peak
    inside the covered square) and anyres (peak on the high-res grid)."""
    img = white_image(run / "images" / "white.png", 100, 50)
    cases = {"a_pad": (pad_layout(100, 50), (0, 1)), "b_crop": (crop_layout(100, 50), (1, 2)),
             "c_anyres": (anyres_layout(100, 50), (3, 0))}
    for sid, (lay, cell) in cases.items():
        att = peaked(lay, cell)
        if lay.aspect == "anyres":
            att[..., :4] = [0.01, 0.02, 0.03, 0.04]  # base grid cells, distinct (rows still sum to < 1)
        make_record(sid, img, lay, att, extra={"bbox": [10, 10, 20, 20], "answer": "red"}).save(record_path(run, sid))
    return cases


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="lh-data">(.*?)</script>', html, re.S)
    assert m, "no data block in the page"
    return json.loads(m.group(1))
