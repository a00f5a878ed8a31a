"""The planted LLaVA (llava/planted, docs/planted.md): a model at LLaVA-1.5-7B's geometry whose
localization heads are a fact of its constructed weights. The tool, run with every default of
method=paper, must select exactly those heads; capture must equal eager attention on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_cfg

from lab.capture.station import Strategy, collect
from lab.stages import StageContext, run_stage
from llava.model import load_vlm
from llava.planted.build import save_planted
from llava.planted.scenes import make_scene, question, render, side_of
from utils.settings.declarations import register_configs
from utils.errors import UserError

register_configs()
N_FAST = 24


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = save_planted(tmp_path_factory.mktemp("planted"), seed=0, samples=N_FAST)
    plan = json.loads((out / "checkpoint" / "planted.json").read_text())
    vlm = load_vlm(str(out / "checkpoint"), device="cpu", dtype="float32")
    return out, plan, vlm


@pytest.mark.versions
def test_geometry_is_llava15_7b(planted):
    out, plan, vlm = planted
    cfg = json.loads((out / "checkpoint" / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert cfg["vision_config"]["image_size"] == 336 and cfg["vision_config"]["patch_size"] == 14
    assert cfg["vision_feature_layer"] == -2 and cfg["vision_feature_select_strategy"] == "default"
    assert (vlm.num_layers, vlm.num_heads) == (32, 32) and plan["image_tokens"] == 576
    roles = [tuple(h) for k in ("localization_heads", "visual_heads", "fixed_heads", "copy_heads") for h in plan[k]]
    assert len(roles) == len(set(roles)), "a head plays two roles"


def test_build_is_deterministic(planted, tmp_path):
    out, _, _ = planted
    again = save_planted(tmp_path / "again", seed=0, samples=3)
    a = (out / "checkpoint" / "model.safetensors").read_bytes()
    assert a == (again / "checkpoint" / "model.safetensors").read_bytes()
    rows = (out / "data" / "planted_grounding.jsonl").read_text().splitlines()[:3]
    assert rows == (again / "data" / "planted_grounding.jsonl").read_text().splitlines()


def test_scenes_are_realistic_and_labelled():
    sizes, groups = set(), set()
    for i in range(40):
        sc = make_scene(i)
        sizes.add((sc.width, sc.height))
        groups.add(sc.group)
        img = np.asarray(render(sc))
        x, y, w, h = sc.target_object.bbox
        assert 0 <= x and 0 <= y and x + w <= sc.width and y + h <= sc.height
        assert img.shape == (sc.height, sc.width, 3)
        t = sc.target_object
        same_colour = [o for o in sc.objects if o is not t and o.color == t.color]
        same_shape = [o for o in sc.objects if o is not t and o.shape == t.shape]
        assert bool(same_colour) == (sc.group in ("same_color", "both"))
        assert bool(same_shape) == (sc.group in ("same_shape", "both"))
        assert t.color in question(sc) and t.shape in question(sc) and side_of(sc) in ("left", "right")
    assert any(w != h for w, h in sizes) and groups == {"plain", "same_shape", "same_color", "both"}


@pytest.mark.versions
def test_capture_equals_eager(planted):
    out, _, vlm = planted
    rows = [json.loads(line) for line in (out / "data" / "planted_grounding.jsonl").read_text().splitlines()[:1]]
    from PIL import Image

    samples = [(Image.open(out / "data" / r["image_path"]).convert("RGB"), r["prompt"]) for r in rows]
    rec = collect(vlm, samples, Strategy())[0]
    eager = load_vlm(str(out / "checkpoint"), device="cpu", dtype="float32", attn_implementation="eager")
    batch = eager.prepare(samples)
    with torch.no_grad():
        att = eager.forward(batch, output_attentions=True).attentions  # L x [B, H, S, S]
    last = batch.attention_mask.shape[1] - 1
    ref = torch.stack([a[0, :, last][:, batch.image_cols[0]] for a in att])  # [L, H, 576]
    assert rec.image_attention.shape == (1, 32, 32, 576)
    assert np.abs(rec.image_attention[0] - ref.numpy()).max() <= 1e-5


def test_default_selection_finds_exactly_the_planted_heads(planted):
    out, plan, vlm = planted
    run = out / "run"
    ctx = StageContext(loader=lambda: vlm, output_dir=run)
    data = out / "data" / "planted_grounding.jsonl"
    run_stage(make_cfg("model=planted", f"model.name_or_path={out / 'checkpoint'}", f"data_file={data}",
                       f"output_dir={run}", "report.max_samples=0"), ctx)
    heads = json.loads((run / "heads.json").read_text())
    planted_loc = sorted(tuple(h) for h in plan["localization_heads"])
    assert sorted((h["layer"], h["head"]) for h in heads["heads"]) == planted_loc
    top = heads["ranked"][: len(planted_loc)]
    rest = heads["ranked"][len(planted_loc):]
    assert all(h["frequency"] == N_FAST for h in top)
    assert all(h["frequency"] < N_FAST for h in rest), "another head is chosen as often as the planted ones"
    # the visual heads (docs/visual_heads.md): every planted image head named, each role its own kind
    named = json.loads((run / "visual_heads.json").read_text())["named"]
    kinds = {k: sorted((h["layer"], h["head"]) for h in named["heads"] if h["kind"] == k)
             for k in ("localization", "global", "focused")}
    assert kinds["localization"] == planted_loc
    assert kinds["global"] == sorted(tuple(h) for h in plan["visual_heads"])
    assert kinds["focused"] == sorted(tuple(h) for h in plan["fixed_heads"])
    assert len(named["heads"]) == 21 and [h["rank"] for h in named["heads"]] == list(range(1, 22))
    assert named["by_group"] and all(len(b["heads"]) == 21 for b in named["by_group"].values())
    assert (run / "figures" / "head_kinds.png").stat().st_size > 0
    ev = run_stage(make_cfg("model=planted", "stage=evaluate", f"model.name_or_path={out / 'checkpoint'}",
                            f"data_file={data}", f"output_dir={run}", "report.max_samples=0"), ctx)
    m = json.loads((run / "metrics.json").read_text())
    sel, alls, rnd = (m[k] for k in ("selected_heads", "all_heads_mean", "random_heads"))
    assert sel["pointing"] > alls["pointing"] and sel["pointing"] > rnd["pointing"]
    assert sel["miou"] > alls["miou"] > rnd["miou"]
    assert ev is not None


def test_answer_path_runs_through_the_planted_heads(planted):
    out, plan, vlm = planted
    rows = [json.loads(line) for line in (out / "data" / "planted_grounding.jsonl").read_text().splitlines()]
    plain = [r for r in rows if r["group"] in ("plain", "same_shape")][:8]
    from PIL import Image

    samples = [(Image.open(out / "data" / r["image_path"]).convert("RGB"), r["prompt"]) for r in plain]
    answers = [r.meta.generated_text.strip() for r in collect(vlm, samples, Strategy(capture=False), max_new_tokens=3)]
    assert answers == [r["answer"] for r in plain]
    masked = Strategy(capture=False, maskout=[list(h) for h in plan["localization_heads"]])
    blind = [r.meta.generated_text.strip() for r in collect(vlm, samples, masked, max_new_tokens=3)]
    assert set(blind) == {"left"}, "without the planted heads the model has no position to read"


def test_missing_folder_names_the_build_command(tmp_path):
    from llava.model import load_from_config

    cfg = make_cfg("model=planted", f"model.name_or_path={tmp_path / 'nothing'}").model
    with pytest.raises(UserError, match=r"does not exist; build it first: python -m llava.planted --out"):
        load_from_config(cfg)


def test_cli_refuses_bad_heads():
    from llava.planted.__main__ import parse_heads

    assert parse_heads("14:13,17:5") == [(14, 13), (17, 5)]
    for bad in ("14", "1:3", "32:0", "14:32", "14:13,14:13", "a:b"):
        with pytest.raises(UserError):
            parse_heads(bad)


@pytest.mark.slow
def test_hundred_samples_select_exactly_the_planted_heads(tmp_path):
    """The paper's setting at 100 samples: k=10, the elbow over 1,024 heads, one forward per sample (the
    selection reads the last input token only). The same claim at 1,000 samples, unscaled, is
    benchmarks/bench_planted_selection.py (it exits 1 unless the selection is exactly the planted heads)."""
    out = save_planted(tmp_path / "p", seed=0, samples=100)
    plan = json.loads((out / "checkpoint" / "planted.json").read_text())
    vlm = load_vlm(str(out / "checkpoint"), device="cpu", dtype="float32")
    run = tmp_path / "run"
    run_stage(make_cfg("model=planted", f"model.name_or_path={out / 'checkpoint'}", "batch_size=16", "max_new_tokens=0",
                       f"data_file={out / 'data' / 'planted_grounding.jsonl'}", f"output_dir={run}",
                       "report.max_samples=0"), StageContext(loader=lambda: vlm, output_dir=run))
    heads = json.loads((run / "heads.json").read_text())
    assert sorted((h["layer"], h["head"]) for h in heads["heads"]) == sorted(tuple(h) for h in plan["localization_heads"])
    assert heads["ranked"][3]["frequency"] < heads["ranked"][2]["frequency"]
    assert [h["frequency"] for h in heads["ranked"][:3]] == [100, 100, 100]  # each in every sample, as at 1,000


@pytest.mark.slow
def test_moved_heads_are_found_where_they_were_planted(tmp_path):
    """Another seed and other places (--heads): the selection follows the weights, not a habit."""
    heads = [(9, 2), (22, 30), (27, 11)]
    out = save_planted(tmp_path / "p", seed=3, localization=heads, samples=48)
    plan = json.loads((out / "checkpoint" / "planted.json").read_text())
    assert sorted(tuple(h) for h in plan["localization_heads"]) == sorted(heads)
    vlm = load_vlm(str(out / "checkpoint"), device="cpu", dtype="float32")
    run = tmp_path / "run"
    run_stage(make_cfg("model=planted", f"model.name_or_path={out / 'checkpoint'}", "max_new_tokens=0",
                       f"data_file={out / 'data' / 'planted_grounding.jsonl'}", f"output_dir={run}",
                       "report.max_samples=0"), StageContext(loader=lambda: vlm, output_dir=run))
    got = json.loads((run / "heads.json").read_text())
    assert sorted((h["layer"], h["head"]) for h in got["heads"]) == sorted(heads)
