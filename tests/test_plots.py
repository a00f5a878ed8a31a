"""Tests for lab.figures: every figure is a real PNG of the expected pixel size; index.html links
files that exist; overlays are drawn with the layout's geometry."""

from __future__ import annotations

from dataclasses import replace

from lab.figures.overlays import STRIP_STYLE

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab import figures as plots
from lab.analysis.grounding import coverage_mask
from lab.figures import base
from lab.report import write_index_html
from lab.analysis.grounding import predict_box
from utils.contracts.layout import square_grid_layout


def pad_layout(W, H, G):
    M = max(W, H)
    ox, oy = (M - W) // 2, (M - H) // 2
    return square_grid_layout((W, H), range(G * G), side=G, box=(-ox, -oy, M - ox, M - oy), aspect="pad")


def crop_layout(W, H, G):
    m = min(W, H)
    return square_grid_layout((W, H), range(G * G), side=G, box=((W - m) / 2, (H - m) / 2, (W + m) / 2, (H + m) / 2), aspect="crop")


def scene(W=200, H=120):
    """A grey image with a red rectangle at RECT (x 50..110, y 66..102 for 200x120; inside the
    crop coverage too)."""
    a = np.full((H, W, 3), 200, np.uint8)
    x0, y0, x1, y1 = rect(W, H)
    a[y0:y1, x0:x1] = (220, 30, 30)
    return Image.fromarray(a)


def rect(W, H):
    return int(0.25 * W), int(0.55 * H), int(0.55 * W), int(0.85 * H)


def head_maps(lay, n=3, seed=0):
    rng = np.random.default_rng(seed)
    g = lay.grid()
    out = {}
    x0, y0, x1, y1 = rect(*lay.image_size)
    r0, c0 = lay.pixel_to_cell(x0, y0)
    r1, c1 = lay.pixel_to_cell(x1 - 1, y1 - 1)
    for i in range(n):
        m = 0.05 * rng.random((g.rows, g.cols))
        m[r0 : r1 + 1, c0 : c1 + 1] += 1.0 + i
        out[(10 + i, 3 * i)] = m
    return out


def grounded(hm, lay, **kw):
    """The heads' combined map and box, as lab.analysis.record_numbers.ground computes them (the
    figures draw a Grounding they are given; they compute none)."""
    return predict_box(np.stack([np.asarray(m).reshape(lay.grid().rows, lay.grid().cols) for m in hm.values()]), lay, **kw)


def check_png(path, size=None):
    p = Path(path)
    assert p.exists() and p.stat().st_size > 1000
    with Image.open(p) as im:
        assert im.format == "PNG"
        if size is not None:
            assert im.size == size, (im.size, size)
        arr = np.asarray(im.convert("RGB"))
    assert arr.reshape(-1, 3).std(axis=0).max() > 5  # not a blank canvas
    return arr


def no_temp_files(d: Path):
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_overlay_heads_png_size(tmp_path, mode):
    lay = (pad_layout if mode == "pad" else crop_layout)(200, 120, 24)
    hm = head_maps(lay)
    out = plots.overlay_heads(
        scene(), lay, hm, tmp_path / "sub" / "ov.png", grounding=grounded(hm, lay), gt_box=(50, 66, 60, 36),
        show_components=True, title="a $5 query", style=plots.OverlayStyle(figsize=(10, 6), dpi=50),
    )
    assert out == tmp_path / "sub" / "ov.png"
    check_png(out, (500, 300))
    no_temp_files(tmp_path / "sub")


def test_overlay_heads_auto_size_and_options(tmp_path):
    lay = pad_layout(90, 160, 6)
    hm = head_maps(lay, n=7)
    g = predict_box(np.stack(list(hm.values())), lay)
    out = plots.overlay_heads(scene(90, 160), lay, hm, tmp_path / "ov.png", grounding=g)
    with Image.open(out) as im:
        w, h = im.size
    # 1 image + 7 heads + combined = 9 panels: 6 columns x 2 rows of 3in-wide panels (+ 0.55in for
    # each panel's colour bar) at 100 dpi
    assert 2050 <= w <= 2250 and h > 2 * 300
    # per-token [V] maps, no combined panel without a grounding
    flat = {k: v.ravel() for k, v in hm.items()}
    check_png(plots.overlay_heads(scene(90, 160), lay, flat, tmp_path / "ov2.png", style=plots.OverlayStyle(figsize=(8, 4), dpi=50)), (400, 200))
    check_png(plots.overlay_heads(scene(90, 160), lay, {}, tmp_path / "ov3.png", style=plots.OverlayStyle(figsize=(3, 4), dpi=50)), (150, 200))
    with pytest.raises(ValueError):
        plots.overlay_heads(scene(90, 160), lay, {(0, 0): np.zeros((5, 5))}, tmp_path / "bad.png")
    with pytest.raises(ValueError):  # an image of another shape than the layout's
        plots.overlay_heads(scene(160, 90), lay, hm, tmp_path / "bad.png")


def test_overlay_pixels_follow_layout_geometry(tmp_path):
    """Rendered overlay: a single-panel-sized check that the hot cells land on the red rectangle.
    We draw with figsize = image size at dpi 1 px/px into a bare axes via the private helpers."""
    from matplotlib.figure import Figure

    W, H = 200, 120
    lay = pad_layout(W, H, 24)
    m = np.zeros((24, 24))
    r0, c0 = lay.pixel_to_cell(30, 66)
    r1, c1 = lay.pixel_to_cell(89, 101)
    m[r0 : r1 + 1, c0 : c1 + 1] = 1.0
    img, disp = base._display(Image.new("RGB", (W, H), (0, 0, 0)), lay, 1024)
    fig = Figure(figsize=(W / 100, H / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    base._show_image(ax, img, W, H)
    base._overlay(ax, m, disp, coverage_mask(disp), W, H, grid=None, order=0, cmap="gray", alpha=1.0)
    ax.set_axis_off()
    out = tmp_path / "raw.png"
    fig.savefig(out, dpi=100)
    arr = np.asarray(Image.open(out).convert("L")).astype(float)
    assert arr.shape == (H, W)
    ys, xs = np.nonzero(arr > 128)
    x0, y0, x1, y1 = lay.cells_box(r0, c0, r1 + 1, c1 + 1)
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1


def test_display_downscale_keeps_geometry():
    W, H = 2000, 1200
    lay = pad_layout(W, H, 24)
    img, small = base._display(Image.new("RGB", (W, H)), lay, 500)
    assert small.image_size == (500, 300) and img.shape == (300, 500, 3)
    m = np.zeros((24, 24))
    m[12:15, 3:9] = 1
    big = lay.to_image(m, order=0) > 0.5
    sm = small.to_image(m, order=0) > 0.5
    ys, xs = np.nonzero(big)
    ys2, xs2 = np.nonzero(sm)
    assert abs(xs2.min() * 4 - xs.min()) <= 4 and abs(ys2.min() * 4 - ys.min()) <= 4
    assert abs((xs2.max() + 1) * 4 - (xs.max() + 1)) <= 4 and abs((ys2.max() + 1) * 4 - (ys.max() + 1)) <= 4


def test_layer_head_heatmap(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.random((32, 32))
    v[0, :] = np.inf
    v[1, 2] = np.nan
    out = plots.layer_head_heatmap(v, tmp_path / "hm.png", title="S_img", marked=[(14, 3), (20, 7)], cbar_label="entropy", figsize=(8, 6), dpi=60)
    arr = check_png(out, (480, 360))
    # grey masked cells exist, red marker pixels exist
    grey = (np.abs(arr.astype(int) - 191).max(axis=-1) <= 3)
    assert grey.sum() > 50
    red = (arr[..., 0] > 200) & (arr[..., 1] < 60) & (arr[..., 2] < 60)
    assert red.sum() > 10
    check_png(plots.layer_head_heatmap(v, tmp_path / "hm_x.png", title="x", marked=[(5, 5)], marker="x", log=True, cbar_label=""))
    check_png(plots.layer_head_heatmap(np.full((4, 4), np.inf), tmp_path / "hm_inf.png", title="all inf", cbar_label="c"))


def test_elbow_curve(tmp_path):
    vals = np.sort(np.random.default_rng(1).gamma(1.0, size=1024))[::-1]
    check_png(plots.elbow_curve(vals, 2.0, tmp_path / "elbow.png", knee_index=40, figsize=(6, 4), dpi=50), (300, 200))
    check_png(plots.elbow_curve(np.r_[vals, np.inf], 2.0, tmp_path / "elbow2.png"), (600, 400))


def test_token_attention_curve(tmp_path):
    toks = ["The", "red", "$one", "\n", " ", "is", "a", "circle", "</s>"]
    shares = np.linspace(0.1, 0.5, len(toks))
    check_png(plots.token_attention_curve(toks, shares, tmp_path / "tok.png", figsize=(6, 3), dpi=50), (300, 150))
    many = [f"t{i}" for i in range(150)]
    check_png(plots.token_attention_curve(many, np.random.default_rng(0).random(150), tmp_path / "tok2.png"))
    with pytest.raises(ValueError):
        plots.token_attention_curve(["a"], [0.1, 0.2], tmp_path / "bad.png")


@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_token_overlay_strip(tmp_path, mode):
    lay = (pad_layout if mode == "pad" else crop_layout)(200, 120, 24)
    maps = np.stack(list(head_maps(lay, n=3).values()) * 6)  # 18 tokens
    toks = [f"w{i}" for i in range(18)]
    check_png(plots.token_overlay_strip(scene(), lay, maps, toks, tmp_path / "strip.png", max_tokens=12, style=replace(STRIP_STYLE, figsize=(12, 2), dpi=50)), (600, 100))
    check_png(plots.token_overlay_strip(scene(), lay, maps[:4], toks[:4], tmp_path / "strip2.png", shared_scale=True, style=replace(STRIP_STYLE, ncols=2)))
    with pytest.raises(ValueError):
        plots.token_overlay_strip(scene(), lay, maps, toks[:3], tmp_path / "bad.png")


def test_bar_chart(tmp_path):
    check_png(
        plots.bar_chart(["loc heads", "random", "none"], [0.62, 0.21, np.nan], [0.03, 0.05, None], tmp_path / "bars.png", title="ablation", ylabel="acc@0.5", figsize=(5, 4), dpi=50),
        (250, 200),
    )
    check_png(plots.bar_chart([f"a long label {i}" for i in range(10)], np.arange(10.0), None, tmp_path / "bars2.png", title="t", ylabel="y"))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src"):
                self.links.append(v)


def test_write_index_html(tmp_path):
    run = tmp_path / "run"
    lay = pad_layout(200, 120, 24)
    a = plots.overlay_heads(scene(), lay, head_maps(lay), run / "fig" / "overlay one.png")
    b = plots.bar_chart(["x", "y"], [1, 2], None, run / "bars.png", title="t", ylabel="v")
    (run / "results.json").write_text("{}")
    out = write_index_html(
        run,
        "Run <1>",
        {"Overlays": ["fig/overlay one.png", "missing.png"], "Ablation": [b, "results.json"]},
        {"acc@0.5": 0.61234567, "n": 240, "nested": {"miou": 0.5}},
    )
    assert out == run / "index.html"
    text = out.read_text()
    assert "Run &lt;1&gt;" in text and "0.6123" in text and "nested.miou" in text and ">240<" in text
    p = _Links()
    p.feed(text)
    assert p.links, "no links"
    from urllib.parse import unquote

    for link in p.links:
        assert not link.startswith("/") and (run / unquote(link)).exists(), link
    assert any(unquote(l) == "fig/overlay one.png" for l in p.links)
    assert any(unquote(l) == "bars.png" for l in p.links)
    assert "missing.png (missing)" in text
    assert a.exists()
    no_temp_files(run)


def test_every_colour_bar_is_labelled_and_the_combined_one_runs_0_to_1(tmp_path, monkeypatch):
    from lab.figures import charts, overlays
    from matplotlib.figure import Figure

    bars, seen = [], []
    real_colorbar = Figure.colorbar

    def spy(self, *a, **k):
        cb = real_colorbar(self, *a, **k)
        bars.append(cb)
        return cb

    def saving(real_save):
        def save(fig, *a, **k):  # what each colour bar says when the figure is written
            seen.extend((cb.ax.get_ylabel(), cb.norm.vmin, cb.norm.vmax) for cb in bars)
            bars.clear()
            return real_save(fig, *a, **k)
        return save

    monkeypatch.setattr(Figure, "colorbar", spy)
    monkeypatch.setattr(overlays, "_save", saving(overlays._save))
    monkeypatch.setattr(charts, "_save", saving(charts._save))
    lay = pad_layout(200, 120, 24)
    maps = head_maps(lay, n=3)  # three heads: their smoothed sum peaks near 3 (that was the colour bar's top)
    plots.overlay_heads(scene(), lay, maps, tmp_path / "o.png", grounding=grounded(maps, lay, sigma=1.0))
    # each head's own bar (0 .. its max), then the combined one; the labels say grid cells / smoothed
    style = plots.OverlayStyle()
    heads = [(style.head_label, 0.0, pytest.approx(m.max())) for m in maps.values()]
    assert seen == [*heads, (style.combined_label, 0.0, 1.0)]
    assert "grid cell" in style.head_label and "smoothed" in style.combined_label
    seen.clear()
    plots.layer_head_heatmap(np.random.default_rng(0).random((4, 5)), tmp_path / "h.png")  # no label given
    plots.layer_head_heatmap(np.ones((4, 5)), tmp_path / "h2.png", cbar_label="S_img")
    assert [s[0] for s in seen] == ["value", "S_img"]
