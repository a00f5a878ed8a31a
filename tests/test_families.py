"""Families beyond LLaVA-1.5 on tiny random checkpoints: capture == eager, layouts map back to pixels,
and the batch / evaluate / visualize stages run unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lab.capture.station import Strategy, collect
from llava.tiny.families import TINY_BUILDERS
from llava.families.layouts import anyres_geometry
from llava.model import load_vlm

TOL = 1e-5
FAMILY_NAMES = ["llava_next", "qwen2_5_vl", "llava_onevision", "gemma3", "qwen2_vl"]


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family(request, tmp_path_factory):
    name = request.param
    folder = TINY_BUILDERS[name](tmp_path_factory.mktemp(f"tiny_{name}"), seed=3)
    vlm = load_vlm(str(folder), device="cpu", dtype="float32")
    eager = load_vlm(str(folder), device="cpu", dtype="float32", attn_implementation="eager")
    return name, folder, vlm, eager


def _noise(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _images():
    # non-square both ways (several anyres crops each) + a square one; deterministic
    return [_noise(150, 60, 0), Image.linear_gradient("L").convert("RGB").resize((40, 100)), _noise(64, 64, 1)]


QUERIES = ["what color is the circle ?", "what", "where is the red object on the left of the picture ?"]


def _samples():
    return list(zip(_images(), QUERIES))


def test_layout_tokens_cover_each_cell_once(family):
    name, _, vlm, _ = family
    batch = vlm.prepare(_samples())
    for b, lay in enumerate(batch.layouts):
        own = batch.input_ids[b]
        assert torch.isin(own[list(lay.token_positions)], torch.tensor(vlm.image_token_ids)).all()
        seen = np.zeros(lay.num_tokens, dtype=int)
        for g in lay.grids:
            idx = np.asarray(g.token_index)
            assert (idx >= 0).all()
            np.add.at(seen, idx, 1)
        seen[list(lay.separator_index)] += 1
        assert (seen == 1).all(), f"{name} sample {b}: every image token in exactly one cell or a separator"
        if name in ("llava_next", "llava_onevision"):
            assert [g.name for g in lay.grids] == ["base", "highres"] and lay.grid().name == "highres"
            assert len(lay.separator_index) == lay.grid("highres").rows
            newline_pos = [lay.token_positions[i] for i in lay.separator_index]
            assert all(own[p] == vlm.image_token_id for p in newline_pos)  # newlines are <image> in HF
    if name in ("llava_next", "llava_onevision"):
        assert max(np.prod(lay.extra["crops_hw"]) for lay in batch.layouts) > 1


def _rows(out_att, b, rows, cols):
    return torch.stack([a[b][:, rows][:, :, cols] for a in out_att], dim=1).permute(2, 1, 0, 3)  # (Q, L, H, V)


def test_capture_matches_eager_last_input(family):
    name, _, vlm, eager = family
    recs = collect(vlm, _samples(), Strategy())
    batch = vlm.prepare(_samples())
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
    for b, rec in enumerate(recs):
        gen = rec.generated_ids if rec.generated_ids is not None else np.zeros(0)
        assert gen.tolist() == ref.sequences[b, s:s + len(gen)].tolist()
        for t in range(rec.image_attention.shape[0]):
            exp = torch.stack([a[b, :, -1, batch.image_cols[b]] for a in ref.attentions[t]])  # (L, H, V)
            assert np.abs(rec.image_attention[t] - exp.numpy()).max() <= TOL, f"{name} sample {b} step {t}"


def test_all_input_rows_match_eager(family):
    """Every prompt row: checks the bidirectional image block (Gemma 3) and M-RoPE (Qwen) masks/positions."""
    name, _, vlm, eager = family
    batch = vlm.prepare(_samples()[:2])
    recs = collect(vlm, batch.samples, Strategy(query_positions="all_input"))
    out = eager.forward(batch, output_attentions=True)
    for b, rec in enumerate(recs):
        rows = list(range(batch.pad_offsets[b], batch.attention_mask.shape[1]))
        ref = _rows(out.attentions, b, rows, batch.image_cols[b])
        assert np.abs(rec.image_attention - ref.numpy()).max() <= TOL, name
    if name == "gemma3":  # an image token attends to a *later* image token: bidirectional block
        rec, lay = recs[0], batch.layouts[0]
        first = lay.token_positions[0]
        assert rec.image_attention[first, :, :, 1:].sum() > 0


# ---- geometry ---------------------------------------------------------------------------

def _square_image(size, square):
    img = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(img).rectangle([square[0], square[1], square[2] - 1, square[3] - 1], fill=(255, 255, 255))
    return img


CASES = [((300, 130), (180, 40, 240, 100)), ((110, 260), (20, 150, 80, 210))]


@pytest.mark.parametrize("size,square", CASES)
def test_synthetic_map_on_square_cells_lands_on_the_square(family, size, square):
    """Put 1 on the cells whose centre lies in the square: the map, drawn on the image, covers it."""
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
        img = lay.to_image(m, grid=g.name, order=0)
        ys, xs = np.nonzero(img > 0.5)
        cw, ch = g.cell_size
        for got, want, tol in zip((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), square, (cw, ch, cw, ch)):
            assert abs(got - want) <= tol + 1, (g.name, got, want, tol)


def _grid_pixels(vlm, batch, lay, grid):
    """Per-cell mean brightness of the real processed pixels that feed each cell of `grid`."""
    pv = batch.inputs["pixel_values"]
    g = lay.grid(grid)
    mt = vlm.model_type
    if mt in ("llava_next", "llava_onevision"):
        side = vlm.grid_side
        crop = int(vlm.model.config.vision_config.image_size)
        p = crop // side
        if grid == "base":
            x = pv[0, 0].mean(0).numpy()
            return x.reshape(side, p, side, p).mean(axis=(1, 3))
        ch, cw = lay.extra["crops_hw"]
        tiles = pv[0, 1:1 + ch * cw].mean(1).numpy()  # (crops, crop, crop)
        canvas = tiles.reshape(ch, cw, crop, crop).transpose(0, 2, 1, 3).reshape(ch * crop, cw * crop)
        full = canvas.reshape(ch * side, p, cw * side, p).mean(axis=(1, 3))
        # unpadding: keep the centred rows/cols the layout says (geometry-free check of the token grid)
        geo = anyres_geometry(lay.image_size, side, crop, vlm.model.config.image_grid_pinpoints)
        if (geo["rows"], geo["cols"]) != (g.rows, g.cols):
            pytest.skip("anyres_max downscaled grid: no pixel-exact cells")
        r0 = (full.shape[0] - g.rows) // 2
        c0 = (full.shape[1] - g.cols) // 2
        return full[r0:r0 + g.rows, c0:c0 + g.cols]
    if mt in ("qwen2_vl", "qwen2_5_vl"):
        t, h, w = batch.inputs["image_grid_thw"][0].tolist()
        ps = int(vlm.model.config.vision_config.patch_size)
        tp = int(vlm.model.config.vision_config.temporal_patch_size)
        m = int(vlm.model.config.vision_config.spatial_merge_size)
        x = pv.reshape(h // m, w // m, m, m, 3, tp, ps, ps).float().numpy()  # processor's patch order
        return x.mean(axis=(2, 3, 4, 5, 6, 7))
    if mt == "gemma3":
        x = pv[0].mean(0).numpy()
        s = x.shape[0] // g.rows
        return x.reshape(g.rows, s, g.cols, s).mean(axis=(1, 3))
    raise AssertionError(mt)


@pytest.mark.parametrize("size,square", CASES)
def test_bright_square_in_real_pixels_maps_back(family, size, square):
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


def test_anyres_geometry_arithmetic():
    # 300x130 on 56-px crops (4x4 features each): canvas 56x168 (1x3 crops, 4x12 features)
    geo = anyres_geometry((300, 130), 4, 56, [[56, 112], [112, 56], [112, 112], [56, 168], [168, 56]])
    assert geo["canvas"] == (56, 168) and geo["crops"] == (1, 3)
    # resize keeps the aspect: 56 x ceil(300 * 56/130) = 130 wide, pasted at x = (168 - 130)//2 = 19;
    # unpad: int(300 * 4/130) = 9 feature columns of image -> pad (12 - 9)//2 = 1 column each side
    assert (geo["rows"], geo["cols"]) == (4, 10)
    x0, y0, x1, y1 = geo["box"]
    assert y0 == pytest.approx(0) and y1 == pytest.approx(130)
    assert x0 == pytest.approx((14 - 19) * 300 / 130) and x1 == pytest.approx((11 * 14 - 19) * 300 / 130)
    assert x0 < 0 < 300 < x1  # the canvas is wider than the resized image: padding left and right


# ---- stages -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("famdata")
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
                     "bbox": [x, y, 24, 24], "answer": "red", "group": "a" if i < 2 else "b"})
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_stages_batch_evaluate_visualize(family, dataset, tmp_path):
    from helpers import make_cfg

    from lab.stages import StageContext, run_stage
    from llava.model import load_from_config
    from utils.settings.declarations import register_configs

    register_configs()
    name, folder, _, _ = family
    common = [f"data_file={dataset / 'data.jsonl'}", f"output_dir={tmp_path}", "batch_size=2", "max_new_tokens=2",
              "selection.exclude_layers=[]", "top_k=2", f"model.name_or_path={folder}", "model.builder=null",
              "model.name=t", "model.device=cpu"]

    def cfg(*extra):
        return make_cfg(*common, *extra)

    c = cfg("stage=batch")
    ctx = StageContext(loader=lambda: load_from_config(c.model), output_dir=tmp_path)
    res = run_stage(c, ctx)
    assert res["collect"]["ok"] == 4 and res["collect"]["failed"] == 0, res
    heads = json.loads((tmp_path / "heads.json").read_text())
    assert len(heads["heads"]) == 2
    ev = run_stage(cfg("stage=evaluate"), ctx)
    metrics = json.loads(Path(ev["metrics_file"]).read_text())
    assert metrics["selected_heads"]["n"] == 4
    att = str(tmp_path / "attention" / "s1.safetensors")
    vis = run_stage(cfg("stage=visualize", f"attention_file={att}", f"heads_file={tmp_path / 'heads.json'}"), ctx)
    assert Path(vis["figure"]).exists()
    if name in ("llava_next", "llava_onevision"):  # the base grid can be chosen instead of the default
        vis = run_stage(cfg("stage=visualize", f"attention_file={att}", f"heads_file={tmp_path / 'heads.json'}",
                            "selection.grid=base"), ctx)
        assert Path(vis["figure"]).exists()


def test_gemma3_sliding_window_shorter_than_the_prompt(tmp_path):
    """Prefill with a sliding window (8) much shorter than the prompt: sliding + bidirectional masks arrive."""
    from llava.tiny.families import save_tiny_gemma3

    folder = save_tiny_gemma3(tmp_path, seed=4, sliding_window=8)
    vlm = load_vlm(str(folder), device="cpu", dtype="float32")
    eager = load_vlm(str(folder), device="cpu", dtype="float32", attn_implementation="eager")
    batch = vlm.prepare(_samples()[:2])
    recs = collect(vlm, batch.samples, Strategy(query_positions="all_input"))
    out = eager.forward(batch, output_attentions=True)
    for b, rec in enumerate(recs):
        rows = list(range(batch.pad_offsets[b], batch.attention_mask.shape[1]))
        assert np.abs(rec.image_attention - _rows(out.attentions, b, rows, batch.image_cols[b]).numpy()).max() <= TOL


def test_plain_prompt_keeps_the_image_markers(family):
    name, folder, _, eager = family
    vlm = load_vlm(str(folder), device="cpu", dtype="float32", prompt_template="plain")
    recs = collect(vlm, _samples()[:2], Strategy())
    batch = vlm.prepare(_samples()[:2])
    out = eager.forward(batch, output_attentions=True)
    for b, rec in enumerate(recs):
        assert rec.image_attention.shape[-1] == batch.layouts[b].num_tokens
        ref = _rows(out.attentions, b, [batch.attention_mask.shape[1] - 1], batch.image_cols[b])
        assert np.abs(rec.image_attention - ref.numpy()).max() <= TOL, name


def test_gemma3_generation_past_the_sliding_window(tmp_path):
    """Decoding with a sliding cache shorter than the sequence: image columns shift into the cache frame."""
    import torch

    from llava.tiny.families import save_tiny_gemma3

    folder = save_tiny_gemma3(tmp_path, seed=5, sliding_window=8)
    vlm = load_vlm(str(folder), device="cpu", dtype="float32")
    eager = load_vlm(str(folder), device="cpu", dtype="float32", attn_implementation="eager")
    batch = vlm.prepare(_samples()[:1])
    (rec,) = collect(vlm, batch.samples, Strategy(query_positions="generated"), max_new_tokens=4)
    with torch.no_grad():
        ref = eager.model.generate(**batch.inputs, max_new_tokens=4, do_sample=False, output_attentions=True,
                                   return_dict_in_generate=True)
    n = len(rec.meta.generated_tokens)
    assert n >= 2
    cols = batch.image_cols[0]
    seq = batch.attention_mask.shape[1]
    for t in range(n):
        for li, att in enumerate(ref.attentions[t]):
            kv = att.shape[-1]
            total = seq + t
            shifted = cols - (total - kv) if (t > 0 and kv < total) else cols
            exp = torch.where(shifted >= 0, att[0, :, -1, shifted.clamp(min=0)], torch.zeros(()))
            assert np.abs(rec.image_attention[t, li] - exp.numpy()).max() <= TOL, (t, li)


THIN = [(w, h) for h in (1, 2, 3, 4) for w in (40,)] + [(w, h) for w in (1, 2, 3, 4) for h in (40,)]


def _halves(w, h):
    """Left (or top, when taller than wide) half red, the other half blue: orientation is visible in pixels."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    if w >= h:
        a[:, : w // 2, 0], a[:, w // 2:, 2] = 255, 255
    else:
        a[: h // 2, :, 0], a[h // 2:, :, 2] = 255, 255
    return Image.fromarray(a)


def _check_halves(pv, w, h, where):
    """pv: (3, H, W) of one image: red where the image is red, blue where it is blue."""
    red_minus_blue = (pv[0] - pv[2]).float()  # (H, W)
    first, last = (red_minus_blue[:, :2], red_minus_blue[:, -2:]) if w >= h else (red_minus_blue[:2], red_minus_blue[-2:])
    assert first.mean() > 0 > last.mean(), f"{where}: image {w}x{h} lost its orientation"


def _thin_pixels(name, vlm, batch):
    """The pixel_values (3, H, W) of each sample's first (base) image, or None for patch-flattening families."""
    pv = batch.inputs.get("pixel_values")
    if name.startswith("qwen"):
        return None
    if pv.dim() == 5:  # (B, crops, 3, H, W): the first crop is the whole image resized
        return [pv[b, 0] for b in range(pv.shape[0])]
    return [pv[b] for b in range(pv.shape[0])]


def test_images_one_to_four_pixels_thin_keep_their_pixels(family, tiny_vlm):
    """1-4 px tall and wide images: every family names the channel axis (compat.CHANNELS_LAST), so the
    processor sees the image's own orientation (4.57 read 3-px-tall images as channels-first and failed
    on 1-px-tall ones in pad_to_square) and the layout matches the image size."""
    from llava import compat

    name, _, vlm, _ = family
    for label, model in ((name, vlm), ("llava", tiny_vlm)):
        assert model._fit_image(_halves(40, 3))[1]["input_data_format"] == compat.CHANNELS_LAST["input_data_format"]
        batch = model.prepare([(_halves(w, h), "what") for w, h in THIN])
        pixels = _thin_pixels(label, model, batch)
        for b, (w, h) in enumerate(THIN):
            lay = batch.layouts[b]
            assert tuple(lay.image_size) == (w, h)
            if pixels is not None:
                _check_halves(pixels[b], w, h, label)
            if label.startswith("qwen"):
                _, gh, gw = batch.inputs["image_grid_thw"][b].tolist()
                assert (gw >= gh) == (w >= h), (label, w, h, gh, gw)


def test_family_registration_is_one_way():
    """Plug-in families import llava.families.base, never the registry (llava/families/__init__.py) that imports them."""
    import ast

    folder = Path(__file__).resolve().parents[1] / "llava" / "families"
    for path in folder.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "llava.families", f"{path.name} imports the registry"
            if isinstance(node, ast.Import):
                assert all(a.name != "llava.families" for a in node.names), f"{path.name} imports the registry"
