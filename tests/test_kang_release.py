"""method=kang_release against the released code's formulas, re-implemented here from the release
(seilk/LocalizationHeads 9ffe219d "updates: overhauled": analyze.py, bbox.py; llava/conversation.py
referseg, collector.py, lab/capture/station.py prompt_segments), not from this project's code.

The records are the toy model's, collected under the release's prompt (referseg); the release's
functions read one sample's ``attn[l, h, 0]`` (576 values reshaped P x P, row-major). Float32
records here (the release runs fp16; the formulas are what is compared).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import make_cfg
from scipy import ndimage

from lab.analysis import grounding as G
from lab.records.record import AttentionRecord
from lab.stages import StageContext, run_stage
from llava.model import load_vlm
from llava.prompts import REFERSEG_SYSTEM

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "llava" / "toy" / "checkpoint"
DATA = ROOT / "examples" / "toy" / "toy_small.jsonl"


# ---- the release, re-implemented ------------------------------------------------------------------
pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def release_elbow_chord(values):
    """analyze.py elbow_chord: ascending values, x = rank, chord to the last point, first farthest point."""
    if len(values) <= 2:
        return min(values) if values else 0.0
    vals = np.array(values, dtype=np.float64)
    y = vals[np.argsort(vals)]
    x = np.arange(len(y), dtype=np.float64)
    start = np.array([x[0], y[0]])
    end = np.array([x[-1], y[-1]])
    line = end - start
    line_len = np.linalg.norm(line)
    if line_len == 0:
        return float(y[0])
    unit = line / line_len
    vecs = np.stack([x, y], axis=1) - start
    proj = (vecs @ unit)[:, None] * unit
    d = np.linalg.norm(vecs - proj, axis=1)
    return float(y[int(np.argmax(d))])


def release_spatial_entropy(a2d, threshold=0.001):
    """analyze.py spatial_entropy (v2): relu(A - 2 mean) > threshold, 8-connected, p = comp / all relu mass."""
    mean_val = a2d.mean()
    b = np.maximum(a2d - mean_val * 2, 0)
    labeled, num = ndimage.label((b > threshold).astype(np.int32), structure=np.ones((3, 3)))
    total = b.sum()
    if total <= 0:
        return float("inf"), 0
    probs = []
    for i in range(1, num + 1):
        comp = b[labeled == i].sum()
        if comp > 0:
            probs.append(comp / total)
    se = -sum(p * math.log(p) for p in probs if p > 0) if probs else 0.0
    return float(se), int(num)


def release_analyze(attn, top_k=5, min_keep=1, decimals=6):
    """analyze.py per sample: sums, chord threshold, entropy and bottom row above it, layer > 1, fallback.

    The release sorts by the raw entropy, whose single-component values are round-off (+-1e-7 here,
    larger in fp16) rather than 0: its order among such ties is decided by noise. The sort key is
    rounded to `decimals` so that ties keep (layer, head) order, as the stable sort would on exact values."""
    L, H, V = attn.shape
    P = int(math.isqrt(V))
    sums = [float(attn[l, h].sum()) for l in range(L) for h in range(H)]
    thr = release_elbow_chord(sums)
    results = []
    for l in range(L):
        for h in range(H):
            s = sums[l * H + h]
            a2d = attn[l, h].reshape(P, P)
            if s >= thr:
                se, nc = release_spatial_entropy(a2d)
                bottom = bool((a2d[-1, :] > 0.05).any())
            else:
                se, _nc, bottom = float("inf"), 0, False
            results.append({"layer": l, "head": h, "attn_sum": s, "spatial_entropy": se, "bottom_row_focus": bottom})
    kept = [r for r in results if np.isfinite(r["spatial_entropy"]) and r["attn_sum"] >= thr
            and not r["bottom_row_focus"] and r["layer"] > 1]
    if len(kept) < min_keep:
        kept = [x for x in sorted(results, key=lambda r: r["attn_sum"], reverse=True) if not x["bottom_row_focus"]][:min_keep]
    kept.sort(key=lambda r: round(r["spatial_entropy"], decimals))
    return thr, results, kept[:top_k]


def release_box(attn, heads, image_size, sigma=1.0):
    """bbox.py: per-head gaussian_filter, sum, cells > mean, box of all of them, grid stretched over W x H."""
    V = attn.shape[-1]
    P = int(math.isqrt(V))
    M = np.zeros((P, P), np.float32)
    for l, h in heads:
        a2d = attn[l, h].reshape(P, P).astype(np.float32)
        M += ndimage.gaussian_filter(a2d, sigma=sigma).astype(np.float32)
    mask = np.maximum(M - M.mean(), 0) > 0
    ys, xs = np.where(mask)
    x0, y0, x1, y1 = (0, 0, 0, 0) if xs.size == 0 else (xs.min(), ys.min(), xs.max(), ys.max())
    W, H = image_size
    sx, sy = W / P, H / P
    px0, py0 = int(x0 * sx), int(y0 * sy)
    px1, py1 = int(min(W - 1, (x1 + 1) * sx - 1)), int(min(H - 1, (y1 + 1) * sy - 1))
    return px0, py0, px1, py1  # inclusive pixels


# ---- records under the release's settings ----------------------------------------------------
@pytest.fixture(scope="module")
def release_vlm():
    return load_vlm(str(TOY), device="cpu", dtype="float32", prompt_template="referseg", image_aspect="pad")


@pytest.fixture(scope="module")
def run_dir(release_vlm, tmp_path_factory):
    out = tmp_path_factory.mktemp("kang_release")
    cfg = make_cfg("stage=evaluate", "method=kang_release", f"data_file={DATA}", f"output_dir={out}")
    res = run_stage(cfg, StageContext(loader=lambda: release_vlm, output_dir=out))
    return out, res


def _records(out):
    return [AttentionRecord.load(p) for p in sorted((out / "attention").glob("*.safetensors"))]


def test_analyze_equals_release_v2_head_by_head(run_dir, release_vlm):
    out, _ = run_dir
    recs = _records(out)
    assert len(recs) == 16
    n_c1 = 0
    for rec in recs:
        res = run_stage(make_cfg("stage=analyze", "method=kang_release", f"attention_file={rec.path}", f"output_dir={out}"),
                        StageContext(loader=lambda: release_vlm, output_dir=out))
        ana = json.loads(Path(res["analysis"]).read_text())
        attn = rec.image_attention[0]  # (L, H, V): the last input token
        thr, results, top = release_analyze(attn)
        assert ana["elbow"]["threshold"] == pytest.approx(thr, rel=1e-6)
        c1 = np.array(ana["passes_c1"])
        ref_c1 = np.array([[r["attn_sum"] >= thr for r in results if r["layer"] == l] for l in range(attn.shape[0])])
        assert (c1 == ref_c1).all()  # the same criterion-1 set
        n_c1 += int(c1.sum())
        ent = ana["entropy"]
        for r in results:
            if r["attn_sum"] >= thr:  # the release computes the entropy only there
                ours = ent[r["layer"]][r["head"]]
                if math.isinf(r["spatial_entropy"]):
                    assert ours is None
                else:
                    assert abs(ours - r["spatial_entropy"]) <= 1e-5
                assert ana["bottom_row_artifact"][r["layer"]][r["head"]] == r["bottom_row_focus"]
        assert [tuple(h) for h in ana["lowest_entropy_heads"][:5]] == [(r["layer"], r["head"]) for r in top]
    assert n_c1 > 16  # the threshold is not trivially passed by one head per sample


def test_per_sample_heads_and_boxes_equal_release(run_dir):
    out, res = run_dir
    heads = json.loads((out / "heads.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {json.loads(line)["id"]: json.loads(line) for line in DATA.read_text().splitlines() if line.strip()}
    ious = []
    for rec in _records(out):
        attn = rec.image_attention[0]
        _, _, top = release_analyze(attn)
        mine = [tuple(h) for h in heads["per_sample"][rec.meta.sample_id]]
        assert mine == [(r["layer"], r["head"]) for r in top]
        x0, y0, x1, y1 = release_box(attn, mine, rec.meta.image_size)
        ref_box = (x0, y0, x1 - x0 + 1, y1 - y0 + 1)  # the inclusive pixel box as a continuous one
        maps = rec.layout.to_grid(attn)[[l for l, _ in mine], [h for _, h in mine]]
        g = G.predict_box(maps, rec.layout, sigma=1.0, region="all", geometry="stretch")
        assert g.box_xywh == pytest.approx(ref_box)
        ious.append(G.iou(ref_box, rows[rec.meta.sample_id]["bbox"]))
    assert metrics["selected_heads"]["miou"] == pytest.approx(float(np.mean(ious)), abs=1e-12)
    assert metrics["selected_heads"]["acc@0.5"] == pytest.approx(float(np.mean(np.array(ious) >= 0.5)))
    assert metrics["settings"]["per_sample_heads"] and metrics["settings"]["geometry"] == "stretch"


def test_referseg_prompt_is_the_release_token_sequence(run_dir, release_vlm):
    """collector.py + mm_utils.tokenizer_image_token + prompt_segments: [BOS] system "\\n" | image | "\\n" query,
    every lone-space token dropped; the last input token is the expression's last piece."""
    out, _ = run_dir
    tok = release_vlm.processor.tokenizer
    for rec in _records(out):
        query = rec.meta.query
        first = tok(REFERSEG_SYSTEM + "\n")["input_ids"]  # with BOS
        second = tok("\n" + query, add_special_tokens=False)["input_ids"]
        n_img = rec.layout.num_tokens
        expected = first + [release_vlm.image_token_id] * n_img + second
        assert rec.input_ids.tolist() == expected
        assert rec.meta.query_tokens == [tok.convert_ids_to_tokens(second[-1])]
        assert rec.meta.prompt.startswith(REFERSEG_SYSTEM + "\n") and rec.meta.prompt.endswith("\n" + query)
