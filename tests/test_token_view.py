"""mode=tokens and vision-tower records against independent references.

The references are written here from the published code's behaviour (never by calling ours):

* VLM-Visualizer (zjysteven/VLMVisualizer @ cefbd78, utils.py `aggregate_llm_attention`,
  `aggregate_vit_attention`; llava_example.ipynb cell 10): per generated step, per LLM layer the
  head mean of the last query row, key 0 set to 0, divided by its sum; mean over layers. ViT: per
  layer 0..L+select_layer the head mean, CLS row/column dropped, rows divided by their sums, mean
  over layers. Combined: w = r[img] / r[img].sum(); map = w @ V.
* LLaVA XAI toolkit (CaseyThiessen/LLaVa-Attention-Heatmap @ 4151eb9, utils.py
  `extract_image_token_attention`): raw probabilities X[step, layer, head, image] of the chosen
  steps / layers / heads, then one mean over (0, 1, 2) | (1, 2) | (2,) | none.

Both are computed from an *eager* run (`attn_implementation="eager"`, `output_attentions=True`),
batch size 1, as their code runs; our records come from the capture attention function.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest
from inprocess import run_script
import torch
from helpers import make_cfg
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lab.analysis import token_maps as TK
from lab.records.record import AttentionRecord
from lab.stages import StageContext
from lab.capture.station import Strategy, collect
from lab.sessions.views import run_view
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "llava" / "toy" / "checkpoint"
TOL = 1e-5


# ---- the references (numpy, from the published code's behaviour) -------------------------------
pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def vlmvis_llm_row(step_layers: list[np.ndarray]) -> np.ndarray:
    """One generation step: `step_layers[l]` is layer l's attention [H, Q, K] (batch 1). Returns the
    length-K+1 vector of VLM-Visualizer (index = sequence position; trailing slot 0)."""
    per_layer = []
    for a in step_layers:
        row = a.mean(axis=0)[-1]  # head mean, last query row (K,)
        vec = np.concatenate([[0.0], row[1:], [0.0]])  # first key zeroed, a trailing 0
        per_layer.append(vec / vec.sum())
    return np.mean(per_layer, axis=0)


def vlmvis_vit(layers: list[np.ndarray], select_layer: int) -> np.ndarray:
    """`layers[i]`: ViT layer i's attention [H, N, N] (batch 1). Layers 0..L+select_layer (negative
    select_layer; a non-negative one uses all, as their loop never breaks)."""
    kept = []
    for i, a in enumerate(layers):
        if i > len(layers) + select_layer:
            break
        m = a.mean(axis=0)[1:, 1:]  # head mean, CLS row and column dropped
        kept.append(m / m.sum(-1, keepdims=True))
    return np.mean(kept, axis=0)


def vlmvis_image_map(r: np.ndarray, img: np.ndarray, vit: np.ndarray) -> np.ndarray:
    w = r[img] / r[img].sum()
    return (w[:, None] * vit).sum(0)  # sum_j w[j] * V[j]: rows of V are query patches


def xai_extract(steps_attn, steps, layers, heads, img, reduction):
    """`steps_attn[s][l]`: [H, Q, K] (batch 1). X[s, l, h, :] = last query row at the image positions."""
    x = np.stack([np.stack([np.stack([steps_attn[s][l][h, -1, img] for h in heads]) for l in layers])
                  for s in steps])  # (S, L', H', V)
    return {1: lambda: x.mean((0, 1, 2)), 2: lambda: x.mean((1, 2)), 3: lambda: x.mean(2), "none": lambda: x}[reduction]()


# ---- an independent eager run (plain transformers) ---------------------------------------------
def eager_run(folder, image: Image.Image, query: str, max_new_tokens: int):
    """Eager LLM attentions per step (list over steps of [L] arrays [H, Q, K]), ViT attentions
    ([L_v] arrays [H, N, N]), image positions, generated ids and the config."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    proc = AutoProcessor.from_pretrained(str(folder))
    model = LlavaForConditionalGeneration.from_pretrained(str(folder), attn_implementation="eager",
                                                          dtype=torch.float32).eval()
    assert model.config.vision_config._attn_implementation == "eager"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query}]}]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
    enc = proc(images=image.convert("RGB"), text=prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, output_attentions=True,
                             return_dict_in_generate=True)
        vit = model.model.vision_tower(enc["pixel_values"], output_attentions=True).attentions
    ids = enc["input_ids"][0]
    img = torch.nonzero(ids == model.config.image_token_id).flatten().numpy()
    assert (np.diff(img) == 1).all()  # one contiguous run, as their slice assumes
    gen = out.sequences[0, ids.numel():].tolist()
    llm = [[a[0].numpy().astype(np.float64) for a in step] for step in out.attentions]
    return NS(llm=llm, vit=[a[0].numpy().astype(np.float64) for a in vit], img=img, gen=gen, config=model.config)


def _cut_at_eos(gen: list[int], eos: int) -> list[int]:
    return gen[: gen.index(eos) + 1] if eos in gen else gen


def _run(script: str, *args: str, cwd=None):
    """An entry point as `python <script> <args>` runs it, in this process (tests/inprocess.py)."""
    return run_script(ROOT / script, *args, cwd=cwd or tempfile.mkdtemp(prefix="lhf_tok_"))


def _load_maps(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, json.loads(meta["token_maps"]) | {"tokens_header": json.loads(meta["tokens"])}


def _view(attention_file, out, *overrides):
    cfg = make_cfg("mode=tokens", f"attention_file={attention_file}", f"output_dir={out}", *overrides,
                   config_name="visualization_config")
    res = run_view(cfg, StageContext(loader=lambda: pytest.fail("a view loaded the model"), output_dir=Path(out)))
    sid = AttentionRecord.load(attention_file).meta.sample_id
    return res, *_load_maps(Path(out) / f"{sid}_tokens.safetensors")


# ---- the toy, end to end through both entry points ----------------------------------------------
TOY_IMAGE = ROOT / "examples" / "toy" / "images" / "toy_0000.png"
TOY_QUERY = "what shape is the yellow one?"


@pytest.fixture(scope="module")
def toy_eager():
    return eager_run(TOY, Image.open(TOY_IMAGE), TOY_QUERY, max_new_tokens=64)


@pytest.fixture(scope="module")
def toy_record(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_cli")
    r = _run("cli_llava.py", f"query={TOY_QUERY}", f"image_file={TOY_IMAGE}", f"output_dir={out}",
             f"hydra.run.dir={out / 'hydra'}", "stream=false")
    assert r.returncode == 0, r.stderr
    path = out / "attention" / "toy_0000.safetensors"
    assert f"record: {path}" in r.stdout and "per-token view: python visualize_attention.py mode=tokens" in r.stdout
    return path


def test_toy_cli_record_then_tokens_view_equals_vlm_visualizer(toy_record, toy_eager, tmp_path):
    rec = AttentionRecord.load(toy_record)
    gen = _cut_at_eos(toy_eager.gen, toy_eager.config.text_config.eos_token_id)
    assert rec.generated_ids.tolist() == gen and len(gen) >= 2
    assert sorted(rec.vision) == ["mean", "rollout", "vlm_visualizer"]
    r = _run("visualize_attention.py", "mode=tokens", f"attention_file={toy_record}", "tokens.weighting=vlm_visualizer",
             "vision.aggregate=vlm_visualizer", f"output_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}")
    assert r.returncode == 0, r.stderr
    t, meta = _load_maps(tmp_path / "toy_0000_tokens.safetensors")
    side = 6
    T = len(gen)
    assert t["maps"].shape == (T, side, side) and t["image_maps"].shape == (T, side, side)
    assert meta["tokens"] == meta["tokens_header"] == rec.meta.generated_tokens
    vit = vlmvis_vit(toy_eager.vit, select_layer=toy_eager.config.vision_feature_layer)
    worst = {"maps": 0.0, "image_maps": 0.0, "share": 0.0}
    for step in range(T):
        r_t = vlmvis_llm_row(toy_eager.llm[step])
        worst["maps"] = max(worst["maps"], np.abs(t["maps"][step] - r_t[toy_eager.img].reshape(side, side)).max())
        ref_img = vlmvis_image_map(r_t, toy_eager.img, vit).reshape(side, side)
        worst["image_maps"] = max(worst["image_maps"], np.abs(t["image_maps"][step] - ref_img).max())
        worst["share"] = max(worst["share"], abs(t["image_share"][step] - r_t[toy_eager.img].sum()))
        assert np.argmax(t["image_maps"][step]) == np.argmax(ref_img)
    print(f"toy VLM-Visualizer max abs diff: {worst}")
    assert max(worst.values()) <= TOL, worst
    # the check can fail: plain weighting and the other tower aggregates are measurably different
    r0 = vlmvis_llm_row(toy_eager.llm[0])[toy_eager.img]
    plain = TK.record_token_maps(rec)[0]
    l1 = np.abs(plain - r0).sum()
    other = {k: np.abs(rec.vision[k] - vit).max() for k in ("mean", "rollout")}
    print(f"toy: plain vs vlm_visualizer weighting L1 at token 0 = {l1:.4f}; tower matrices vs theirs: {other}")
    assert l1 > 1e-3 and min(other.values()) > 1e-3
    for name in ("figures/toy_0000_tokens.png", "figures/toy_0000_tokens_vision.png", "figures/toy_0000_image_share.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_toy_layer_head_selection_equals_xai_toolkit(toy_record, toy_eager, tmp_path):
    T = len(AttentionRecord.load(toy_record).generated_ids)
    layers, heads = [1, 3], [0, 2]
    sel = [f"tokens.layers=[{','.join(map(str, layers))}]", f"tokens.heads=[{','.join(map(str, heads))}]"]
    steps = list(range(T))
    worst = 0.0
    for reduce, reduction in (("[heads,layers]", 2), ("[heads]", 3), ("[]", "none"), ("[steps,heads,layers]", 1)):
        _, t, meta = _view(toy_record, tmp_path / reduction.__str__(), *sel, f"tokens.reduce={reduce}")
        ref = xai_extract(toy_eager.llm, steps, layers, heads, toy_eager.img, reduction)
        got = t["maps"].reshape(ref.shape)
        worst = max(worst, np.abs(got - ref).max())
    # their default steps ('all') start at 1: the same numbers on our steps 1:
    _, t, meta = _view(toy_record, tmp_path / "from1", *sel, "tokens.steps=1:")
    assert meta["steps"] == list(range(1, T))
    ref = xai_extract(toy_eager.llm, range(1, T), layers, heads, toy_eager.img, 2)
    worst = max(worst, np.abs(t["maps"].reshape(ref.shape) - ref).max())
    print(f"toy XAI-toolkit max abs diff: {worst:.2e}")
    assert worst <= TOL


# ---- a tiny random model, batched collection with padding -------------------------------------
_NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8))
SAMPLES = [(Image.new("RGB", (80, 50), (220, 30, 30)), "what color is the circle ?", "s0"),
           (_NOISE, "where is the red object on the left of the picture ?", "s1")]


@pytest.fixture(scope="module", params=["crop", "pad"])
def tiny_case(request, tiny_ckpt, tiny_pad_ckpt, tmp_path_factory):
    from llava.model import load_vlm

    folder = tiny_ckpt if request.param == "crop" else tiny_pad_ckpt
    vlm = load_vlm(str(folder), device="cpu", dtype="float32")
    recs = collect(vlm, SAMPLES, Strategy(query_positions="generated", vision=True), max_new_tokens=5)
    out = tmp_path_factory.mktemp(f"tiny_{request.param}")
    paths = [r.save(out / f"{r.meta.sample_id}.safetensors") for r in recs]
    refs = [eager_run(folder, img, q, max_new_tokens=5) for img, q, _ in SAMPLES]
    return NS(folder=folder, paths=paths, refs=refs, recs=recs)


def test_tiny_records_match_eager_and_both_references(tiny_case, tmp_path):
    eos = tiny_case.refs[0].config.text_config.eos_token_id
    worst = {"first": 0.0, "vlmvis_maps": 0.0, "vlmvis_image_maps": 0.0, "xai": 0.0, "vision_mean_vs_offline": 0.0}
    for path, ref in zip(tiny_case.paths, tiny_case.refs):
        rec = AttentionRecord.load(path)
        gen = _cut_at_eos(ref.gen, eos)
        assert rec.generated_ids.tolist() == gen
        T, L, H, V = rec.shape
        side = int(np.sqrt(V))
        for s in range(T):  # the stored first-token column is the eager probability at key 0
            exp = np.stack([ref.llm[s][l][:, -1, 0] for l in range(L)])
            worst["first"] = max(worst["first"], np.abs(rec.first_attention[s] - exp).max())
        _, t, _ = _view(path, tmp_path / rec.meta.sample_id, "tokens.weighting=vlm_visualizer",
                        "vision.aggregate=vlm_visualizer")
        vit = vlmvis_vit(ref.vit, ref.config.vision_feature_layer)
        for s in range(T):
            r_s = vlmvis_llm_row(ref.llm[s])
            worst["vlmvis_maps"] = max(worst["vlmvis_maps"], np.abs(t["maps"][s] - r_s[ref.img].reshape(side, side)).max())
            im = vlmvis_image_map(r_s, ref.img, vit).reshape(side, side)
            worst["vlmvis_image_maps"] = max(worst["vlmvis_image_maps"], np.abs(t["image_maps"][s] - im).max())
        _, t, _ = _view(path, tmp_path / f"{rec.meta.sample_id}_sel", "tokens.layers=[0,2,3]", "tokens.heads=[1,3]",
                        "tokens.steps=[0,2]")
        ref_x = xai_extract(ref.llm, [0, 2], [0, 2, 3], [1, 3], ref.img, 2)
        worst["xai"] = max(worst["xai"], np.abs(t["maps"].reshape(ref_x.shape) - ref_x).max())
        # the stored "mean" matrix equals the offline function on the eager tower's attentions
        from llava.vision import token_patch_matrix

        off = token_patch_matrix(np.stack(ref.vit), ref.config, "mean")
        worst["vision_mean_vs_offline"] = max(worst["vision_mean_vs_offline"], np.abs(rec.vision["mean"] - off).max())
        off = token_patch_matrix(np.stack(ref.vit), ref.config, "rollout")
        assert np.abs(rec.vision["rollout"] - off).max() <= TOL
    print(f"tiny ({tiny_case.folder.name}) max abs diff: {worst}")
    assert max(worst.values()) <= TOL, worst


def test_batch_with_vision_and_storage(tiny_vlm, tmp_path):
    """stage=batch strategy.vision=true writes the matrices; their cost is 3 x V x P float32."""
    from helpers import make_cfg as mk

    from lab.stages import run_stage

    data = tmp_path / "d.jsonl"
    SAMPLES[0][0].save(tmp_path / "a.png")
    data.write_text(json.dumps({"id": "a", "prompt": "what color is the circle ?", "image_path": "a.png"}) + "\n")
    common = [f"data_file={data}", "max_new_tokens=3", "strategy.query_positions=generated"]
    with_v = run_stage(mk("stage=batch", *common, "strategy.vision=true", f"output_dir={tmp_path / 'v'}"),
                       StageContext(loader=lambda: tiny_vlm, output_dir=tmp_path / "v"))
    without = run_stage(mk("stage=batch", *common, f"output_dir={tmp_path / 'n'}"),
                        StageContext(loader=lambda: tiny_vlm, output_dir=tmp_path / "n"))
    assert with_v["collect"]["ok"] == without["collect"]["ok"] == 1
    rv = AttentionRecord.load(tmp_path / "v" / "attention" / "a.safetensors")
    rn = AttentionRecord.load(tmp_path / "n" / "attention" / "a.safetensors")
    assert rn.vision == {} and rn.first_attention is not None
    V = rv.shape[-1]
    P = rv.meta.vision["patch_rows"] * rv.meta.vision["patch_cols"]
    extra = (tmp_path / "v" / "attention" / "a.safetensors").stat().st_size - \
        (tmp_path / "n" / "attention" / "a.safetensors").stat().st_size
    tensor_bytes = 3 * V * P * 4
    assert tensor_bytes <= extra <= tensor_bytes + 1500, (extra, tensor_bytes)  # + JSON header entries
    np.testing.assert_allclose(rv.image_attention, rn.image_attention, atol=1e-6)  # capture unchanged


# ---- reductions: property-based against the VLM-Visualizer formula on full rows -------------------
@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 3), L=st.integers(1, 4), H=st.integers(1, 4), K=st.integers(4, 12), seed=st.integers(0, 10**6),
       keep_heads=st.booleans())
def test_vlm_visualizer_weighting_on_random_rows(T, L, H, K, seed, keep_heads):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(T, L, H, K)) * 3
    full = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # softmax rows over K keys
    V = int(rng.integers(1, K - 1))
    start = int(rng.integers(1, K - V + 1))
    img = np.arange(start, start + V)
    heads = sorted(rng.choice(H, size=int(rng.integers(1, H + 1)), replace=False).tolist())
    layers = sorted(rng.choice(L, size=int(rng.integers(1, L + 1)), replace=False).tolist())
    over = ("layers",) if keep_heads else ("heads", "layers")
    got = TK.reduce_token_maps(full[..., img], layers, heads, over=over, weighting="vlm_visualizer",
                               first=full[..., 0])
    for t in range(T):
        if keep_heads:  # per (layer, head): the row with key 0 zeroed, divided by its sum
            exp = np.mean([[np.r_[0, full[t, l, h, 1:]][img] / full[t, l, h, 1:].sum() for h in heads] for l in layers], 0)
        else:
            exp = vlmvis_llm_row([full[t, l][heads][:, None, :] for l in layers])[img]
        np.testing.assert_allclose(got[t], exp, rtol=1e-9, atol=1e-12)
    plain = TK.reduce_token_maps(full[..., img], layers, heads, steps=[T - 1])
    np.testing.assert_allclose(plain[0], full[T - 1][layers][:, heads][..., img].mean((0, 1)))


def test_first_position_image_token_is_zeroed():
    full = np.full((1, 1, 1, 4), 0.25)
    got = TK.reduce_token_maps(full, weighting="vlm_visualizer", first=full[..., 0], zero_index=[0])
    np.testing.assert_allclose(got[0], [0, 1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError, match="needs first="):
        TK.reduce_token_maps(full, weighting="vlm_visualizer")
    all_first = np.zeros((1, 1, 1, 3))
    assert (TK.reduce_token_maps(all_first, weighting="vlm_visualizer", first=np.ones((1, 1, 1))) == 0).all()


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 9), a=st.one_of(st.none(), st.integers(-12, 12)), b=st.one_of(st.none(), st.integers(-12, 12)))
def test_parse_steps_ranges_are_python_slices(T, a, b):
    spec = f"{'' if a is None else a}:{'' if b is None else b}"
    want = list(range(T))[slice(a, b)]
    if want:
        assert TK.parse_steps(spec, T) == want
    else:
        with pytest.raises(ValueError, match="selects no step"):
            TK.parse_steps(spec, T)


def test_parse_steps_forms():
    assert TK.parse_steps("all", 3) == [0, 1, 2] == TK.parse_steps(None, 3)
    assert TK.parse_steps([2, 0], 3) == [2, 0] and TK.parse_steps(-1, 3) == [2] and TK.parse_steps("1", 3) == [1]
    for bad in ([3], [], [0, 0], "a:b", "1:2:3:4", "x"):
        with pytest.raises(ValueError):
            TK.parse_steps(bad, 3)


@settings(max_examples=30, deadline=None)
@given(V=st.integers(1, 8), P=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_combine_vision_is_a_distribution(V, P, seed):
    rng = np.random.default_rng(seed)
    m = rng.random((V, P))
    m /= m.sum(-1, keepdims=True)
    w = rng.random((3, V)) * rng.random()
    out = TK.combine_vision(w, m)
    np.testing.assert_allclose(out.sum(-1), 1.0)
    np.testing.assert_allclose(out, (w / w.sum(-1, keepdims=True)) @ m)
    assert (TK.combine_vision(np.zeros(V), m) == 0).all()


# ---- the streaming vision aggregator against numpy formulas ------------------------------------
@pytest.mark.parametrize("cls,strategy,n_used", [(1, "default", 2), (1, "full", 3), (0, "full", 1), (0, "default", 3)])
def test_token_patch_capture_streaming_equals_formulas(cls, strategy, n_used):
    from llava.vision import TokenPatchCapture

    rng = np.random.default_rng(0)
    B, Hv, side = 2, 3, 3
    N = side * side + cls
    att = rng.random((4, B, Hv, N, N)) ** 4
    att /= att.sum(-1, keepdims=True)
    cap = TokenPatchCapture(["mean", "rollout", "vlm_visualizer"], n_used, cls, strategy, side, {})
    for _ in range(2):  # two tower calls: the last one counts
        for layer in range(n_used):
            cap.add_layer(layer, torch.tensor(att[layer], dtype=torch.float32))
    rows = slice(1, None) if strategy == "default" else slice(None)
    for b in range(B):
        got, _ = cap.result(b)
        a = att[:n_used, b].mean(1)  # (n, N, N)

        def rn(x):
            return x / x.sum(-1, keepdims=True)

        np.testing.assert_allclose(got["mean"], rn(a.mean(0)[rows, cls:]), atol=1e-6)
        np.testing.assert_allclose(got["vlm_visualizer"], np.mean([rn(x[rows, cls:]) for x in a], 0), atol=1e-6)
        r = np.eye(N)
        for x in a:
            r = rn(x + np.eye(N)) @ r
        np.testing.assert_allclose(got["rollout"], rn(r[rows, cls:]), atol=1e-6)
        assert got["mean"].shape == ((N - 1 if strategy == "default" else N), N - cls)


# ---- families, errors ---------------------------------------------------------------------------------
def test_unsupported_families_are_refused_in_one_line(tiny_vlm):
    from llava.vision import capture_token_patch, vision_support

    assert tiny_vlm.vision_support() is None
    for mt, word in (("qwen2_5_vl", "2x2"), ("llava_next", "anyres"), ("gemma3", "pooled"), ("idefics3", "tiles plus a global image")):
        why = vision_support(NS(config=NS(model_type=mt)))
        assert "LLaVA-1.5-style models only" in why and word in why and "\n" not in why
    fake = NS(model=NS(config=NS(model_type="qwen2_vl")))
    with pytest.raises(UserError, match="qwen2_vl: its tower"):
        with capture_token_patch(fake):
            pass


def test_chat_vision_setting(tiny_vlm):
    from lab.sessions.chat import _vision_setting

    class NoVision:
        def vision_support(self):
            return "the vision-tower view supports LLaVA-1.5-style models only; qwen2_vl: ..."

    assert _vision_setting(tiny_vlm, NS(vision=None)) is True
    assert _vision_setting(tiny_vlm, NS(vision=False)) is False
    assert _vision_setting(NoVision(), NS(vision=None)) is False
    with pytest.raises(UserError, match="vision=true: the vision-tower view supports"):
        _vision_setting(NoVision(), NS(vision=True))


@pytest.fixture(scope="module")
def plain_records(tiny_vlm, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    (gen,) = collect(tiny_vlm, SAMPLES[:1], Strategy(query_positions="generated"), max_new_tokens=3)
    (last,) = collect(tiny_vlm, SAMPLES[:1], Strategy())
    return gen.save(out / "gen.safetensors"), last.save(out / "last.safetensors")


@pytest.mark.parametrize("overrides,needle", [
    (["vision.aggregate=rollout"], "no vision-tower matrix 'rollout' in this record (it holds: none)"),
    (["tokens.steps=9:20"], "selects no step"),
    (["tokens.steps=[7]"], "steps=[7]: need a non-empty list of steps in 0..2"),
    (["tokens.weighting=eager"], "tokens.weighting='eager' must be one of plain, vlm_visualizer"),
    (["tokens.reduce=[tokens]"], "tokens.reduce=['tokens'] must be a list of distinct values"),
    (["tokens.layers=[9]"], "layers [9] not captured"),
    (["vision.aggregate=max"], "vision.aggregate='max' must be one of none, mean"),
])
def test_view_errors_name_the_key(plain_records, tmp_path, overrides, needle):
    gen, _ = plain_records
    with pytest.raises(UserError) as e:
        _view(gen, tmp_path, *overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_view_needs_generated_rows_and_runs_alone(plain_records, tmp_path):
    gen, last = plain_records
    r = _run("visualize_attention.py", "mode=tokens", f"attention_file={last}", f"output_dir={tmp_path}",
             f"hydra.run.dir={tmp_path / 'h'}")
    assert r.returncode == 2 and "query_positions=generated" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    res, t, meta = _view(gen, tmp_path / "ok", "tokens.reduce=[heads]", "tokens.steps=0:2")
    T, L = 2, AttentionRecord.load(gen).shape[1]
    assert t["maps"].shape == (T, L, 4, 4) and meta["axes"] == ["steps", "layers", "rows", "cols"]
    assert "image_maps" not in t and set(res) == {"maps", "figure", "image_share"}


def test_llava_with_a_siglip_tower(tmp_path):
    """No CLS token: every patch is an image token ("full" strategy); nothing is dropped."""
    from transformers import LlavaForConditionalGeneration, SiglipVisionConfig

    from llava.tiny.llava15 import TinyLlavaSpec, build_config, build_processor
    from llava.model import load_vlm

    spec = TinyLlavaSpec(vision_feature_select_strategy="full", seed=5)
    proc = build_processor(spec)
    proc.num_additional_image_tokens = 0
    cfg = build_config(spec, proc.tokenizer)
    cfg.vision_config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                           num_attention_heads=4, image_size=56, patch_size=14)
    torch.manual_seed(5)
    LlavaForConditionalGeneration(cfg).eval().save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    vlm = load_vlm(str(tmp_path), device="cpu", dtype="float32")
    sample = [(SAMPLES[1][0], "what color is the circle ?", "sig")]
    (rec,) = collect(vlm, sample, Strategy(query_positions="generated", vision=True), max_new_tokens=3)
    assert rec.meta.vision["cls"] == 0 and rec.vision["vlm_visualizer"].shape == (16, 16)
    ref = eager_run(tmp_path, SAMPLES[1][0], "what color is the circle ?", max_new_tokens=3)
    kept = [a.mean(0) / a.mean(0).sum(-1, keepdims=True) for a in ref.vit[: 3 + 1 + cfg.vision_feature_layer]]
    assert np.abs(rec.vision["vlm_visualizer"] - np.mean(kept, 0)).max() <= TOL
    view = TK.token_view(rec.save(tmp_path / "sig.safetensors") and AttentionRecord.load(tmp_path / "sig.safetensors"),
                         weighting="vlm_visualizer", vision="vlm_visualizer")
    r0 = vlmvis_llm_row(ref.llm[0])[ref.img]
    assert np.abs(view.image_maps[0].ravel() - (r0 / r0.sum()) @ np.mean(kept, 0)).max() <= TOL


@pytest.mark.parametrize("name", ["gemma3_window8", "qwen2_5_vl", "llava_next", "llava_onevision", "qwen2_vl"])
def test_first_token_column_matches_eager_in_every_family(name, tmp_path):
    """The extra captured column is the eager probability at the sample's first real key (left padding;
    Gemma 3's sliding layers: 0 once it left the cache), so vlm_visualizer weighting works everywhere."""
    from llava.tiny.families import TINY_BUILDERS, save_tiny_gemma3
    from llava.model import load_vlm

    folder = save_tiny_gemma3(tmp_path, seed=4, sliding_window=8) if name == "gemma3_window8" \
        else TINY_BUILDERS[name](tmp_path, seed=3)
    vlm = load_vlm(str(folder), device="cpu", dtype="float32")
    eager = load_vlm(str(folder), device="cpu", dtype="float32", attn_implementation="eager")
    samples = [(img, q) for img, q, _ in SAMPLES]
    recs = collect(vlm, samples, Strategy(query_positions="generated"), max_new_tokens=3)
    batch = vlm.prepare(samples)
    with torch.inference_mode():
        ref = eager.model.generate(**batch.inputs, max_new_tokens=3, do_sample=False, output_attentions=True,
                                   return_dict_in_generate=True)
    seq = batch.attention_mask.shape[1]
    worst = 0.0
    for b, rec in enumerate(recs):
        off = batch.pad_offsets[b]
        for t in range(rec.shape[0]):
            for li, att in enumerate(ref.attentions[t]):
                kv, total = att.shape[-1], seq + t
                col = off - (total - kv) if (t > 0 and kv < total) else off
                exp = att[b, :, -1, col].numpy() if col >= 0 else np.zeros(att.shape[1])
                worst = max(worst, np.abs(rec.first_attention[t, li] - exp).max())
    assert worst <= TOL, (name, worst)
    if vlm.vision_support() is not None:
        with pytest.raises(UserError, match="LLaVA-1.5-style models only"):
            collect(vlm, samples[:1], Strategy(query_positions="generated", vision=True), max_new_tokens=1)


def test_a_second_view_says_what_it_replaced_and_clears_what_it_did_not_write(toy_record, tmp_path, capsys):
    """The README's two mode=tokens commands on one folder: the figures there belong to the last view
    (an earlier view's _tokens_vision.png is removed and said; files written again are said)."""
    _view(toy_record, tmp_path)
    stale = tmp_path / "figures" / "toy_0000_tokens_vision.png"
    stale.write_bytes(b"an earlier view's vision figure")
    capsys.readouterr()
    _view(toy_record, tmp_path)
    out = capsys.readouterr().out
    assert not stale.exists() and f"removed: {stale}" in out
    assert f"replaced: {tmp_path / 'figures' / 'toy_0000_tokens.png'}" in out
