"""The run explorer's data and page (no browser here; tests/test_report_browser.py drives Chromium)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from report_data import geometry_run, make_record, page_data, peaked, white_image
from report_data import pad_layout as synthetic_pad

from lab.analysis.per_sample import analyze_sample
from lab.records.record import AttentionRecord, record_path
from lab.report import explorer_html, show, write_explorer, write_run_index
from lab.report.encode import dequantize_maps, float16_table, quantize_maps
from lab.report.rundata import build_run_data
from lab.analysis.record_numbers import analysis_row
from lab.analysis.token_maps import record_token_maps, token_view
from utils.errors import UserError


def _f16(t):
    import base64

    key, dt = ("f16", "<f2") if "f16" in t else ("f32", "<f4")
    return np.frombuffer(base64.b64decode(t[key]), dtype=dt).astype(np.float64).reshape(t["shape"])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 40)),
              elements=st.floats(0, 1e3, allow_nan=False, allow_subnormal=False)))
def test_8bit_maps_within_half_a_step_of_the_truth(a):
    back = dequantize_maps(quantize_maps(a))
    scale = a.max(axis=-1, keepdims=True)
    assert back.shape == a.shape
    # half a quantisation step, plus the float32 rounding of the stored scale (found by hypothesis: 1.5 of 1.8)
    assert np.all(np.abs(back - a) <= scale / 510 + scale * 2.0 ** -23 + 1e-12)
    assert np.all(back[scale[:, 0] == 0] == 0)


def test_float16_tables_keep_nonfinite_values():
    v = np.array([[0.123456, np.inf], [np.nan, -2.5]])
    back = _f16(float16_table(v))
    assert np.isinf(back[0, 1]) and np.isnan(back[1, 0]) and back[1, 1] == -2.5
    assert abs(back[0, 0] - 0.123456) < 1e-4


def test_synthetic_run_geometry_and_per_sample_numbers(tmp_path):
    cases = geometry_run(tmp_path)
    data = build_run_data(tmp_path)
    S = data["samples"]
    assert [s["id"] for s in S] == sorted(cases) and len(data["layouts"]) == 3
    assert any("no heads.json" in n for n in data["notes"])  # heads chosen by the report, and it says so
    for s in S:
        lay, cell = cases[s["id"]]
        grids = data["layouts"][s["layout"]]
        assert [g["name"] for g in grids] == [g.name for g in lay.grids]
        assert [g["box"] for g in grids] == [list(g.box) for g in lay.grids]
        rec = AttentionRecord.load(record_path(tmp_path, s["id"]))
        ana = analyze_sample(rec.image_attention[0], rec.layout, exclude_layers=[])
        assert np.allclose(_f16(s["s_img"]), ana.s_img, rtol=1e-3)
        fin = np.isfinite(ana.entropy)
        assert np.allclose(_f16(s["entropy"])[fin], ana.entropy[fin], rtol=1e-3, atol=1e-3)
        assert s["maps"]["level"] == "full" and s["maps"]["shape"] == list(rec.image_attention.shape)
        assert np.allclose(dequantize_maps(s["maps"]), rec.image_attention, atol=rec.image_attention.max() / 500)
        comb = dequantize_maps(s["combined"])[0]
        assert comb.max() == pytest.approx(1.0, abs=1e-6) and comb.min() >= 0  # normalised to [0, 1]
        g = lay.grid()
        assert int(np.argmax(comb)) == cell[0] * g.cols + cell[1]  # on the analysed grid, row-major
        assert s["gt_box"] == [10.0, 10.0, 20.0, 20.0] and 0.0 <= s["iou"] <= 1.0


def test_caps_are_applied_and_said(tmp_path):
    img = white_image(tmp_path / "w.png", 40, 40)
    lay = synthetic_pad(40, 40)
    for i in range(5):
        make_record(f"s{i}", img, lay, peaked(lay, (i % 4, 1), seed=i)).save(record_path(tmp_path, f"s{i}"))
    cfg = {"report": {"max_samples": 3, "map_budget_mb": 2 * 6 * 16 / 1e6, "image_side": 32}, "top_k": 2}
    data = build_run_data(tmp_path, cfg)
    assert len(data["samples"]) == 3 and data["summary"]["records"] == 5
    assert [s["maps"]["level"] for s in data["samples"]] == ["full", "full", "selected"]
    assert data["samples"][2]["maps"]["shape"] == [1, 2, 1, 16]
    notes = " ".join(data["notes"])
    assert "3 of 5 samples listed (report.max_samples=3)" in notes and "report.map_budget_mb" in notes


def test_page_is_self_contained_and_survives_hostile_text(tmp_path):
    img = white_image(tmp_path / "w.png", 30, 20)
    lay = synthetic_pad(30, 20)
    evil = 'a </script><script>window.pwned=1</script> "quoted" & <b>'
    make_record("x", img, lay, peaked(lay, (1, 1)), query=evil).save(record_path(tmp_path, "x"))
    html = (write_explorer(tmp_path)).read_text(encoding="utf-8")
    assert html.count("</script>") == 2  # the data block and the code, nothing from the prompt
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in html
    assert page_data(html)["samples"][0]["prompt"] == evil
    for attr in ("src=", "<link rel=\"stylesheet\"", "@import", "fetch(", "XMLHttpRequest"):
        assert attr not in html.replace('<link rel="icon" href="data:,">', ""), attr


def test_failures_run_config_and_the_call_signature(tmp_path):
    img = white_image(tmp_path / "w.png", 30, 20)
    lay = synthetic_pad(30, 20)
    make_record("ok1", img, lay, peaked(lay, (1, 1))).save(record_path(tmp_path, "ok1"))
    lines = [{"id": "bad", "line": 2, "status": "failed", "reason": "image not found: nope.png"},
             {"id": "retry", "line": 3, "status": "failed", "reason": "prompt too long"},
             {"id": "retry", "line": 3, "status": "ok", "record": "x"}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    (tmp_path / "metrics.json").write_text("{torn")
    write_run_index(tmp_path)
    write_run_index(tmp_path, cfg={"stage": "batch", "top_k": 1, "selection": {"k": 2}})
    write_run_index(tmp_path, cfg={"stage": "evaluate", "top_k": 1})
    with pytest.raises(TypeError):  # issue 30.5: the unused `result` is gone
        write_run_index(tmp_path, {"anything": 1})
    data = page_data((tmp_path / "index.html").read_text(encoding="utf-8"))
    assert data["failures"] == [{"id": "bad", "line": 2, "reason": "image not found: nope.png"}]
    assert data["metrics"] is None and any(n.startswith("metrics.json is not readable JSON") for n in data["notes"])
    assert list(data["configs"]) == ["stage=batch", "stage=evaluate"]
    assert json.loads((tmp_path / "run_config.json").read_text())["stage=batch"]["selection"]["k"] == 2


@pytest.mark.parametrize("positions, query_row, expect", [([29], None, 0), ([5, 29, 31], None, 1), ([3, 4], None, 0),
                                                           ([29, 30, 31], 2, 2), ([29, 30, 31], -1, 2)])
def test_the_analysed_row_follows_the_stages_rule(positions, query_row, expect):
    """One rule (lab.analysis.record_numbers.analysis_row) for the page and the stages."""
    from utils.settings.declarations import GroundingConfig

    img_lay = synthetic_pad(20, 20)
    rec = make_record("r", "none.png", img_lay, peaked(img_lay, (0, 0), rows=len(positions)))
    rec.meta.query_positions = positions
    assert analysis_row(rec, GroundingConfig(query_row=query_row)) == expect


def test_the_default_run_page_agrees_with_its_files(toy_run):
    html = (toy_run / "index.html").read_text(encoding="utf-8")
    data = page_data(html)
    heads = json.loads((toy_run / "heads.json").read_text())
    metrics = json.loads((toy_run / "metrics.json").read_text())
    assert data["heads"]["selected"] == heads["heads"]
    assert len(data["samples"]) == 16 and data["grid_mean"]["source"] == "heads.csv"
    assert not [n for n in data["notes"] if "do not add up" in n]
    # each sample's chosen heads add up to heads.csv's frequencies
    freq = np.zeros(16, int)
    for s in data["samples"]:
        for i in s["chosen"]:
            freq[i] += 1
    assert np.array_equal(freq, _f16(data["grid_mean"]["frequency"]).ravel().astype(int))
    # the per-sample boxes are evaluate's: their IoUs give metrics.json's numbers
    ious = np.array([s["iou"] for s in data["samples"]])
    assert ious.mean() == pytest.approx(metrics["selected_heads"]["miou"], abs=1e-12)
    assert (ious >= 0.5).mean() == pytest.approx(metrics["selected_heads"]["acc@0.5"])
    assert np.mean([s["hit"] for s in data["samples"]]) == pytest.approx(metrics["selected_heads"]["pointing"])
    assert data["metrics"] == metrics
    assert list(data["configs"]) == ["stage=batch", "stage=evaluate"]


def test_token_maps_come_from_lab_tokens(toy_tokens_run):
    data = page_data((toy_tokens_run / "index.html").read_text(encoding="utf-8"))
    s = data["samples"][0]
    rec = AttentionRecord.load(record_path(toy_tokens_run, s["id"]))
    assert s["query_mode"] == "generated" and s["row_labels"] == rec.meta.generated_tokens[: rec.image_attention.shape[0]]
    assert len(s["row_labels"]) > 1 and s["maps"]["level"] == "full"
    want = record_token_maps(rec)
    assert np.allclose(dequantize_maps(s["tokens"]["all"]), want, atol=want.max() / 500)
    pairs = [(h["layer"], h["head"]) for h in data["heads"]["selected"]]
    want_sel = record_token_maps(rec, pairs=pairs)
    assert np.allclose(dequantize_maps(s["tokens"]["selected"]), want_sel, atol=want_sel.max() / 500)
    # the slider's VLM-Visualizer sources are mode=tokens' numbers (toy: token grid = patch grid, row-major)
    view = token_view(rec, weighting="vlm_visualizer", vision="vlm_visualizer")
    assert np.allclose(dequantize_maps(s["tokens"]["weighted"]), view.values, atol=view.values.max() / 500)
    flat = view.image_maps.reshape(view.image_maps.shape[0], -1)  # (T, rows_p * cols_p)
    assert np.allclose(dequantize_maps(s["tokens"]["vision"]), flat, atol=flat.max() / 500)


class _FakeDisplay:
    def __init__(self):
        self.shown = []


def test_show_renders_inline_and_returns_the_page(toy_run, monkeypatch):
    fake = _FakeDisplay()
    ipy = types.ModuleType("IPython")
    disp = types.ModuleType("IPython.display")
    disp.HTML = lambda s: ("HTML", s)
    disp.display = lambda obj: fake.shown.append(obj)
    ipy.display = disp
    monkeypatch.setitem(sys.modules, "IPython", ipy)
    monkeypatch.setitem(sys.modules, "IPython.display", disp)
    page = show(toy_run)
    assert page.startswith("<!DOCTYPE html>") and len(page_data(page)["samples"]) == 16
    assert page_data(page)["files"] == []  # relative links mean nothing inside a notebook
    (kind, frame), = fake.shown
    assert kind == "HTML" and frame.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in frame
    rec_file = toy_run / "attention" / "toy_0003.safetensors"
    one = page_data(show(rec_file, display=False))
    assert [s["id"] for s in one["samples"]] == ["toy_0003"]
    assert page_data(show(AttentionRecord.load(rec_file), display=False))["samples"][0]["id"] == "toy_0003"
    with pytest.raises(UserError, match="neither a run folder nor an attention record"):
        show(toy_run / "heads.json", display=False)


def test_explorer_html_without_a_folder(tmp_path):
    img = white_image(tmp_path / "w.png", 30, 20)
    lay = synthetic_pad(30, 20)
    rec = make_record("solo", img, lay, peaked(lay, (2, 1)))
    data = page_data(explorer_html(None, records=[rec]))
    assert data["summary"]["records"] == 1 and data["heads"]["selected"] and data["samples"][0]["combined"]


UNSAFE = ("<", ">", "&", "\u2028", "\u2029")
_pieces = st.sampled_from(list("<>&!-/ab \u2028\u2029\"\\") + ["<!--", "<script", "</script>", "-->", "\U0001f600"])
_text = st.lists(_pieces, max_size=8).map("".join) | st.text()
_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
                            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_text, kids, max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(_json_values)
def test_embedded_json_round_trips_and_holds_no_raw_markup_characters(value):
    """Issue 29.1: whatever a row's text holds, the page's data block has none of `<`, `>`, `&`,
    U+2028, U+2029 raw (so `<!-- <script>` cannot change the HTML parser's state) and reads back equal."""
    from lab.report.page import script_json

    blob = script_json({"samples": [{"id": value, "prompt": value}], value if isinstance(value, str) else "k": 1})
    assert not [c for c in UNSAFE if c in blob]
    back = json.loads(blob)
    assert back["samples"] == [{"id": value, "prompt": value}]


def test_write_run_index_leaves_any_stage_s_page_true(toy_run, tmp_path, capsys):
    """Issue 31.2: the one function a stage calls (stage=select included): after heads.json changed
    under metrics.json it prints the stale-table line and the page marks the table; in a folder with
    records and heads.json only, it writes a page."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    heads = json.loads((run / "heads.json").read_text())
    heads["heads"] = heads["heads"][:2]  # what stage=select top_k=2 leaves
    (run / "heads.json").write_text(json.dumps(heads))
    out = write_run_index(run, cfg={"stage": "select", "top_k": 2})
    printed = capsys.readouterr().out
    assert "warning: index.html: the Grounding table (metrics.json, stage=evaluate) is stale" in printed
    data = page_data(out.read_text(encoding="utf-8"))
    assert list(data["stale"]) == ["metrics"] and len(data["heads"]["selected"]) == 2
    assert list(data["configs"])[-1] == "stage=select"
    fresh = tmp_path / "fresh"
    shutil.copytree(toy_run / "attention", fresh / "attention")
    shutil.copy(run / "heads.json", fresh / "heads.json")
    data = page_data(write_run_index(fresh, cfg={"stage": "select", "top_k": 2}).read_text(encoding="utf-8"))
    assert len(data["samples"]) == 16 and data["stale"] == {} and data["metrics"] is None
