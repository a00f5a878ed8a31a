"""grounding.refine=sam through transformers' SamModel / SamProcessor (llava/sam.py), with a tiny
random SamModel built from transformers' own SamConfig: never a hub download."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llava.compat import pil_image_processor, processor_from_parts
from llava.sam import Segmenter, load_segmenter, sam_loader
from utils.errors import UserError

SIDE = 64  # SAM's input side (longest edge and padded square); the mask decoder works at SIDE / 2


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def tiny_sam(seed: int = 0) -> Segmenter:
    from transformers import SamConfig, SamModel, SamProcessor

    torch.manual_seed(seed)
    cfg = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                           image_size=SIDE, patch_size=8, window_size=4, global_attn_indexes=[1], num_pos_feats=8,
                           mlp_dim=64),
        prompt_encoder_config=dict(hidden_size=16, image_size=SIDE, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16))
    ip = pil_image_processor("SamImageProcessor")(
        size={"longest_edge": SIDE}, pad_size={"height": SIDE, "width": SIDE},
        mask_size={"longest_edge": SIDE // 4}, mask_pad_size={"height": SIDE // 4, "width": SIDE // 4})
    return Segmenter(SamModel(cfg), processor_from_parts(SamProcessor, image_processor=ip))


@pytest.fixture(scope="module")
def sam():
    return tiny_sam()


def _image(w=90, h=60):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_shapes_and_determinism(sam):
    img = _image()
    for kw in (dict(box=[10, 10, 40, 30]), dict(points=[[20, 20], [30, 25]]), dict(box=[10, 10, 40, 30], points=[[20, 20]])):
        for multi in (False, True):
            m1, s1 = sam(img, multimask=multi, **kw)
            m2, s2 = sam(img, multimask=multi, **kw)
            assert m1.shape == (60, 90) and m1.dtype == bool
            assert (m1 == m2).all() and s1 == s2
    with pytest.raises(ValueError):
        sam(img)
    # the image embedding is computed once per image object and gives what a fresh model gives
    fresh = Segmenter(sam.model, sam.processor)
    a, _ = fresh(img.copy(), box=[10, 10, 40, 30])
    b, _ = sam(img, box=[10, 10, 40, 30])
    assert (a == b).all() and sam._cache[0] is img


def test_prompts_are_mapped_into_sams_frame(sam):
    img = _image(90, 60)  # longest side 90 -> 64: scale 64/90; the short side 60 -> round(42.67) = 43
    enc = sam.inputs(img, [9, 6, 45, 30], [[18, 12]])
    assert tuple(enc["reshaped_input_sizes"][0].tolist()) == (43, 64)
    assert enc["input_boxes"][0, 0].tolist() == pytest.approx([9 * 64 / 90, 6 * 43 / 60, 45 * 64 / 90, 30 * 43 / 60])
    assert enc["input_points"][0, 0, 0].tolist() == pytest.approx([18 * 64 / 90, 12 * 43 / 60])
    assert enc["input_labels"][0, 0].tolist() == [1]


def test_planted_mask_comes_back_at_the_prompt(sam, monkeypatch):
    """A model that answers 'the disc around the point you gave me' (in its own resized frame):
    the mask returned in original pixels must sit around the original point."""
    from types import SimpleNamespace

    low = SIDE // 2  # low-res mask side; it covers the padded SIDE x SIDE input

    def planted(pixel_values=None, image_embeddings=None, input_points=None, input_labels=None, input_boxes=None,
                multimask_output=False):
        x, y = input_points[0, 0, 0].tolist()  # SAM frame pixels
        Y, X = np.mgrid[0:low, 0:low] + 0.5
        disc = ((X * SIDE / low - x) ** 2 + (Y * SIDE / low - y) ** 2) <= 6.0 ** 2  # radius 6 SAM px
        n = 3 if multimask_output else 1
        logits = torch.from_numpy(np.where(disc, 10.0, -10.0)).float()[None, None, None].repeat(1, 1, n, 1, 1)
        return SimpleNamespace(pred_masks=logits, iou_scores=torch.linspace(0.1, 0.9, n)[None, None])

    monkeypatch.setattr(sam.model, "forward", planted)
    img = _image(90, 60)
    for px, py in [(20.0, 15.0), (70.0, 45.0)]:
        mask, score = sam(img, points=[[px, py]], multimask=True)
        assert score == pytest.approx(0.9)  # the best of three predicted IoUs
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() + 0.5 - px) < 1.5 and abs(ys.mean() + 0.5 - py) < 1.5, (xs.mean(), ys.mean())
        r = 6.0 * 90 / 64  # 6 SAM px in original pixels
        assert mask.sum() == pytest.approx(np.pi * r * r, rel=0.15)


def test_saved_tiny_checkpoint_loads_and_agrees(sam, tmp_path):
    sam.model.save_pretrained(tmp_path)
    sam.processor.save_pretrained(tmp_path)
    again = load_segmenter(str(tmp_path), "cpu")
    img = _image()
    a, _ = sam(img, box=[5, 5, 50, 40])
    b, _ = again(img, box=[5, 5, 50, 40])
    assert (a == b).all()
    load = sam_loader(type("C", (), {"name_or_path": str(tmp_path), "device": "cpu", "dtype": "float32"})())
    assert load() is load()  # loaded once


def test_missing_checkpoint_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for where in (str(tmp_path / "nope"), "no-such-org/no-such-sam-xyz"):
        with pytest.raises(UserError) as e:
            load_segmenter(where, "cpu")
        text = str(e.value)
        assert "\n" not in text and "grounding.sam.name_or_path=" in text and where in text
