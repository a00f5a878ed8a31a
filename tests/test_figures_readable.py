"""Figures a reader can read: no text cut at the figure's edge, a colour scale on every map panel
(readable labels), a perceptual colour map whose opacity follows the attention (zero attention:
the image unchanged), the components row explained and without blank axes."""

from __future__ import annotations

from dataclasses import replace

from lab.figures.overlays import STRIP_STYLE

from pathlib import Path

import numpy as np
import pytest
from helpers import make_cfg
from matplotlib import colormaps
from matplotlib.text import Text
from PIL import Image
from test_plots import grounded, head_maps, pad_layout, scene

from lab import figures as plots
from lab.analysis.grounding import above_mean_regions, coverage_mask
from lab.figures import base, charts, overlays
from lab.sessions.views import run_view
from lab.stages import StageContext

LONG = ("what shape is the yellow one in the lower left corner of this picture, and what colour is the shape "
        "beside it, and is there anything else  ->  a yellow cross beside a blue square and nothing else at all")


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plots save, drawn, checked for cut text, kept (name -> figure facts)."""
    seen: dict[str, dict] = {}
    orig = base._save

    def save(fig, out_path, dpi, show):
        drawn = []
        draw = Text.draw

        def record(self, renderer):
            drawn.append(self)
            return draw(self, renderer)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Text, "draw", record)
            fig.canvas.draw()
        seen[Path(out_path).name] = facts(fig, drawn)
        fig.clear = lambda *a, **k: None  # keep the axes for the test to look at
        return orig(fig, out_path, dpi, show)

    for mod in (base, charts, overlays):
        monkeypatch.setattr(mod, "_save", save)
    return seen


def facts(fig, drawn: list[Text]) -> dict:
    """The texts drawn that leave the figure's box, its colour bars and image panels."""
    r = fig.canvas.get_renderer()
    box = fig.bbox
    cut = []
    assert drawn
    for t in drawn:
        if not t.get_visible() or not t.get_text().strip():
            continue
        e = t.get_window_extent(r)
        if e.x0 < box.x0 - 1 or e.x1 > box.x1 + 1 or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1:
            cut.append((t.get_text()[:60], tuple(round(v) for v in e.extents), tuple(box.extents)))
    cbars = [a for a in fig.axes if hasattr(a, "_colorbar")]
    panels = [a for a in fig.axes if a not in cbars and a.images]
    return {"cut": cut, "cbars": cbars, "panels": panels, "axes": list(fig.axes), "fig": fig}


def parents(cbar_ax) -> list:
    return list(np.ravel(cbar_ax._colorbar_info["parents"]))


def test_long_titles_wrap_inside_every_figure(figures, tmp_path):
    lay = pad_layout(200, 120, 24)
    hm = head_maps(lay)
    plots.overlay_heads(scene(), lay, hm, tmp_path / "ov.png", grounding=grounded(hm, lay), gt_box=(50, 66, 60, 36),
                        show_components=True, title=LONG)
    maps = np.stack([hm[k] for k in list(hm) * 2])
    plots.token_overlay_strip(scene(), lay, maps, ["The", " cross", "\n", " is", " a_very_long_token", "."],
                              tmp_path / "strip.png", style=replace(STRIP_STYLE, ncols=3), title=LONG)
    plots.token_attention_curve([f"{i}:tok" for i in range(3)], [0.2, 0.5, 0.3], tmp_path / "curve.png", title=LONG)
    plots.layer_head_heatmap(np.random.default_rng(0).random((4, 4)), tmp_path / "hm.png", title=LONG,
                             marked=[(1, 2)], cbar_label="S_img")
    plots.elbow_curve(np.linspace(1, 0, 16), 0.4, tmp_path / "elbow.png", knee_index=5, title=LONG)
    plots.bar_chart(["selected", "all heads", "random"], [0.5, 0.2, 0.3], [0, 0, 0.05], tmp_path / "bar.png", title=LONG)
    assert set(figures) == {"ov.png", "strip.png", "curve.png", "hm.png", "elbow.png", "bar.png"}
    for name, f in figures.items():
        assert not f["cut"], (name, f["cut"])


def test_tokens_view_figures_fit(figures, toy_tokens_run, tmp_path):
    """mode=tokens on a toy record with vision matrices: _tokens, _tokens_vision, _image_share."""
    rec = sorted((toy_tokens_run / "attention").glob("*.safetensors"))[0]
    cfg = make_cfg("mode=tokens", f"attention_file={rec}", f"output_dir={tmp_path}", "vision.aggregate=vlm_visualizer",
                   "tokens.weighting=vlm_visualizer", config_name="visualization_config")
    res = run_view(cfg, StageContext(loader=lambda: None, output_dir=tmp_path))
    names = {Path(res[k]).name for k in ("figure", "vision_figure", "image_share")}
    assert {n.rsplit("_", 1)[-1] for n in names} >= {"tokens.png", "vision.png", "share.png"}
    assert names <= set(figures)
    for name in names:
        assert not figures[name]["cut"], (name, figures[name]["cut"])
        if not name.endswith("_image_share.png"):
            f = figures[name]
            assert len(f["cbars"]) == 1 and set(parents(f["cbars"][0])) == set(f["panels"])  # one bar for the strip


def test_every_map_panel_has_its_own_readable_colour_bar(figures, tmp_path):
    lay = pad_layout(200, 120, 24)
    hm = head_maps(lay, n=4)
    plots.overlay_heads(scene(), lay, hm, tmp_path / "ov.png", grounding=grounded(hm, lay), gt_box=(50, 66, 60, 36),
                        title="q -> a")
    f = figures["ov.png"]
    maps = [a for a in f["panels"] if not a.get_title().startswith("image")]
    assert [a.get_title().split(" (")[0] for a in maps] == ["L10 H0", "L11 H3", "L12 H6", "L13 H9", "combined"]
    assert len(f["cbars"]) == len(maps)
    for cax in f["cbars"]:
        (parent,) = parents(cax)
        assert parent in maps
        cb = cax._colorbar
        assert cax.yaxis.label.get_fontsize() >= 8 and cax.yaxis.label.get_text()
        assert min(t.get_fontsize() for t in cax.get_yticklabels()) >= 7
        # a head's scale starts at zero attention and ends at that head's max
        if parent.get_title().startswith("L"):
            m = hm[tuple(int(x[1:]) for x in parent.get_title().split())]
            assert cb.norm.vmin == 0.0 and cb.norm.vmax == pytest.approx(m.max())
        else:
            assert (cb.norm.vmin, cb.norm.vmax) == (0.0, 1.0)
    assert {p for c in f["cbars"] for p in parents(c)} == set(maps)


def test_colour_map_is_perceptual_with_opacity_following_attention(figures, tmp_path):
    lay = pad_layout(200, 120, 24)
    hm = head_maps(lay)
    plots.overlay_heads(scene(), lay, hm, tmp_path / "ov.png", grounding=grounded(hm, lay))
    x = np.linspace(0, 1, 11)
    for cax in figures["ov.png"]["cbars"]:
        cm = cax._colorbar.cmap
        assert np.allclose(cm(x)[:, :3], colormaps[base.MAP_CMAP](x)[:, :3], atol=0.01)
        a = cm(x)[:, 3]
        assert a[0] == 0.0 and np.all(np.diff(a) > 0)  # transparent at zero attention, more opaque above
    assert base.MAP_CMAP in ("inferno", "magma", "viridis", "cividis", "plasma")


def test_zero_attention_leaves_the_image_as_it_is(tmp_path):
    """Pixels over zero-attention cells keep the image's colour (a blue object is not 'low attention
    blue'); the attended cells are coloured."""
    from matplotlib.figure import Figure

    W, H = 200, 120
    lay = pad_layout(W, H, 24)
    m = np.zeros((24, 24))
    r0, c0 = lay.pixel_to_cell(30, 66)
    r1, c1 = lay.pixel_to_cell(89, 101)
    m[r0: r1 + 1, c0: c1 + 1] = 1.0
    blue = Image.new("RGB", (W, H), (30, 60, 220))
    img, disp = base._display(blue, lay, 1024)
    fig = Figure(figsize=(W / 100, H / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    base._show_image(ax, img, W, H)
    base._overlay(ax, m, disp, coverage_mask(disp), W, H, grid=None, order=0, cmap=base.MAP_CMAP, alpha=0.8)
    ax.set_axis_off()
    fig.savefig(tmp_path / "raw.png", dpi=100)
    arr = np.asarray(Image.open(tmp_path / "raw.png").convert("RGB")).astype(int)
    x0, y0, x1, y1 = (int(round(v)) for v in lay.cells_box(r0, c0, r1 + 1, c1 + 1))
    outside = np.ones((H, W), bool)
    outside[max(0, y0 - 2): y1 + 2, max(0, x0 - 2): x1 + 2] = False
    assert np.abs(arr[outside] - (30, 60, 220)).max() <= 1
    inside = arr[y0 + 2: y1 - 2, x0 + 2: x1 - 2].reshape(-1, 3)
    top = np.asarray(colormaps[base.MAP_CMAP](1.0)[:3]) * 255
    assert np.abs(inside - (0.8 * top + 0.2 * np.array([30, 60, 220]))).max() <= 3


def test_components_row_is_explained_and_has_no_blank_axes(figures, tmp_path):
    lay = pad_layout(200, 120, 24)
    hm = head_maps(lay)
    plots.overlay_heads(scene(), lay, hm, tmp_path / "ov.png", show_components=True, title="q -> a")
    f = figures["ov.png"]
    non_bar = [a for a in f["axes"] if a not in f["cbars"]]
    for a in non_bar:  # every axes shows an image or the key: none blank
        assert a.images or a.get_legend() is not None, a.get_title()
    keys = [a for a in non_bar if not a.images]
    assert len(keys) == 1
    legend = keys[0].get_legend()
    words = " ".join([legend.get_title().get_text()] + [t.get_text() for t in legend.get_texts()])
    assert "above" in words and "region" in words and "largest" in words
    heads = {a.get_title(): a for a in f["panels"] if a.get_title().startswith("L") and "region" not in a.get_title()}
    comps = {a.get_title().split(":")[0]: a for a in f["panels"] if "region" in a.get_title()}
    assert set(comps) == set(heads) == {"L10 H0", "L11 H3", "L12 H6"}
    for name, a in heads.items():  # each head's regions right under its overlay
        c = comps[name]
        assert c.get_position().y1 < a.get_position().y0
        assert abs((c.get_position().x0 + c.get_position().x1) - (a.get_position().x0 + a.get_position().x1)) < 0.1
    image_panel = next(a for a in f["panels"] if a.get_title().startswith("image"))
    assert keys[0].get_position().y1 < image_panel.get_position().y0  # the key sits under the image


def test_components_titles_count_what_the_legend_colours(figures, tmp_path):
    """A head with 5 above-mean regions: its title says the 3 coloured ones are the largest of 5 (the
    legend lists 3 colours and the grey rest); a head with 1 region says 1. Regions are numbered by size."""
    lay = pad_layout(200, 120, 24)
    five = np.zeros((24, 24))
    for i, side in enumerate((4, 3, 3, 2, 1)):  # 5 separate squares, 16/9/9/4/1 cells
        five[2 + 5 * (i % 2) * 2: 2 + 5 * (i % 2) * 2 + side, 1 + 4 * i: 1 + 4 * i + side] = 1.0
    one = np.zeros((24, 24))
    one[8:12, 8:12] = 1.0
    labels, sizes = above_mean_regions(five, lay)
    assert list(sizes) == [16, 9, 9, 4, 1] and (labels == 1).sum() == 16
    plots.overlay_heads(scene(), lay, {(1, 0): five, (1, 1): one}, tmp_path / "ov.png", show_components=True)
    titles = {a.get_title() for a in figures["ov.png"]["panels"] if "region" in a.get_title()}
    assert titles == {"L1 H0: 3 largest of 5 regions above its mean", "L1 H1: 1 region above its mean"}
    key = next(a for a in figures["ov.png"]["axes"] if a.get_legend() is not None and not a.images)
    assert [t.get_text() for t in key.get_legend().get_texts()][:4] == ["largest region", "2nd largest", "3rd largest",
                                                                       "smaller regions"]


def test_colour_bar_ticks_share_their_decimals(figures, tmp_path):
    lay = pad_layout(200, 120, 24)
    hm = {k: m * 0.013 for k, m in head_maps(lay).items()}  # maxima ~0.013-0.039: ticks 0.0000 ... 0.0390
    plots.overlay_heads(scene(), lay, hm, tmp_path / "ov.png", grounding=grounded(hm, lay))
    for cax in figures["ov.png"]["cbars"]:
        texts = [t.get_text() for t in cax.get_yticklabels()]
        assert len({len(t.split(".")[-1]) if "." in t else 0 for t in texts}) == 1, texts
    assert base.tick_labels([0, 0.5, 1]) == ["0.00", "0.50", "1.00"]
    assert base.tick_labels([0, 0.0137, 0.0274]) == ["0.0000", "0.0137", "0.0274"]
