"""InternVL, Qwen3-VL, Idefics3 and SmolVLM on tiny checkpoints with transformers' own tester configs
(llava/tiny/families.py): capture == eager attention (padding, batching, generation), every
image token placed once, maps planted on a region land on it in original pixels, the processors' tile
grids and the models' pixel-shuffle order are what the layouts assume, refusals are one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from lab.capture.station import Strategy, collect
from llava.tiny.families import TINY_BUILDERS
from llava.tiny.families import save_tiny_idefics3, save_tiny_qwen3_vl
from llava.model import load_vlm

TOL = 1e-5
FAMILY_NAMES = ["internvl", "qwen3_vl", "qwen3_vl_merge2", "idefics3", "idefics3_gap", "smolvlm"]
TILED = ("internvl", "idefics3", "idefics3_gap", "smolvlm")


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def _build(name, folder):
    if name == "qwen3_vl_merge2":  # the hub models' 2x2 merge (the tester uses 1)
        return save_tiny_qwen3_vl(folder, seed=3, spatial_merge_size=2, max_pixels=16 * 16 * 12)
    if name == "idefics3_gap":  # 18 px tiles of 4 px patches: 2 px of each tile reach no token (SmolVLM's 6 of 384)
        return save_tiny_idefics3(folder, seed=3, tile_px=18)
    return TINY_BUILDERS[name](folder, seed=3)


def _smolvlm_importable() -> bool:
    """4.57 imports SmolVLM's video processor (torchvision) with its processor; 5.x does not."""
    try:
        from transformers import SmolVLMProcessor  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family(request, tmp_path_factory):
    name = request.param
    if name == "smolvlm" and not _smolvlm_importable():
        pytest.skip("SmolVLMProcessor needs torchvision on this transformers version "
                    "(test_smolvlm_without_torchvision_is_refused_in_one_line)")
    folder = _build(name, tmp_path_factory.mktemp(f"tiny_{name}"))
    vlm = load_vlm(str(folder), device="cpu", dtype="float32")
    eager = load_vlm(str(folder), device="cpu", dtype="float32", attn_implementation="eager")
    return name, folder, vlm, eager


def _noise(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _samples():
    # wide (several tiles), tall, square (one InternVL tile): prompts of different lengths -> left padding
    images = [_noise(150, 60, 0), _noise(40, 100, 2), _noise(64, 64, 1)]
    return list(zip(images, ["what color is the circle ?", "what", "where is the red object on the left ?"]))


def _rows(out_att, b, rows, cols):
    return torch.stack([a[b][:, rows][:, :, cols] for a in out_att], dim=1).permute(2, 1, 0, 3)  # (Q, L, H, V)


def test_image_tokens_are_the_features_each_in_one_cell(family):
    name, _, vlm, _ = family
    batch = vlm.prepare(_samples())
    for b, lay in enumerate(batch.layouts):
        own = batch.input_ids[b]
        assert torch.isin(own[list(lay.token_positions)], torch.tensor(vlm.image_token_ids)).all()
        assert len(vlm.image_token_ids) == 1  # <img>, </img>, <fake_token_around_image>, row/col tags are not in V
        seen = np.zeros(lay.num_tokens, dtype=int)
        for g in lay.grids:
            np.add.at(seen, np.asarray(g.token_index), 1)
        assert (seen == 1).all() and not lay.separator_index, f"{name} sample {b}"
    if name in TILED:
        wide, tall, square = batch.layouts
        assert [g.name for g in wide.grids] == ["tiles", "thumbnail" if name == "internvl" else "global"]
        assert wide.extra["tile_gap"] == (pytest.approx(2 / 18) if name == "idefics3_gap" else 0)
        assert wide.extra["tiles_hw"][1] > wide.extra["tiles_hw"][0] and tall.extra["tiles_hw"][0] > tall.extra["tiles_hw"][1]
        if name == "internvl":
            assert [g.name for g in square.grids] == ["image"]  # one tile, no thumbnail


def test_capture_matches_eager_last_input(family):
    name, _, vlm, eager = family
    recs = collect(vlm, _samples(), Strategy())
    batch = vlm.prepare(_samples())
    assert len(set(batch.pad_offsets)) > 1  # really padded
    out = eager.forward(batch, output_attentions=True)
    last = batch.attention_mask.shape[1] - 1
    for b, rec in enumerate(recs):
        ref = _rows(out.attentions, b, [last], batch.image_cols[b])
        assert rec.image_attention.shape == (1, vlm.num_layers, vlm.num_heads, batch.layouts[b].num_tokens)
        assert np.abs(rec.image_attention - ref.numpy()).max() <= TOL, name


def test_capture_matches_eager_generated(family):
    name, _, vlm, eager = family
    recs = collect(vlm, _samples(), Strategy(query_positions="generated"), max_new_tokens=3)
    batch = vlm.prepare(_samples())
    ref = eager.model.generate(**batch.inputs, max_new_tokens=3, do_sample=False, output_attentions=True,
                               return_dict_in_generate=True)
    s = batch.inputs["input_ids"].shape[1]
    steps = 0
    for b, rec in enumerate(recs):
        gen = rec.generated_ids if rec.generated_ids is not None else np.zeros(0)
        assert gen.tolist() == ref.sequences[b, s:s + len(gen)].tolist()
        for t in range(rec.image_attention.shape[0]):
            exp = torch.stack([a[b, :, -1, batch.image_cols[b]] for a in ref.attentions[t]])  # (L, H, V)
            assert np.abs(rec.image_attention[t] - exp.numpy()).max() <= TOL, f"{name} sample {b} step {t}"
            steps += 1
    assert steps >= 3


def test_all_input_rows_match_eager(family):
    """Every prompt row: the rows after the first layers see deepstack-updated image states (Qwen3-VL)."""
    name, _, vlm, eager = family
    batch = vlm.prepare(_samples()[:2])
    recs = collect(vlm, batch.samples, Strategy(query_positions="all_input"))
    out = eager.forward(batch, output_attentions=True)
    for b, rec in enumerate(recs):
        rows = list(range(batch.pad_offsets[b], batch.attention_mask.shape[1]))
        ref = _rows(out.attentions, b, rows, batch.image_cols[b])
        assert np.abs(rec.image_attention - ref.numpy()).max() <= TOL, name


def test_plain_prompt_keeps_the_image_structure(family):
    name, folder, _, eager = family
    vlm = load_vlm(str(folder), device="cpu", dtype="float32", prompt_template="plain")
    recs = collect(vlm, _samples()[:2], Strategy())
    batch = vlm.prepare(_samples()[:2])
    out = eager.forward(batch, output_attentions=True)
    for b, rec in enumerate(recs):
        assert rec.image_attention.shape[-1] == batch.layouts[b].num_tokens
        ref = _rows(out.attentions, b, [batch.attention_mask.shape[1] - 1], batch.image_cols[b])
        assert np.abs(rec.image_attention - ref.numpy()).max() <= TOL, name


def test_deepstack_is_active_in_the_tester_config(family):
    """The deepstack path runs (so the exactness above covers it): Qwen3-VL feeds vision-layer features
    into the first text layers; dropping them changes the text model's output."""
    name, _, vlm, _ = family
    if not name.startswith("qwen3_vl"):
        pytest.skip("Qwen3-VL only")
    lm = vlm.model.model.language_model
    assert list(vlm.model.config.vision_config.deepstack_visual_indexes) == [0, 1]
    batch = vlm.prepare(_samples()[:1])
    with torch.no_grad():
        full = vlm.model(**batch.inputs).logits
        orig = lm._deepstack_process
        lm._deepstack_process = lambda hidden_states, *a, **k: hidden_states
        try:
            plain = vlm.model(**batch.inputs).logits
        finally:
            lm._deepstack_process = orig
    assert (full - plain).abs().max() > 1e-4


# ---- geometry ---------------------------------------------------------------------------

def _square_image(size, square):
    img = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(img).rectangle([square[0], square[1], square[2] - 1, square[3] - 1], fill=(255, 255, 255))
    return img


CASES = [((300, 130), (180, 40, 240, 100)), ((110, 260), (20, 150, 80, 210))]


@pytest.mark.parametrize("size,square", CASES)
def test_map_planted_on_the_square_lands_on_it(family, size, square):
    """1 on the cells whose centre lies in the square, per grid (tiles mosaic and global image): drawn on the
    original image, the map's box is the square's within one cell."""
    _, _, vlm, _ = family
    batch = vlm.prepare([(_square_image(size, square), "where is the white square ?")])
    lay = batch.layouts[0]
    for g in lay.grids:
        m = np.zeros((g.rows, g.cols))
        for r in range(g.rows):
            for c in range(g.cols):
                x, y = lay.cell_center(r, c, g.name)
                m[r, c] = square[0] <= x < square[2] and square[1] <= y < square[3]
        assert m.sum() > 0, g.name
        ys, xs = np.nonzero(lay.to_image(m, grid=g.name, order=0) > 0.5)
        cw, ch = g.cell_size
        for got, want, tol in zip((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), square, (cw, ch, cw, ch)):
            assert abs(got - want) <= tol + 1, (g.name, got, want, tol)


def _tile_cells(tile: np.ndarray, side: int, covered: float) -> np.ndarray:
    """(T, T) pixels of one tile -> (side, side) mean per token's pixel block (the covered part only)."""
    n = int(round(tile.shape[0] * covered))
    t = n // side
    return tile[:n, :n].reshape(side, t, side, t).mean(axis=(1, 3))


def _grid_pixels(vlm, batch, lay, grid):
    """Per-cell mean brightness of the processed pixels that feed each cell of `grid`."""
    pv = batch.inputs["pixel_values"]
    g = lay.grid(grid)
    if vlm.model_type.startswith("qwen3_vl"):
        t, h, w = batch.inputs["image_grid_thw"][0].tolist()
        vc = vlm.model.config.vision_config
        ps, tp, m = int(vc.patch_size), int(vc.temporal_patch_size), int(vc.spatial_merge_size)
        x = pv.reshape(h // m, w // m, m, m, 3, tp, ps, ps).float().numpy()  # processor's patch order
        return x.mean(axis=(2, 3, 4, 5, 6, 7))
    tiles = (pv[0] if vlm.model_type != "internvl" else pv).mean(1).numpy()  # (n_images, T, T)
    rows, cols = lay.extra["tiles_hw"]
    side = g.cols // cols if grid == "tiles" else g.cols
    cov = 1.0 - lay.extra["tile_gap"]
    if grid == "tiles":  # assemble the mosaic of token cells tile by tile
        cells = [[_tile_cells(tiles[r * cols + c], side, cov) for c in range(cols)] for r in range(rows)]
        return np.block(cells)
    return _tile_cells(tiles[rows * cols if grid != "image" else 0], side, cov)


@pytest.mark.parametrize("size,square", CASES)
def test_bright_square_in_real_pixels_maps_back(family, size, square):
    """The cells whose processed pixels are bright are, through the layout, the square in original pixels."""
    _, _, vlm, _ = family
    batch = vlm.prepare([(_square_image(size, square), "where is the white square ?")])
    lay = batch.layouts[0]
    for g in lay.grids:
        cells = _grid_pixels(vlm, batch, lay, g.name)
        assert cells.shape == (g.rows, g.cols)
        bright = np.argwhere(cells > cells.min() + 0.6 * (cells.max() - cells.min()))
        boxes = np.array([lay.cell_box(r, c, g.name) for r, c in bright])
        union = boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()
        cw, ch = g.cell_size
        for got, want, tol in zip(union, square, (cw, ch, cw, ch)):
            assert abs(got - want) <= tol + 1e-6, (g.name, union, square)
        rc = lay.pixel_to_cell((square[0] + square[2]) / 2, (square[1] + square[3]) / 2, g.name)
        assert rc is not None and tuple(rc) in set(map(tuple, bright)), g.name


def test_pixel_shuffle_order_is_row_major_blocks(family):
    """The model's own pixel shuffle: output token (i, j) of a tile holds the features of patch rows
    s*i..s*i+s-1 and columns s*j..s*j+s-1 (the layouts' assumption)."""
    name, _, vlm, _ = family
    if name not in TILED:
        pytest.skip("tiling families only")
    inner = vlm.model.model
    if name == "internvl":
        n, s = 16, 2
        feats = torch.arange(n * n, dtype=torch.float32).reshape(1, n, n, 1)  # feature = patch index r*n + c
        out = inner.pixel_shuffle(feats, scale_factor=0.5).reshape(1, -1, s * s)  # (1, tokens, s*s)
    else:
        n, s = 8, 2
        feats = torch.arange(n * n, dtype=torch.float32).reshape(1, n * n, 1)
        out = inner.connector.pixel_shuffle(feats, s)  # (1, tokens, s*s)
    side = n // s
    for t in range(side * side):
        i, j = divmod(t, side)
        want = {(s * i + a) * n + s * j + c for a in range(s) for c in range(s)}
        assert set(out[0, t].long().tolist()) == want, (name, t)


@pytest.mark.parametrize("processor", ["idefics3", "smolvlm"])
@pytest.mark.parametrize("longest,tile", [(64, 16), (70, 16), (1456, 364)])
@settings(max_examples=25, deadline=None)
@given(w=st.integers(1, 500), h=st.integers(1, 500))
def test_idefics3_tile_grid_is_the_processors(processor, longest, tile, w, h):
    """`idefics3_tile_grid` == the image processor's own rows/cols (return_row_col_info), any image size
    (longest edge a multiple of the tile as in the hub configs, or not)."""
    from llava.compat import pil_image_processor
    from llava.tile_layouts import idefics3_tile_grid

    prefix = {"idefics3": "Idefics3", "smolvlm": "SmolVLM"}[processor]
    ip = pil_image_processor(f"{prefix}ImageProcessor")(size={"longest_edge": longest},
                                                         max_image_size={"longest_edge": tile})
    enc = ip(images=[[Image.new("RGB", (w, h))]], return_row_col_info=True, input_data_format="channels_last")
    assert idefics3_tile_grid(ip, h, w) == (enc["rows"][0][0], enc["cols"][0][0]), (longest, tile, w, h)


@pytest.mark.parametrize("size", [(40, 3), (40, 1), (3, 40), (90, 3)])
def test_images_one_or_three_pixels_tall_keep_their_orientation(family, size):
    """4.x numpy processors take (3, W, 3) arrays as channels-first unless told (compat.CHANNELS_LAST): the
    tile grid / patch grid must follow the image's own orientation."""
    name, _, vlm, _ = family
    batch = vlm.prepare([(_noise(*size, 5), "what")])
    lay = batch.layouts[0]
    if name.startswith("qwen3_vl"):
        _, h, w = batch.inputs["image_grid_thw"][0].tolist()
        assert (w >= h) == (size[0] >= size[1]), (size, h, w)
    else:
        rows, cols = lay.extra["tiles_hw"]
        assert (cols >= rows) == (size[0] >= size[1]) and rows * cols > 1, (size, rows, cols)


def test_idefics3_without_splitting_is_one_image():
    from llava.compat import pil_image_processor
    from llava.tile_layouts import idefics3_tile_grid

    ip = pil_image_processor("Idefics3ImageProcessor")(size={"longest_edge": 64}, max_image_size={"longest_edge": 16},
                                                        do_image_splitting=False)
    enc = ip(images=[[Image.new("RGB", (150, 60))]], return_row_col_info=True, return_tensors="pt")
    assert idefics3_tile_grid(ip, 60, 150) == (enc["rows"][0][0], enc["cols"][0][0]) == (0, 0)
    assert tuple(enc["pixel_values"].shape[-2:]) == (16, 16)  # the whole image squashed to one tile


@settings(max_examples=40, deadline=None)
@given(w=st.integers(1, 2000), h=st.integers(1, 2000), max_patches=st.integers(1, 12))
def test_internvl_tile_grid_is_the_processors(w, h, max_patches):
    """The tile grid the InternVL layout computes gives the number of tiles the processor cut."""
    from llava.compat import optimal_tiled_canvas, pil_image_processor

    ip = pil_image_processor("GotOcr2ImageProcessor")(size={"height": 16, "width": 16}, crop_to_patches=True,
                                                       min_patches=1, max_patches=max_patches)
    cols, rows = optimal_tiled_canvas((h, w), (16, 16), 1, max_patches)
    n = ip(images=[Image.new("RGB", (w, h))], crop_to_patches=True, input_data_format="channels_last")["num_patches"][0]
    assert int(n) == rows * cols + (rows * cols > 1), (w, h, rows, cols)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 5), side=st.integers(1, 6), w=st.integers(1, 3000),
       h=st.integers(1, 3000), gap=st.sampled_from([0, 1, 2, 6]))
def test_tiled_layout_places_every_token_in_its_tile(rows, cols, side, w, h, gap):
    """Property: each token is in one cell; a mosaic cell lies inside its tile's part of the image; the
    mosaic agrees with the whole-image grid on where a tile's tokens are (within one cell)."""
    from llava.tile_layouts import tiled_layout

    tile_px = 48
    cov = (tile_px - gap) / tile_px
    n = rows * cols + (rows * cols > 1)
    lay = tiled_layout((w, h), range(n * side * side), rows, cols, side, "global", "idefics3", covered=cov)
    seen = np.zeros(lay.num_tokens, dtype=int)
    for g in lay.grids:
        np.add.at(seen, np.asarray(g.token_index), 1)
    assert (seen == 1).all()
    g = lay.grid()
    per = side * side
    for cell, v in enumerate(g.token_index):
        r, c = divmod(cell, g.cols)
        tr, tc = divmod(v // per, cols) if rows * cols > 1 else (0, 0)
        x, y = lay.cell_center(r, c)
        # inside the tile's rectangle in original pixels (the processor stretches the image onto rows x cols
        # tiles), up to the documented bound: the uncovered strip of one tile when tiles are no whole patches
        tx, ty = (1 - cov) * w / cols + 1e-6, (1 - cov) * h / rows + 1e-6
        assert tc * w / cols - tx <= x <= (tc + 1) * w / cols + tx, (cell, x)
        assert tr * h / rows - ty <= y <= (tr + 1) * h / rows + ty, (cell, y)


def test_token_count_mismatch_is_one_line():
    from llava.tile_layouts import tiled_layout
    from utils.errors import UserError

    with pytest.raises(UserError, match=r"^internvl: the prompt has 7 image tokens but 2x3 tiles \+ 1 thumbnail"):
        tiled_layout((300, 100), range(7), 2, 3, 16, "thumbnail", "internvl")


def test_vision_tower_view_is_refused_in_one_line(family):
    name, _, vlm, _ = family
    why = vlm.vision_support()
    assert why is not None and "\n" not in why and vlm.model_type in why
    assert {"internvl": "pixel", "qwen3_vl": "merge", "idefics3": "pixel", "smolvlm": "pixel"}[vlm.model_type] in why


def test_smolvlm_without_torchvision_is_refused_in_one_line(tmp_path):
    """Where SmolVLM's processor cannot be imported (4.57 without torchvision), loading names the package."""
    import json

    from llava.families import family_for
    from utils.errors import UserError

    if _smolvlm_importable():
        pytest.skip("SmolVLMProcessor imports here")
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "SmolVLMProcessor"}))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "SmolVLMImageProcessor"}))
    with pytest.raises(UserError, match="torchvision") as e:
        family_for("smolvlm").load_processor(str(tmp_path))
    assert "\n" not in str(e.value)


# ---- stages and views -------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import json

    d = tmp_path_factory.mktemp("famdata_new")
    (d / "imgs").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(4):
        w, h = (150, 64) if i % 2 else (64, 120)
        img = Image.new("RGB", (w, h), (235, 235, 235))
        x, y = int(rng.integers(0, w - 24)), int(rng.integers(0, h - 24))
        img.paste((200, 30, 30), (x, y, x + 24, y + 24))
        img.save(d / "imgs" / f"s{i}.png")
        rows.append({"id": f"s{i}", "prompt": "what color is the square ?", "image_path": f"imgs/s{i}.png",
                     "bbox": [x, y, 24, 24], "answer": "red"})
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_stages_and_views(family, dataset, tmp_path):
    """batch -> evaluate -> visualize (default grid and the whole-image grid) -> mode=tokens, unchanged."""
    import json
    from pathlib import Path

    from helpers import make_cfg

    from lab.records.record import AttentionRecord
    from lab.stages import StageContext, run_stage
    from lab.sessions.views import run_view
    from llava.model import load_from_config
    from utils.settings.declarations import register_configs

    register_configs()
    name, folder, _, _ = family
    if name in ("qwen3_vl_merge2", "idefics3_gap"):
        pytest.skip("same code path as qwen3_vl / idefics3")
    common = [f"data_file={dataset / 'data.jsonl'}", f"output_dir={tmp_path}", "batch_size=2", "max_new_tokens=2",
              "selection.exclude_layers=[]", "top_k=2", f"model.name_or_path={folder}", "model.builder=null",
              "model.name=t", "model.device=cpu"]
    c = make_cfg(*common, "stage=batch")
    ctx = StageContext(loader=lambda: load_from_config(c.model), output_dir=tmp_path)
    res = run_stage(c, ctx)
    assert res["collect"]["ok"] == 4 and res["collect"]["failed"] == 0, res
    page = Path(res["index"]).read_text()  # the explorer: the default grid's name and shape are in its data
    grid = AttentionRecord.load(tmp_path / "attention" / "s0.safetensors").layout.grid()  # the first record
    assert f"{grid.name} {grid.rows}x{grid.cols}" in page
    ev = run_stage(make_cfg(*common, "stage=evaluate"), ctx)
    assert json.loads(Path(ev["metrics_file"]).read_text())["selected_heads"]["n"] == 4
    att = tmp_path / "attention" / "s1.safetensors"
    rec = AttentionRecord.load(att)
    for grid in [None, *(g.name for g in rec.layout.grids[1:])]:
        extra = [f"selection.grid={grid}"] if grid else []
        vis = run_stage(make_cfg(*common, "stage=visualize", f"attention_file={att}",
                                 f"heads_file={tmp_path / 'heads.json'}", *extra), ctx)
        assert Path(vis["figure"]).exists(), grid
    (gen,) = collect(family[2], [(Image.open(dataset / "imgs" / "s1.png"), "what color is the square ?", "g1")],
                     Strategy(query_positions="generated"), max_new_tokens=3)
    gen_file = tmp_path / "g1.safetensors"
    gen.save(gen_file)
    out = tmp_path / "tokens"
    cfg = make_cfg("mode=tokens", f"attention_file={gen_file}", f"output_dir={out}", config_name="visualization_config")
    run_view(cfg, StageContext(loader=lambda: pytest.fail("a view loaded the model"), output_dir=out))
    assert (out / "g1_tokens.safetensors").exists()


def test_tiles_that_are_no_whole_number_of_patches():
    """SmolVLM-Instruct: 384 px tiles, 27 patches of 14 px = 378 px: the whole-image grid stops at 378/384 of
    the image, the mosaic's first and last tile edges are exact."""
    from llava.tile_layouts import tiled_layout

    cov = 27 * 14 / 384
    lay = tiled_layout((1000, 500), range((2 * 4 + 1) * 81), 2, 4, 9, "global", "idefics3", covered=cov)
    assert lay.grid("global").box == pytest.approx((0, 0, 1000 * cov, 500 * cov))
    x0, y0, x1, y1 = lay.grid("tiles").box
    assert (x0, y0) == (0, 0) and x1 == pytest.approx(1000 * (3 + cov) / 4) and y1 == pytest.approx(500 * (1 + cov) / 2)
    assert lay.extra["tile_gap"] == pytest.approx(6 / 384, abs=1e-6)


# ---- the same tiny models and processors on every version -------------------------------

def test_tiny_models_are_the_same_on_every_version(family):
    """State-dict hash of each tiny model (seed 3): equal on 4.57.6 and 5.24 (tests/test_compat.py's hash)."""
    from test_compat import fingerprint

    name, folder, _, eager = family
    assert fingerprint(eager.model) == NEW_TINY_FINGERPRINTS[name], name


NEW_TINY_FINGERPRINTS = {  # measured on 5.24.0 and 4.57.6 alike
    "internvl": "52920e9ae8fa", "qwen3_vl": "3fccfd850578", "qwen3_vl_merge2": "5818034aa323",
    "idefics3": "0a36c105269b", "idefics3_gap": "0a36c105269b", "smolvlm": "0a36c105269b",
}


@pytest.mark.parametrize("name", ["internvl", "qwen3_vl", "idefics3", "smolvlm"])
def test_assembled_processor_equals_auto_processor(name, tmp_path):
    """The torchvision-free assembly gives AutoProcessor's prompts and inputs where AutoProcessor builds."""
    from transformers import AutoProcessor

    from llava import compat
    from llava.families import FAMILIES

    if name == "smolvlm" and not _smolvlm_importable():
        pytest.skip("SmolVLMProcessor needs torchvision here")
    folder = TINY_BUILDERS[name](tmp_path, seed=3)
    try:
        auto = AutoProcessor.from_pretrained(str(folder))
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        pytest.skip(f"AutoProcessor cannot build the {name} processor here ({type(e).__name__}); nothing to compare")
    parts = compat._assemble_processor(str(folder), FAMILIES[name].processor_class)
    assert type(parts).__name__ == type(auto).__name__
    img = _noise(150, 60, 0)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color ?"}]}]
    text = compat.chat_without_video(auto).apply_chat_template(messages, add_generation_prompt=True)
    assert compat.chat_without_video(parts).apply_chat_template(messages, add_generation_prompt=True) == text
    images = [[img]] if FAMILIES[name].nested_images else [img]
    a, b = auto(images=images, text=[text], return_tensors="pt"), parts(images=images, text=[text], return_tensors="pt")
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


NEW_MODEL_GROUPS = {"internvl3_8b": "OpenGVLab/InternVL3-8B-hf", "qwen3_vl_8b": "Qwen/Qwen3-VL-8B-Instruct",
                    "idefics3_8b": "HuggingFaceM4/Idefics3-8B-Llama3", "smolvlm_2b": "HuggingFaceTB/SmolVLM-Instruct",
                    "smolvlm2_2b": "HuggingFaceTB/SmolVLM2-2.2B-Instruct"}


@pytest.mark.parametrize("group", sorted(NEW_MODEL_GROUPS))
def test_model_groups_compose_and_pass_the_settings_check(group):
    from helpers import make_cfg

    from utils.settings.reading import check_config

    cfg = make_cfg(f"model={group}")
    check_config(cfg)
    assert cfg.model.name == group and cfg.model.name_or_path == NEW_MODEL_GROUPS[group]
    check_config(make_cfg(f"model={group}", "model.image_aspect=tiles"))
