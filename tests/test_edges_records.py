"""Crafted attention records: every stage that reads records (analyze, select, visualize, the views)
either works on them or refuses them in one line naming the file -- no traceback, no hang, no
runaway memory -- and the checks are caps derived from the record's own tensors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from edges_common import EXAMPLES, craft_record, no_hang, run, scene
from helpers import make_cfg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.records.record import AttentionRecord
from lab.stages import StageContext
from lab.capture.station import Strategy, collect
from lab.sessions.views import run_view
from utils.errors import UserError


@pytest.fixture(scope="module")
def template(tiny_vlm, tmp_path_factory):
    """A genuine record (4 layers x 4 heads x 16 image tokens, 2 generated tokens)."""
    d = tmp_path_factory.mktemp("tpl")
    scene(64, 48).save(d / "img.png")
    (rec,) = collect(tiny_vlm, [(str(d / "img.png"), "what color is the square ?", "tpl", str(d / "img.png"))],
                     Strategy(), max_new_tokens=2)
    rec.save(d / "tpl.safetensors")
    return AttentionRecord.load(d / "tpl.safetensors")


def meta_of(rec: AttentionRecord) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(rec.meta)))


def view(out: Path, *overrides: str) -> tuple[int, str]:
    """A view run in process; mode=batch goes on past a bad record (exit 0) and lists it as failed:
    that failure's message is returned as if it were the run's one line."""
    cfg = make_cfg(*overrides, f"output_dir={out}", config_name="visualization_config")
    try:
        from utils.settings.reading import check_config

        check_config(cfg)
        res = run_view(cfg, StageContext(loader=lambda: None, output_dir=out))
    except UserError as e:
        return 2, str(e)
    if res.get("failed"):
        assert not res["figures"] or cfg.mode == "batch"
        return 2, res["failed"][0][1]
    return 0, ""


def readers(vlm, rec_path: Path, out: Path) -> list[tuple[int, str]]:
    """analyze, select, visualize (stages) and both views on one record; (code, message) each."""
    res = [run(vlm, out, "stage=analyze", f"attention_file={rec_path}", "selection.exclude_layers=[]")[:2],
           run(vlm, out, "stage=select", f"attention_dir={rec_path.parent}", "selection.exclude_layers=[]")[:2],
           run(vlm, out, "stage=visualize", f"attention_file={rec_path}", "selection.exclude_layers=[]")[:2],
           view(out, "mode=single", f"attention_file={rec_path}", "layer=1", "head=0"),
           view(out, "mode=batch", f"attention_dir={rec_path.parent}")]
    return res


# ---- the issue's crafted records, each with the line it now gives ---------------------------------
def _mutations(m: dict, rec: AttentionRecord):
    q, l, h, v = rec.image_attention.shape
    big_layout = json.loads(json.dumps(m["layout"]))
    big_layout["image_size"] = [200000, 200000]
    return {
        "image_size_huge": (dict(m, image_size=[200000, 200000], layout=big_layout), None,
                            "image_size 200000x200000 is above the image limit"),
        "image_size_beyond_grid": (dict(m, image_size=[150000, 600], layout={**m["layout"], "image_size": [150000, 600]}),
                                   None, "image_size 150000x600 is far larger than its grids cover"),
        "query_50MB": (dict(m, query="x" * (50 << 20)), None, "header of"),
        "query_5MB": (dict(m, query="x" * (5 << 20)), None, "query is 5242880 characters long"),
        "query_tokens_1M": (dict(m, query_tokens=["x"] * 1_000_000), None, "query_tokens has 1000000 entries"),
        "query_positions_int": (dict(m, query_positions=47), None, "query_positions must be a list of integers"),
        "layers_null": (dict(m, layers=None), None, "layers must be a list of integers"),
        "extra_str": (dict(m, extra="x"), None, "extra must be an object"),
        "format_version_str": (dict(m, format_version="2"), None, "format_version must be an integer"),
        "format_version_new": (dict(m, format_version=99), None, "newer than this tool reads"),
        "heads_outside": (dict(m, heads=[0, 1, 2, 99]), None, "heads holds 99"),
        "grid_token_negative": (dict(m, layout={**m["layout"], "grids": [{**m["layout"]["grids"][0],
                                "token_index": [-5] + m["layout"]["grids"][0]["token_index"][1:]}]}), None, "below -1"),
        "grid_box_inf": (dict(m, layout={**m["layout"], "grids": [{**m["layout"]["grids"][0], "box": [0, 0, 1e308 * 10, 5]}]}),
                         None, "box"),
        "nan": (m, np.where(np.arange(v) == 0, np.nan, rec.image_attention).astype(np.float32), "NaN"),
        "inf": (m, np.where(np.arange(v) == 0, np.inf, rec.image_attention).astype(np.float32), "infinite"),
        "negative": (m, (rec.image_attention - 0.5).astype(np.float32), "negative"),
        "all_zero": (m, np.zeros_like(rec.image_attention), "every attention weight is 0"),
        "sums_over_one": (m, (rec.image_attention * 3).astype(np.float32), "sums to"),
        "float64": (m, rec.image_attention.astype(np.float64), "expected F32"),
    }


CASES = ["image_size_huge", "image_size_beyond_grid", "query_50MB", "query_5MB", "query_tokens_1M", "query_positions_int", "layers_null",
         "extra_str", "format_version_str", "format_version_new", "heads_outside", "grid_token_negative", "grid_box_inf",
         "nan", "inf", "negative", "all_zero", "sums_over_one", "float64"]


@pytest.mark.parametrize("case", CASES)
def test_crafted_record_is_refused_in_one_line_by_every_reader(case, template, tiny_vlm, tmp_path):
    meta, att, needle = _mutations(meta_of(template), template)[case]
    p = craft_record(tmp_path / "recs" / "bad.safetensors", template, meta, att)
    t0 = time.perf_counter()
    with no_hang(60):
        results = readers(tiny_vlm, p, tmp_path / "out")
    for code, msg in results:
        assert code == 2 and str(p) in msg and needle in msg, (case, msg[:300])
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("kind", ["fifo", "symlink_to_fifo", "folder", "symlink_to_devnull"])
def test_record_path_that_is_not_a_regular_file(kind, tiny_vlm, tmp_path):
    recs = tmp_path / "recs"
    recs.mkdir()
    p = recs / "r.safetensors"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "symlink_to_fifo":
        os.mkfifo(tmp_path / "pipe")
        os.symlink(tmp_path / "pipe", p)
    elif kind == "folder":
        p.mkdir()
    else:
        os.symlink("/dev/null", p)
    with no_hang(60):
        results = readers(tiny_vlm, p, tmp_path / "out")
    for code, msg in results:
        assert code == 2 and str(p) in msg and "not a regular file" in msg, msg


# ---- property: any metadata, any attention values ----------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=12)
FIELDS = ["sample_id", "model_id", "model_type", "num_layers", "num_heads", "layers", "heads", "prompt", "query",
          "query_mode", "query_positions", "query_tokens", "image_path", "image_size", "image_aspect", "layout",
          "prompt_template", "generated_text", "generated_tokens", "interventions", "dtype", "extra", "fingerprint",
          "tool_version", "format", "format_version"]
LAYOUT_FIELDS = ["image_size", "token_positions", "grids", "aspect", "separator_index", "default_grid", "extra"]
GRID_FIELDS = ["name", "rows", "cols", "token_index", "box"]


@st.composite
def mutations(draw):
    """A list of edits: (where, key, value or DELETE); where is meta | layout | grid."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["meta", "meta", "layout", "grid"]))
        key = draw(st.sampled_from({"meta": FIELDS, "layout": LAYOUT_FIELDS, "grid": GRID_FIELDS}[where]))
        value = draw(st.just("__DELETE__") | json_values | st.integers(-3, 20) | st.lists(st.integers(-2, 70), max_size=20))
        edits.append((where, key, value))
    scale = draw(st.sampled_from([None, None, None, 0.0, -1.0, 2.0, float("nan"), float("inf"), 1e-30]))
    return edits, scale


@settings(max_examples=40 * EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=mutations())
def test_any_crafted_metadata_is_used_safely_or_refused(change, template, tiny_vlm, tmp_path_factory):
    edits, scale = change
    m = meta_of(template)
    for where, key, value in edits:
        lay = m.get("layout") if isinstance(m.get("layout"), dict) else None
        grids = lay.get("grids") if lay is not None else None
        grid = grids[0] if isinstance(grids, list) and grids else None
        target = {"meta": m, "layout": lay, "grid": grid}[where]
        if not isinstance(target, dict):
            continue
        if value == "__DELETE__":
            target.pop(key, None)
        else:
            target[key] = value
    att = None
    if scale is not None:
        att = (template.image_attention * np.float32(scale)).astype(np.float32)
    d = tmp_path_factory.mktemp("crafted")
    p = craft_record(d / "recs" / "c.safetensors", template, m, att)
    with no_hang(60):
        try:
            AttentionRecord.load(p)
            accepted = True
        except UserError as e:
            assert str(p) in str(e)
            accepted = False
        if accepted:  # whatever passes the checks, every reader handles (result or one line)
            for code, msg in readers(tiny_vlm, p, d / "out"):
                assert code in (0, 2), msg
                assert code == 0 or msg


def test_genuine_record_passes_every_reader(template, tiny_vlm, tmp_path):
    p = craft_record(tmp_path / "recs" / "tpl.safetensors", template)
    for code, msg in readers(tiny_vlm, p, tmp_path / "out"):
        assert code == 0, msg


def test_analyze_writes_under_output_dir_not_next_to_the_record(template, tiny_vlm, tmp_path):
    """stage=analyze: <output_dir>/analysis/<id>.analysis.json; the record's folder is left alone."""
    recs = tmp_path / "someone_elses"
    p = craft_record(recs / "r.safetensors", template)
    before = sorted(os.listdir(recs))
    os.chmod(recs, 0o555)
    try:
        code, msg, res = run(tiny_vlm, tmp_path / "out", "stage=analyze", f"attention_file={p}")
    finally:
        os.chmod(recs, 0o755)
    assert code == 0, msg
    assert Path(res["analysis"]) == tmp_path / "out" / "analysis" / "tpl.analysis.json" and Path(res["analysis"]).exists()
    assert sorted(os.listdir(recs)) == before


def test_select_refuses_a_folder_mixing_runs(template, tiny_vlm, tmp_path):
    """Records of two strategies (or with and without fingerprints) in one folder: refused, naming two files."""
    recs = tmp_path / "recs"
    m = meta_of(template)
    craft_record(recs / "a.safetensors", template, dict(m, sample_id="a"))
    other = json.loads(json.dumps(m))
    other["sample_id"] = "b"
    other["fingerprint"]["strategy"]["maskout"] = [[1, 0]]
    craft_record(recs / "b.safetensors", template, other)
    code, msg, _ = run(tiny_vlm, tmp_path / "out", "stage=select", f"attention_dir={recs}")
    assert code == 2 and "a.safetensors" in msg and "b.safetensors" in msg and "strategy.maskout" in msg, msg
    old = dict(m, sample_id="b", fingerprint={})
    craft_record(recs / "b.safetensors", template, old)
    code, msg, _ = run(tiny_vlm, tmp_path / "out", "stage=select", f"attention_dir={recs}")
    assert code == 2 and "no fingerprint" in msg and "b.safetensors" in msg, msg
    craft_record(recs / "a.safetensors", template, dict(m, sample_id="a", fingerprint={}))  # none has one: accepted
    code, msg, _ = run(tiny_vlm, tmp_path / "out", "stage=select", f"attention_dir={recs}", "selection.exclude_layers=[]")
    assert code == 0, msg
