"""Edges of the data files (issue 23): ground-truth boxes that are not numbers or not in the image,
JSONL encodings and compression, streaming selection of a few rows of a big file. Each case ends in a
right result or one line with exit 2."""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import lzma
import math
import re

import pytest
from edges_common import EXAMPLES, ROOT, entry, one_error_line, run, scene, write_jsonl
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lab.analysis.gt_boxes import clip_to_image
from lab.analysis.grounding import iou
from utils.data import load_rows, load_selection, select_rows
from utils.errors import UserError
from utils.row_values import bbox_problem

FAST = settings(max_examples=60 * EXAMPLES, deadline=None)
NUM = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))


# ---- 1. ground-truth boxes ------------------------------------------------------------------------
@FAST
@given(a=st.lists(NUM, min_size=4, max_size=4), b=st.lists(NUM, min_size=4, max_size=4))
@example(a=[0.0, 127, 1, 1.05], b=[0.0, 127, 1, 1.05])  # (127 + 1.05) - 127 != 1.05: IoU was 1 + 2e-14
def test_iou_never_depends_on_argument_order_and_refuses_non_finite(a, b):
    finite = all(math.isfinite(float(v)) for v in a + b)
    if not finite:
        for x, y in ((a, b), (b, a)):
            with pytest.raises(ValueError, match="non-finite"):
                iou(x, y)
        return
    v = iou(a, b)
    assert v == iou(b, a) and 0.0 <= v <= 1.0 and not math.isnan(v)


@FAST
@given(box=st.lists(NUM, min_size=4, max_size=4))
def test_bbox_values_refused_unless_finite_with_a_finite_far_corner(box):
    vals = [float(v) for v in box]
    ok = all(map(math.isfinite, vals)) and math.isfinite(vals[0] + vals[2]) and math.isfinite(vals[1] + vals[3])
    assert (bbox_problem(box) is None) == ok


@FAST
@given(box=st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(1e-3, 1e6), st.floats(1e-3, 1e6)),
       size=st.tuples(st.integers(1, 4000), st.integers(1, 4000)))
def test_clipped_box_lies_in_the_image_and_none_iff_it_misses(box, size):
    x, y, w, h = box
    W, H = size
    out, changed = clip_to_image(box, size)
    misses = x >= W or y >= H or x + w <= 0 or y + h <= 0
    if out is None:
        assert misses or min(x + w, W) - max(x, 0) <= 0 or min(y + h, H) - max(y, 0) <= 0
        return
    assert not misses
    cx, cy, cw, ch = out
    assert 0 <= cx and 0 <= cy and cw > 0 and ch > 0 and cx + cw <= W + 1e-6 and cy + ch <= H + 1e-6
    assert cw <= w + 1e-6 and ch <= h + 1e-6
    assert changed == (list(out) != [x, y, w, h])


@pytest.mark.parametrize("text", ["[NaN, 64, 27, 27]", "[18, 64, Infinity, 27]", "[0, 0, 1e400, 5]",
                                  "[-Infinity, 0, 5, 5]", "[0, 0, 1e308, 1e308]"])
def test_non_finite_bbox_refused_at_validation_naming_file_line(text, tmp_path):
    p = tmp_path / "d.jsonl"
    good = '{"id": "a", "prompt": "p", "image_path": "x.png", "bbox": [1, 2, 3, 4]}'
    p.write_text(good + "\n" + good.replace('"a"', '"b"') + "\n"
                 + '{"id": "c", "prompt": "p", "image_path": "x.png", "bbox": ' + text + "}\n")
    if text == "[0, 0, 1e308, 1e308]":  # finite: accepted here, clipped to the image when scored
        assert load_rows(p)[2].bbox == [0.0, 0.0, 1e308, 1e308]
        return
    with pytest.raises(UserError, match=rf"{p}:3: \"bbox\" .*(non-finite|not a finite)"):
        load_rows(p)


def test_boxes_outside_the_image_fail_their_row_and_the_others_are_scored(tiny_vlm, tmp_path):
    scene(64, 48, seed=0).save(tmp_path / "img.png")
    boxes = {"in": [10, 10, 20, 20], "partly": [-10, 30, 30, 40], "outside": [5000, 5000, 20, 20],
             "negative": [-50, -50, 10, 10]}
    rows = [{"id": k, "prompt": "what color is the square ?", "image_path": "img.png", "bbox": b} for k, b in boxes.items()]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "out"
    code, msg, _ = run(tiny_vlm, out, "stage=evaluate", f"data_file={data}", "max_new_tokens=0",
                       "selection.exclude_layers=[]")
    assert code == 0, msg
    m = json.loads((out / "metrics.json").read_text())
    assert m["selected_heads"]["n"] == 2 and m["all_heads_mean"]["n"] == 2
    assert {f["id"] for f in m["boxes_outside_image"]} == {"outside", "negative"}
    assert m["boxes_clipped"] == {"count": 1, "ids": ["partly"]} and m["failed"] == 2
    last = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        d = json.loads(line)
        last[d["id"]] = d
    assert last["outside"]["status"] == "failed" and "does not intersect the 64x48 image" in last["outside"]["reason"]
    assert last["in"]["status"] == "ok"


# ---- 4. encodings and compression ----------------------------------------------------------------
ROWS = [{"id": f"r{i}", "prompt": "what is près du bord ? 东", "image_path": "x.png"} for i in range(4)]
TEXT = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS)
FORMS = {
    "utf8": (lambda t: t.encode(), None),
    "utf8-bom": (lambda t: codecs.BOM_UTF8 + t.encode(), None),
    "crlf": (lambda t: t.replace("\n", "\r\n").encode(), None),
    "gzip": (lambda t: gzip.compress(t.encode()), r":1: the file is gzip-compressed"),
    "bzip2": (lambda t: bz2.compress(t.encode()), r":1: the file is bzip2-compressed"),
    "xz": (lambda t: lzma.compress(t.encode()), r":1: the file is xz-compressed"),
    "utf16": (lambda t: t.encode("utf-16"), r":1: the file is UTF-16 text"),
    "utf16-be-no-bom": (lambda t: t.encode("utf-16-be"), r":1: contains a NUL byte"),
    "utf32": (lambda t: t.encode("utf-32"), r":1: the file is UTF-32 text"),
    "latin1": (lambda t: t.replace("东", "").encode("latin-1"), r":1: not UTF-8 text \(byte 0xe8 at column"),
    "deep": (lambda t: t.encode() + b"[" * 100_000 + b"]" * 100_000 + b"\n", r":5: JSON nested too deeply"),
    "dup-key": (lambda t: t.replace('"prompt"', '"id": "z", "prompt"', 1).encode(), r':1: duplicate key "id"'),
    "bom-inside": (lambda t: (t + t.replace("r", "s")).encode().replace(b'{"id": "s0"', codecs.BOM_UTF8 + b'{"id": "s0"'),
                   r":5: not valid JSON"),
}


@FAST
@given(form=st.sampled_from(sorted(FORMS)), suffix=st.sampled_from([".jsonl", ".jsonl.gz", ".txt"]))
def test_any_encoding_or_compression_reads_right_or_fails_in_one_line(form, suffix, tmp_path_factory):
    p = tmp_path_factory.mktemp("enc") / f"d{suffix}"
    make, err = FORMS[form]
    p.write_bytes(make(TEXT))
    if err is None:
        assert [r.id for r in load_rows(p)] == [r["id"] for r in ROWS]
        return
    with pytest.raises(UserError) as e:
        load_rows(p)
    assert re.search(re.escape(str(p)) + err, str(e.value)), str(e.value)


def test_gzip_data_file_through_the_entry_point_is_one_line(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(gzip.compress((ROOT / "examples/toy/toy_small.jsonl").read_bytes()))
    r = entry("stage=batch", f"data_file={p}", f"output_dir={tmp_path / 'out'}")
    assert r.returncode == 2
    assert one_error_line(r.stderr) == (f"error: {p}:1: the file is gzip-compressed, not UTF-8 JSONL text; "
                                        "decompress it first (gunzip -k FILE)")


# ---- 7. streaming selection = the old select_rows, memory bounded ----------------------------------
@FAST
@given(n=st.integers(1, 30), start=st.integers(0, 35), length=st.one_of(st.none(), st.integers(0, 35)),
       shard=st.one_of(st.none(), st.integers(1, 4).flatmap(lambda k: st.integers(0, k - 1).map(lambda i: f"{i}/{k}"))))
def test_streaming_selection_equals_select_rows_of_all_rows(n, start, length, shard, tmp_path_factory):
    p = write_jsonl(tmp_path_factory.mktemp("sel") / "d.jsonl",
                    [{"id": f"r{i}", "prompt": "p", "image_path": "x.png"} for i in range(n)])
    end = None if length is None else start + length
    picked = load_selection(p, (), start, end, shard, progress=False)
    want = select_rows(load_rows(p), start, end, shard)
    assert [r.id for r in picked.rows] == [r.id for r in want] and picked.total == n
    assert picked.in_range == len(load_rows(p)[start:end])


def test_id_clashes_are_found_outside_the_selection_too(tmp_path):
    rows = [{"id": i, "prompt": "p", "image_path": "x.png"} for i in ("a", "b", "c", "B")]
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(UserError, match=r'd.jsonl:4: id "B" and .*d.jsonl:2: id "b" would share'):
        load_selection(p, end_index=1)
    p2 = write_jsonl(tmp_path / "e.jsonl", rows[:3] + [rows[0]])
    with pytest.raises(UserError, match=r'e.jsonl:4: duplicate id "a" \(first on line 1\)'):
        load_selection(p2, end_index=1)


def test_selecting_a_few_rows_of_a_big_file_keeps_memory_bounded(tmp_path):
    import tracemalloc

    p = tmp_path / "big.jsonl"
    with open(p, "w") as f:
        for i in range(40_000):
            f.write(json.dumps({"id": f"sample_{i:07d}", "prompt": "what shape is the yellow one?",
                                "image_path": "x.png", "bbox": [1, 2, 3, 4]}) + "\n")
    tracemalloc.start()
    try:
        rows = load_selection(p, end_index=8, progress=False).rows
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(rows) == 8
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB for 40k rows"  # all Rows kept: ~40 MiB


def test_a_slow_read_shows_a_progress_bar(tmp_path, monkeypatch, capsys):
    import utils.jsonl as J

    monkeypatch.setattr(J, "PROGRESS_DELAY_S", 0.0)
    p = write_jsonl(tmp_path / "d.jsonl", [{"id": f"r{i}", "prompt": "p", "image_path": "x.png"} for i in range(5)])
    load_selection(p)
    assert "reading d.jsonl" in capsys.readouterr().err


def test_group_is_a_string_or_absent(tmp_path):
    """"group": 5 is refused like an object (one line naming the row); a row without one is in no group."""
    from utils.data import load_rows

    img = tmp_path / "a.png"
    scene().save(img)
    base = {"prompt": "q", "image_path": str(img)}
    for bad in (5, 1.5, True, {"a": 1}, [1]):
        path = write_jsonl(tmp_path / "bad.jsonl", [{**base, "id": "a"}, {**base, "id": "b", "group": bad}])
        with pytest.raises(UserError, match=r'jsonl:2: "group" must be a string'):
            load_rows(path)
    rows = load_rows(write_jsonl(tmp_path / "ok.jsonl", [{**base, "id": "a", "group": "cats"}, {**base, "id": "b"},
                                                         {**base, "id": "c", "group": None}]))
    assert [r.group for r in rows] == ["cats", None, None]


def test_rows_without_a_group_are_in_no_group():
    from lab.analysis.grounding import GroundingMetrics
    from lab.stages.evaluate import _by_group

    m = GroundingMetrics()
    for i in range(3):
        m.add((0.0, 0.0, 4.0, 4.0), (0.0, 0.0, 4.0, 4.0), True)
    by = _by_group(["cats", None, "cats"], m, m, [m])
    assert list(by) == ["cats"] and by["cats"]["selected_heads"]["n"] == 2
