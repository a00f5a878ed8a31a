"""Geometry: grid cells map back to the right pixels of the original (non-square) image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from llava.tiny.llava15 import TinyLlavaSpec, save_tiny_llava
from llava.families.layouts import crop_box, pad_box
from llava.model import load_vlm
from utils.contracts.layout import ImageLayout


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


@pytest.fixture(scope="module")
def crop_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("crop14")
    save_tiny_llava(out, TinyLlavaSpec(image_size=112, patch_size=8, seed=5))
    return out


def _square_image(size, square):
    img = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(img).rectangle([square[0], square[1], square[2] - 1, square[3] - 1], fill=(255, 255, 255))
    return img


def _bright_cells(vlm, batch):
    """Cells whose processed patch is mostly the bright square, read off the real pixel_values."""
    pv = batch.inputs["pixel_values"][0].float().numpy().mean(0)  # (S, S) normalised
    g = vlm.grid_side
    p = pv.shape[0] // g
    cells = pv.reshape(g, p, g, p).mean(axis=(1, 3))
    return np.argwhere(cells > cells.min() + 0.75 * (cells.max() - cells.min()))


@pytest.mark.parametrize("aspect", ["crop", "pad"])
@pytest.mark.parametrize("size,square", [((200, 120), (110, 40, 150, 80)), ((90, 160), (20, 70, 60, 110))])
def test_bright_square_maps_back(crop_ckpt, tiny_pad_ckpt, aspect, size, square):
    ckpt = tiny_pad_ckpt if aspect == "pad" else crop_ckpt
    vlm = load_vlm(str(ckpt), device="cpu", dtype="float32")
    assert vlm.image_aspect == aspect
    batch = vlm.prepare([(_square_image(size, square), "where is the white square ?")])
    layout = batch.layouts[0]
    assert layout.image_size == size and layout.num_tokens == vlm.grid_side**2
    cells = _bright_cells(vlm, batch)
    assert len(cells) > 0
    boxes = np.array([layout.cell_box(r, c) for r, c in cells])
    union = boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()
    cw, ch = layout.grid().cell_size
    # the cells that see the square map back to pixels around it: within one cell on every side
    for got, want, tol in zip(union, square, (cw, ch, cw, ch)):
        assert abs(got - want) <= tol + 1e-6, (union, square, tol)
    # the square's centre lies in a bright cell
    rc = layout.pixel_to_cell((square[0] + square[2]) / 2, (square[1] + square[3]) / 2)
    assert rc is not None and any((rc == tuple(c)) for c in map(tuple, cells))


def test_user_can_force_pad_on_a_crop_processor(crop_ckpt):
    vlm = load_vlm(str(crop_ckpt), device="cpu", dtype="float32", image_aspect="pad")
    size, square = (200, 120), (10, 10, 40, 40)  # near the corner: centre crop would cut it away
    batch = vlm.prepare([(_square_image(size, square), "where ?")])
    cells = _bright_cells(vlm, batch)
    boxes = np.array([batch.layouts[0].cell_box(r, c) for r, c in cells])
    cw = batch.layouts[0].grid().cell_size[0]
    assert abs(boxes[:, 0].min() - 10) <= cw and abs(boxes[:, 2].max() - 40) <= cw


def test_crop_and_pad_boxes_arithmetic():
    # 200x120 resized to shortest edge 112 -> 186x112 (int(112*200/120)=186), crop 112: left (186-112)//2 = 37
    x0, y0, x1, y1 = crop_box((200, 120), {"shortest_edge": 112}, {"height": 112, "width": 112})
    assert y0 == 0 and y1 == pytest.approx(120)
    assert x0 == pytest.approx(37 * 200 / 186) and x1 == pytest.approx((37 + 112) * 200 / 186)
    assert pad_box((200, 120)) == (0.0, -40.0, 200.0, 160.0)
    assert pad_box((90, 160)) == (-35.0, 0.0, 125.0, 160.0)


def test_layout_roundtrip_and_to_grid():
    from utils.contracts.layout import square_grid_layout

    lay = square_grid_layout((200, 120), range(10, 26), 4, pad_box((200, 120)), "pad")
    back = ImageLayout.from_dict(lay.to_dict())
    assert back == lay
    vals = np.arange(16.0)
    assert back.to_grid(vals)[1, 2] == 6.0
    img = back.to_image(back.to_grid(vals), order=0)
    assert img.shape == (120, 200)
    # pixel (100, 60) is in cell (row 2, col 2) of the padded square (cells 50 px, offset -40 in y)
    assert back.pixel_to_cell(100, 60) == (2, 2) and img[60, 100] == 10.0
