"""Tests of the toy world (llava/toy): scene generator, shipped checkpoint, localization heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.toy import CHECKPOINT_DIR
from llava.toy import scenes as S

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "toy" / "toy_grounding.jsonl"


# ----------------------------------------------------------------------------- generator
pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


@pytest.mark.parametrize("seed", range(60))
def test_objects_inside_tight_boxes(seed):
    scene = S.make_scene(seed)
    img, masks = S.render_scene(scene)
    assert img.size == (scene.width, scene.height) and scene.width != scene.height
    assert 2 <= len(scene.objects) <= 4
    arr = np.asarray(img)
    assert len({o.color for o in scene.objects}) == len(scene.objects)
    assert len({o.shape for o in scene.objects}) == len(scene.objects)
    for obj, mask in zip(scene.objects, masks):
        x, y, w, h = obj.bbox
        # every pixel of the object's colour lies inside its box ...
        ys, xs = np.nonzero(np.all(arr == np.array(S.COLORS[obj.color]), axis=-1))
        assert len(xs) > 0
        assert xs.min() >= x and xs.max() <= x + w - 1 and ys.min() >= y and ys.max() <= y + h - 1
        # ... and the box is tight: the drawn pixels touch all four sides
        assert xs.min() == x and xs.max() == x + w - 1 and ys.min() == y and ys.max() == y + h - 1
        assert np.array_equal(np.asarray(mask) > 0, np.all(arr == np.array(S.COLORS[obj.color]), axis=-1))
        assert S.MIN_OBJ - 1 <= w <= S.MAX_OBJ and S.MIN_OBJ - 1 <= h <= S.MAX_OBJ


def test_deterministic_per_seed():
    a, b, c = S.sample_item(7), S.sample_item(7), S.sample_item(8)
    assert a["prompt"] == b["prompt"] and a["bbox"] == b["bbox"] and a["answer"] == b["answer"]
    assert np.array_equal(np.asarray(a["scene"].render()), np.asarray(b["scene"].render()))
    assert not np.array_equal(np.asarray(a["scene"].render()), np.asarray(c["scene"].render())) or (
        a["prompt"] != c["prompt"]
    )


@pytest.mark.parametrize("groups", [None, S.GROUPS])
def test_questions_refer_to_one_object(groups):
    for seed in range(50):
        item = S.sample_item(seed, groups)
        obj = item["scene"].objects[item["target"]]
        assert item["bbox"] == obj.bbox
        assert item["answer"] in (obj.shape, obj.color)
        assert item["answer"] not in item["prompt"]


def test_grounding_set_matches_generator(tmp_path):
    rows = [json.loads(x) for x in DATA.read_text().splitlines()]
    assert len(rows) >= 200 and {r["group"] for r in rows} == set(S.DEFAULT_GROUPS)
    assert len({r["id"] for r in rows}) == len(rows)
    small = [json.loads(x) for x in (DATA.parent / "toy_small.jsonl").read_text().splitlines()]
    assert small == rows[: len(small)]
    S.write_grounding_set(tmp_path, n=5, seed=1234)
    regen = [json.loads(x) for x in (tmp_path / "toy_grounding.jsonl").read_text().splitlines()]
    assert regen == rows[:5]
    for r in rows[:5]:
        assert np.array_equal(np.asarray(Image.open(DATA.parent / r["image_path"])),
                              np.asarray(Image.open(tmp_path / r["image_path"])))


def test_pad_to_square_geometry():
    from llava.toy.evaluate import cell_center_to_original

    # 96x64 padded to 96x96 (16 px top band), resized to 48 with a 6x6 grid: cell 0 centre.
    assert cell_center_to_original(0, 6, 48, 96, 64) == (8.0, 8.0 - 16)
    # 64x96: horizontal offset 16; last cell centre
    assert cell_center_to_original(35, 6, 48, 64, 96) == (88.0 - 16, 88.0)


# ----------------------------------------------------------------------------- checkpoint
@pytest.fixture(scope="module")
def toy_model():
    import torch

    from llava.toy.evaluate import load_model

    torch.set_num_threads(2)
    return load_model(CHECKPOINT_DIR)


def test_checkpoint_is_standard_and_small():
    files = {p.name for p in CHECKPOINT_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert sum(p.stat().st_size for p in CHECKPOINT_DIR.iterdir()) <= 20e6
    cfg = json.loads((CHECKPOINT_DIR / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]


def test_fresh_scene_accuracy_generic_hf(toy_model):
    """>= 95% answers on 40 fresh scenes via AutoProcessor chat template + greedy generate."""
    import torch

    from llava.toy.evaluate import build_inputs

    model, processor = toy_model
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    correct = 0
    n = 40
    for i in range(n):
        item = S.sample_item(555_000 + i)  # seeds unseen in training and in the held-out set
        inputs = build_inputs(processor, item["prompt"], item["scene"].render())
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        pred = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        correct += pred == item["answer"]
    assert correct / n >= 0.95, correct


def test_localization_heads_point_at_referred_object(toy_model):
    from llava.toy.evaluate import evaluate, load_rows

    model, processor = toy_model
    res = evaluate(rows=load_rows(DATA)[:40], model=model, processor=processor, generate=True)
    assert res["answer_accuracy"] >= 0.95
    # the shipped model has two such heads (layer 1, heads 0 and 3; ~99% on all 240 rows)
    assert len(res["heads_at_least_90"]) >= 2, res["top_heads"][:3]
    assert res["top_heads"][0]["pointing"] >= 0.95
    assert res["chance_pointing"] < 0.15
    # most heads do not localize: localization is a property of a few heads, not of the model
    assert sum(p >= 0.9 for layer in res["pointing"] for p in layer) <= 4
