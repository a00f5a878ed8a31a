"""Batches at their edges: adversarial JSONL rows and ids, resume after changes, a torn manifest,
disk full, a second process, temp files, kill -9. Invariants checked every time (edges_common):
exit status 0 or 2 and never a traceback, no file outside output_dir, every row accounted for in
the manifest, no record overwritten or lost."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from edges_common import (EXAMPLES, ROOT, bomb_png, check_batch_invariants, files_under, no_hang,
                          run, scene, write_jsonl)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.records.record import AttentionRecord
from utils.io import host_tag


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Image files of every kind a JSONL row may point at."""
    from PIL import Image

    d = tmp_path_factory.mktemp("pool")
    for i in range(3):
        scene(64, 48, seed=i).save(d / f"ok{i}.png")
    scene(1, 1).save(d / "one.png")
    scene(400, 4).save(d / "wide.png")
    g = np.asarray(scene(40, 30).convert("L")).astype(np.uint16) * 257
    Image.fromarray(g).save(d / "g16.png")
    ex = Image.Exif()
    ex[0x0112] = 6
    scene(30, 50).save(d / "exif6.jpg", exif=ex.tobytes())
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    bomb_png(d / "bomb.png")
    os.mkfifo(d / "fifo.png")
    (d / "folder.png").mkdir()
    return d


IMAGES = ["ok0.png", "ok1.png", "ok2.png", "one.png", "wide.png", "g16.png", "exif6.jpg", "corrupt.png", "bomb.png",
          "fifo.png", "folder.png", "missing.png"]
IDS = st.one_of(
    st.sampled_from(["a/b", "a_b", "a?b", ".", "..", "sample", "A", "a", "x" * 200 + "1", "x" * 200 + "2", "东" * 300,
                     "-x", "a~b", " ", "\n", "../../etc/passwd", "0", "a" * 5000]),
    st.text(min_size=1, max_size=40),
    st.integers(0, 10**6))


@st.composite
def jsonl_rows(draw):
    rows = []
    for _ in range(draw(st.integers(1, 5))):
        row: dict = {"id": draw(IDS), "prompt": draw(st.sampled_from(["what color is the square ?", "é ? 东", "x" * 300])),
                     "image_path": draw(st.sampled_from(IMAGES))}
        if draw(st.booleans()):
            row["bbox"] = draw(st.sampled_from([[1, 2, 10, 10], [0, 0, 0, 5], [1, 2, 3]]))
        if draw(st.booleans()):
            row["group"] = draw(st.sampled_from(["g1", "g2", 3]))
        if draw(st.integers(0, 9)) == 0:
            row = draw(st.sampled_from([{"id": "no prompt", "image_path": "ok0.png"}, ["not", "an", "object"], "{broken"]))
        rows.append(row)
    return rows


@settings(max_examples=20 * EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=jsonl_rows(), batch_size=st.integers(1, 3), figures=st.booleans(), whole=st.sampled_from([False, False, True]))
def test_any_jsonl_batch_finishes_and_accounts_for_every_row(rows, batch_size, figures, whole, pool, tiny_vlm,
                                                             tmp_path_factory):
    """whole=False runs as shard 0/1 (collection only, no selection figures): most examples stay fast."""
    base = tmp_path_factory.mktemp("b")
    data = write_jsonl(pool / f"d_{base.name}.jsonl", rows)
    out = base / "out"
    args = [f"data_file={data}", f"batch_size={batch_size}", "max_new_tokens=0", "selection.exclude_layers=[]",
            f"visualize_batch={str(figures).lower()}"] + ([] if whole else ["shard=0/1"])
    with no_hang(120):
        code, msg, _ = run(tiny_vlm, out, "stage=batch", *args)
    assert code in (0, 2), msg
    assert files_under(base) <= {"out"} | {f"out/{p}" for p in files_under(out)}  # nothing outside output_dir
    records = out / "attention"
    if not list(out.glob("manifest*.jsonl")):  # refused up front: one line naming the JSONL's file:line
        assert code == 2 and str(data) in msg, msg
        return
    valid = [r for r in rows if isinstance(r, dict) and "prompt" in r]
    status = check_batch_invariants(out, valid)
    before = {p.name: p.read_bytes() for p in records.glob("*.safetensors")}
    with no_hang(120):  # a resume: nothing collected twice, nothing lost or rewritten
        code2, msg2, _ = run(tiny_vlm, out, "stage=batch", *args)
    assert code2 in (0, 2), msg2
    assert {p.name: p.read_bytes() for p in records.glob("*.safetensors")} == before
    assert check_batch_invariants(out, valid).keys() == status.keys()


@settings(max_examples=300 * EXAMPLES, deadline=None)
@given(ids=st.lists(st.one_of(IDS, st.text(min_size=1, max_size=400), st.characters().map(lambda c: c * 300)),
                    min_size=2, max_size=8, unique_by=str))
def test_file_stem_is_a_safe_byte_limited_name_and_distinct_per_id(ids):
    from utils.data import STEM_MAX_BYTES, file_stem

    stems = [file_stem(i) for i in ids]
    for i, s in zip(ids, stems):
        b = s.encode("utf-8")  # valid UTF-8: cut on a character boundary
        assert 0 < len(b) <= STEM_MAX_BYTES and len(f"{s}.safetensors".encode()) <= 255
        assert "/" not in s and "\0" not in s and not s.startswith((".", "-")) and s not in (".", "..")
        assert file_stem(i) == s  # deterministic
    assert len(set(stems)) == len(stems), list(zip(ids, stems))


def test_ids_that_used_to_share_a_file_get_their_own(pool, tiny_vlm, tmp_path):
    """The issue's ids: a/b, a_b, a?b, ., .., sample, two 300-char ids sharing 200 chars, 300 CJK chars."""
    ids = ["a/b", "a_b", "a?b", ".", "..", "sample", "x" * 200 + "y" * 100, "x" * 200 + "z" * 100, "东" * 300]
    rows = [{"id": i, "prompt": "what color is the square ?", "image_path": "ok0.png", "bbox": [1, 2, 10, 10]} for i in ids]
    data = write_jsonl(pool / "ids.jsonl", rows)
    code, msg, _ = run(tiny_vlm, tmp_path, "stage=evaluate", f"data_file={data}", "max_new_tokens=0",
                       "selection.exclude_layers=[]")
    assert code == 0, msg
    status = check_batch_invariants(tmp_path, rows)
    assert len({m["file"] for m in status.values()}) == len(ids) == len(list((tmp_path / "attention").glob("*.safetensors")))
    assert all(len(f"{m['file']}.safetensors".encode()) <= 255 for m in status.values())
    assert json.loads((tmp_path / "metrics.json").read_text())["selected_heads"]["n"] == len(ids)


def test_ids_that_would_share_a_file_are_refused_up_front(pool, tiny_vlm, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": i, "prompt": "p", "image_path": "x.png"} for i in ("Cat", "dog", "cat")])
    code, msg, loader = run(tiny_vlm, tmp_path / "out", "stage=batch", f"data_file={data}")
    assert code == 2 and f"{data}:3" in msg and f"{data}:1" in msg and "share the record file" in msg
    assert loader.calls == 0 and not (tmp_path / "out" / "attention").exists()


# ---- resume against records made otherwise -------------------------------------------------------
@pytest.fixture()
def small(pool, tmp_path):
    rows = [{"id": f"s{i}", "prompt": "what color is the square ?", "image_path": str(pool / f"ok{i}.png")} for i in range(3)]
    return write_jsonl(tmp_path / "d.jsonl", rows), rows


def test_resume_refuses_records_of_another_strategy_or_length(small, tiny_vlm, tmp_path):
    data, rows = small
    out = tmp_path / "out"
    assert run(tiny_vlm, out, f"data_file={data}", "max_new_tokens=0", "selection.exclude_layers=[]")[0] == 0
    before = {p.name: p.read_bytes() for p in (out / "attention").glob("*.safetensors")}
    for extra, needle in ((["strategy.maskout=[[1,0]]"], "strategy.maskout: [] there, [[1, 0]] now"),
                          (["max_new_tokens=2"], "max_new_tokens: 0 there, 2 now")):
        args = [f"data_file={data}", "selection.exclude_layers=[]", *extra] + ([] if "max_new" in extra[0] else ["max_new_tokens=0"])
        code, msg, loader = run(tiny_vlm, out, *args)
        assert code == 2 and needle in msg and "s0.safetensors" in msg and "overwrite=true" in msg, msg
        assert loader.calls == 0  # before the model loads
    assert {p.name: p.read_bytes() for p in (out / "attention").glob("*.safetensors")} == before
    code, msg, res = run(tiny_vlm, out, f"data_file={data}", "selection.exclude_layers=[]", "strategy.maskout=[[1,0]]",
                         "max_new_tokens=0", "overwrite=true")
    assert code == 0 and res["collect"]["ok"] == 3, msg
    assert AttentionRecord.load(out / "attention" / "s0.safetensors").meta.fingerprint["strategy"]["maskout"] == [[1, 0]]


def test_resume_refuses_records_of_another_model(small, tiny_vlm, tiny_gqa_ckpt, tmp_path):
    from llava.model import load_vlm

    data, _ = small
    out = tmp_path / "out"
    assert run(tiny_vlm, out, f"data_file={data}", "max_new_tokens=0", "selection.exclude_layers=[]")[0] == 0
    other = load_vlm(str(tiny_gqa_ckpt), device="cpu", dtype="float32")
    code, msg, _ = run(other, out, f"data_file={data}", "max_new_tokens=0", "selection.exclude_layers=[]")
    assert code == 2 and "was made by another model (model.weights:" in msg and "s0.safetensors" in msg, msg


def test_changed_image_or_old_record_is_collected_again_and_said(small, pool, tiny_vlm, tmp_path):
    data, rows = small
    out = tmp_path / "out"
    args = [f"data_file={data}", "max_new_tokens=0", "selection.exclude_layers=[]"]
    assert run(tiny_vlm, out, *args)[0] == 0
    img = tmp_path / "changed.png"
    scene(64, 48, seed=9).save(img)
    rows[1]["image_path"] = str(img)
    write_jsonl(data, rows)
    old = AttentionRecord.load(out / "attention" / "s2.safetensors")  # pretend s2 was made by an older version
    old.meta.fingerprint = {}
    old.save(out / "attention" / "s2.safetensors")
    code, msg, res = run(tiny_vlm, out, *args)
    assert code == 0 and res["collect"]["ok"] == 2 and res["collect"]["collected_again"] == 2, msg
    status = check_batch_invariants(out, rows)
    assert "image changed" in status["s1"]["collected_again"] and "no fingerprint" in status["s2"]["collected_again"]
    assert {p.name for p in (out / "attention" / "replaced").iterdir()} == {"s1.safetensors", "s2.safetensors"}


def test_fifo_where_a_record_should_be_is_set_aside(small, tiny_vlm, tmp_path):
    data, rows = small
    out = tmp_path / "out"
    (out / "attention").mkdir(parents=True)
    os.mkfifo(out / "attention" / "s0.safetensors")
    with no_hang(60):
        code, msg, res = run(tiny_vlm, out, f"data_file={data}", "max_new_tokens=0", "selection.exclude_layers=[]")
    assert code == 0 and res["collect"]["ok"] == 3, msg
    check_batch_invariants(out, rows)


# ---- manifest, disk full, concurrency, temp files --------------------------------------------------
def test_torn_manifest_line_is_repaired_and_no_row_is_lost(small, tiny_vlm, tmp_path):
    data, rows = small
    out = tmp_path / "out"
    args = [f"data_file={data}", "max_new_tokens=0", "selection.exclude_layers=[]"]
    assert run(tiny_vlm, out, *args)[0] == 0
    man = out / "manifest.jsonl"
    lines = man.read_text().splitlines(keepends=True)
    man.write_text("".join(lines[:-1]) + lines[-1][:25])  # the last row's line torn mid-write
    (out / "attention" / "s1.safetensors").unlink()  # and one record to collect again
    code, msg, res = run(tiny_vlm, out, *args)
    assert code == 0 and res["collect"]["ok"] == 1 and res["collect"]["skipped_existing"] == 2, msg
    check_batch_invariants(out, rows)
    text = man.read_text()
    assert text.endswith("\n") and lines[-1][:25] + "\n" in text  # the fragment stays one unreadable line


def test_disk_full_while_appending_to_the_manifest_then_resume(small, tiny_vlm, tmp_path, monkeypatch):
    import utils.io as io_mod

    data, rows = small
    out = tmp_path / "out"
    args = [f"data_file={data}", "max_new_tokens=0", "selection.exclude_layers=[]", "batch_size=1"]
    real_write, calls = os.write, []

    def full_disk(fd, data):  # the second manifest line: half of it reaches the disk, then ENOSPC
        calls.append(1)
        if len(calls) == 2:
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(io_mod.os, "write", full_disk)
    code, msg, _ = run(tiny_vlm, out, *args)
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in msg and "manifest.jsonl" in msg and "\n" not in msg, msg
    assert not (out / "manifest.jsonl").read_text().endswith("\n")  # torn
    code, msg, _ = run(tiny_vlm, out, *args)
    assert code == 0, msg
    check_batch_invariants(out, rows)


def test_disk_full_while_writing_a_record_then_resume(small, tiny_vlm, tmp_path, monkeypatch):
    import lab.records.record as records_mod

    data, rows = small
    out = tmp_path / "out"
    args = [f"data_file={data}", "max_new_tokens=0", "selection.exclude_layers=[]", "batch_size=1"]
    real, calls = records_mod.atomic_write_bytes, []

    def full_disk(path, data):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(records_mod, "atomic_write_bytes", full_disk)
    code, msg, _ = run(tiny_vlm, out, *args)
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in msg and "s1.safetensors" in msg and "resume" in msg, msg
    assert [p.name for p in (out / "attention").glob("*.safetensors")] == ["s0.safetensors"]
    code, msg, res = run(tiny_vlm, out, *args)
    assert code == 0 and res["collect"]["skipped_existing"] == 1, msg
    check_batch_invariants(out, rows)
    assert not list((out / "attention").glob(".*.tmp"))


def _cli(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.Popen([sys.executable, str(ROOT / "localization_heads_finder.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _big_jsonl(pool, path, n=48):
    return write_jsonl(path, [{"id": f"r{k}", "prompt": "what color is the square ?",
                               "image_path": str(pool / f"ok{k % 3}.png")} for k in range(n)])


def test_a_second_batch_on_the_same_output_dir_is_refused(pool, tiny_ckpt, tiny_vlm, tmp_path):
    data = _big_jsonl(pool, tmp_path / "big.jsonl", n=24)
    out = tmp_path / "out"
    model = [f"model.name_or_path={tiny_ckpt}", "model.builder=null", "model.name=t", "model.device=cpu"]
    first = _cli("stage=batch", f"data_file={data}", f"output_dir={out}", *model, "batch_size=1", "max_new_tokens=0",
                 "selection.exclude_layers=[]", cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / ".lock").exists() and (out / ".lock").stat().st_size):
        time.sleep(0.05)
    code, msg, loader = run(tiny_vlm, out, "stage=batch", f"data_file={data}", "max_new_tokens=0")
    assert code == 2 and f"pid {first.pid} on host" in msg and "in use by another run" in msg, msg
    assert loader.calls == 0
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    check_batch_invariants(out, [{"id": f"r{k}"} for k in range(24)])
    assert "collected 24 record(s), skipped 0 already on disk, 0 failed" in stdout


def test_temp_files_of_live_writers_survive_the_clean_up(tmp_path):
    from lab.runs.collection import clean_stale_temp_files

    folder = tmp_path / "attention"
    folder.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = host_tag()
    names = {"live": f".a.safetensors.{me}-{live.pid}.x1.tmp", "dead": f".b.safetensors.{me}-{dead.pid}.x2.tmp",
             "other_host": f".c.safetensors.ffffffff-{dead.pid}.x3.tmp", "old_format": ".d.safetensors.x4abc.tmp"}
    try:
        for n in names.values():
            (folder / n).write_bytes(b"partial")
        clean_stale_temp_files(folder, exclusive_since=None)  # a shard run: only provably dead writers
        assert {p.name for p in folder.iterdir()} == {names["live"], names["other_host"], names["old_format"]}
        clean_stale_temp_files(folder, exclusive_since=time.time() + 1)  # the only run: older than its lock
        assert {p.name for p in folder.iterdir()} == {names["live"]}
    finally:
        live.kill()
        live.wait()


def test_shards_share_a_folder_but_a_whole_run_waits(tmp_path):
    from utils.errors import UserError
    from utils.runlock import run_lock

    with run_lock(tmp_path, (0, 2)), run_lock(tmp_path, (1, 2)):
        with pytest.raises(UserError, match=f"pid {os.getpid()}.*shard 0/2"):
            with run_lock(tmp_path, None):
                pass
        with pytest.raises(UserError, match="in use by another run"):
            with run_lock(tmp_path, (1, 2)):
                pass
    with run_lock(tmp_path, None):
        pass


# ---- kill -9 at any moment, then resume: the same records and heads ---------------------------------
def _kill_and_resume(pool, tiny_ckpt, tmp_path, reference: Path, moment: int):
    data = _big_jsonl(pool, tmp_path / "big.jsonl", n=24)
    out = tmp_path / f"killed{moment}"
    args = ["stage=batch", f"data_file={data}", f"output_dir={out}", f"model.name_or_path={tiny_ckpt}", "model.builder=null",
            "model.name=t", "model.device=cpu", "batch_size=2", "max_new_tokens=0", "selection.exclude_layers=[]"]
    p = _cli(*args, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "attention").glob("*.safetensors"))) < moment:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    partial = len(list((out / "attention").glob("*.safetensors")))
    r = _cli(*args, cwd=tmp_path)
    stdout, stderr = r.communicate(timeout=300)
    assert r.returncode == 0, stderr[-2000:]
    if 0 < partial < 24:  # killed mid-run (not before the first record, not after the last): the resume says so
        assert "skipped" in stdout, stdout[-2000:]
    check_batch_invariants(out, [{"id": f"r{k}"} for k in range(24)])
    assert not list((out / "attention").glob(".*.tmp"))
    for f in (reference / "attention").glob("*.safetensors"):  # batch partners may differ after a resume: 1 ulp
        a, b = AttentionRecord.load(f), AttentionRecord.load(out / "attention" / f.name)
        assert np.allclose(a.image_attention, b.image_attention, rtol=0, atol=1e-6)
        assert a.meta.fingerprint == b.meta.fingerprint and a.meta.sample_id == b.meta.sample_id
    ref, got = (json.loads((d / "heads.json").read_text()) for d in (reference, out))
    assert [(h["layer"], h["head"], h["frequency"]) for h in ref["ranked"]] == \
        [(h["layer"], h["head"], h["frequency"]) for h in got["ranked"]]
    for h, g in zip(ref["ranked"], got["ranked"]):
        assert g["mean_s_img"] == pytest.approx(h["mean_s_img"], abs=1e-6)


@pytest.fixture(scope="module")
def reference(pool, tiny_ckpt, tmp_path_factory):
    """The same batch, never interrupted (a subprocess too: the same threads, the same numbers)."""
    d = tmp_path_factory.mktemp("ref")
    data = _big_jsonl(pool, d / "big.jsonl", n=24)
    r = _cli("stage=batch", f"data_file={data}", f"output_dir={d / 'out'}", f"model.name_or_path={tiny_ckpt}",
             "model.builder=null", "model.name=t", "model.device=cpu", "batch_size=2", "max_new_tokens=0",
             "selection.exclude_layers=[]", cwd=d)
    _, stderr = r.communicate(timeout=300)
    assert r.returncode == 0, stderr[-2000:]
    return d / "out"


def test_kill_9_then_resume_gives_the_same_records_and_heads(pool, tiny_ckpt, reference, tmp_path):
    _kill_and_resume(pool, tiny_ckpt, tmp_path, reference, moment=7)


@pytest.mark.slow
@pytest.mark.parametrize("moment", [1, 3, 10, 16, 23])
def test_kill_9_at_many_moments(pool, tiny_ckpt, reference, tmp_path, moment):
    _kill_and_resume(pool, tiny_ckpt, tmp_path, reference, moment)
