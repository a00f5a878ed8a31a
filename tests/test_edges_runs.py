"""Edges of the runs (issue 23): records whose names lie, folders still being written or partly
collected, multirun sweeps sharing a folder, output_dir that cannot be a folder, Ctrl-C, late checks.
Each case ends in a right result or one line with exit 2 (130 for Ctrl-C)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edges_common import EXAMPLES, ROOT, craft_record, entry, one_error_line, run, scene, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.records.record import AttentionRecord
from lab.capture.station import Strategy, collect
from utils.data import load_rows
from utils.errors import UserError
from utils.preflight import multirun_problem
from utils.runlock import RunLock

FAST = settings(max_examples=60 * EXAMPLES, deadline=None)
SLOW = settings(max_examples=6 * EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---- 2. records whose names lie ------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_records(tiny_vlm, tmp_path_factory):
    d = tmp_path_factory.mktemp("three")
    scene(64, 48).save(d / "img.png")
    recs = collect(tiny_vlm, [(str(d / "img.png"), "what color is the square ?", sid, str(d / "img.png"))
                              for sid in ("a", "b", "c")], Strategy(), max_new_tokens=0)
    for r in recs:
        r.save(d / "attention" / f"{r.meta.sample_id}.safetensors")
    return d / "attention"


@SLOW
@given(op=st.sampled_from(["none", "copy", "rename", "swap"]), src=st.sampled_from("abc"), dst=st.sampled_from("abc"))
def test_a_record_under_another_name_is_refused_naming_the_files(op, src, dst, three_records, tiny_vlm, tmp_path_factory):
    base = tmp_path_factory.mktemp("names")
    recs = base / "attention"
    shutil.copytree(three_records, recs)
    f = {k: recs / f"{k}.safetensors" for k in "abc"}
    if op == "copy" and src != dst:
        shutil.copyfile(f[src], f[dst])
    elif op == "rename" and src != dst:
        os.replace(f[src], recs / "zz.safetensors")
    elif op == "swap" and src != dst:
        os.replace(f[src], recs / "tmp")
        os.replace(f[dst], f[src])
        os.replace(recs / "tmp", f[dst])
    changed = op != "none" and src != dst
    code, msg, res = run(tiny_vlm, base / "sel", "stage=select", f"attention_dir={recs}", "selection.exclude_layers=[]")
    if not changed:
        assert code == 0, msg
        assert res["records"] == 3
        return
    assert code == 2 and "\n" not in msg
    if op == "copy":
        assert f"{f[dst]} holds sample '{src}'" in msg and f"{f[src]} holds that sample too" in msg, msg
    elif op == "rename":
        assert "zz.safetensors holds sample" in msg and f"its own file would be {src}.safetensors" in msg, msg
    else:
        assert "holds sample" in msg and "two records of one sample" in msg, msg


def test_visualize_batch_and_explorer_notice_a_copied_record(three_records, tmp_path):
    from test_edges_records import view

    recs = tmp_path / "attention"
    shutil.copytree(three_records, recs)
    shutil.copyfile(recs / "b.safetensors", recs / "a.safetensors")
    code, msg = view(tmp_path / "vis", "mode=batch", f"attention_dir={recs}")
    assert code == 2 and "a.safetensors holds sample 'b'" in msg
    html = (tmp_path / "vis" / "index.html").read_text()
    assert "holds sample" in html


# ---- 3. folders still being written, partly collected runs ----------------------------------------
@pytest.fixture(scope="module")
def sharded_run(tiny_vlm, tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    scene(64, 48).save(d / "img.png")
    data = write_jsonl(d / "d.jsonl", [{"id": f"r{i}", "prompt": "what color is the square ?", "image_path": "img.png"}
                                       for i in range(6)])
    out = d / "out"
    for i in range(2):
        code, msg, _ = run(tiny_vlm, out, "stage=batch", f"data_file={data}", f"shard={i}/2", "max_new_tokens=0")
        assert code == 0, msg
    return out


@SLOW
@given(keep=st.tuples(st.integers(0, 3), st.integers(0, 3)), drop_shard=st.sampled_from([None, 0, 1]),
       partial=st.booleans())
def test_an_incomplete_sharded_run_is_refused_or_counted(keep, drop_shard, partial, sharded_run, tiny_vlm,
                                                        tmp_path_factory):
    out = tmp_path_factory.mktemp("part") / "run"
    shutil.copytree(sharded_run, out)
    missing = 0
    for i in range(2):
        man = out / f"manifest.shard{i}-of-2.jsonl"
        if drop_shard == i:  # this shard never started: no plan, no manifest, no records
            for line in man.read_text().splitlines():
                (out / "attention" / f"{json.loads(line)['id']}.safetensors").unlink()
            man.unlink()
            (out / f"manifest.shard{i}-of-2.plan.json").unlink()
            missing += 3
            continue
        lines = man.read_text().splitlines()
        for line in lines[keep[i]:]:  # killed after keep[i] rows: later rows have no record either
            (out / "attention" / f"{json.loads(line)['id']}.safetensors").unlink()
        man.write_text("".join(ln + "\n" for ln in lines[: keep[i]]))
        missing += 3 - keep[i]
    if not list((out / "attention").glob("*.safetensors")):
        return
    code, msg, res = run(tiny_vlm, out, "stage=select", "selection.exclude_layers=[]", f"allow_partial={str(partial).lower()}")
    if missing == 0:
        assert code == 0, msg
        assert "missing_rows" not in json.loads((out / "heads.json").read_text())["records"]
    elif not partial:
        assert code == 2 and f"{missing} of 6 planned rows" in msg and "allow_partial=true" in msg and "\n" not in msg, msg
    else:
        assert code == 0, msg
        assert json.loads((out / "heads.json").read_text())["records"]["missing_rows"] == missing


def test_select_over_a_folder_a_live_run_holds_is_refused(sharded_run, tiny_vlm, tmp_path):
    holder = subprocess.Popen(  # another process holds the folder as a live shard would
        [sys.executable, "-c", "import sys, time; from utils.runlock import RunLock; "
         f"RunLock(__import__('pathlib').Path({str(sharded_run)!r}), (0, 2)).acquire(); print('ready', flush=True); "
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "ready"
        code, msg, _ = run(tiny_vlm, tmp_path / "sel", "stage=select", f"attention_dir={sharded_run / 'attention'}")
        notes = _explorer_notes(sharded_run)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and "is still being written by another run (pid" in msg and "shard 0/2" in msg, msg
    assert any("still being written" in n for n in notes), notes
    lock = RunLock(sharded_run, (0, 2)).acquire()  # this process's own lock is no other writer
    try:
        assert not any("still being written" in n for n in _explorer_notes(sharded_run))
    finally:
        lock.release()
    code, msg, _ = run(tiny_vlm, tmp_path / "sel", "stage=select", f"attention_dir={sharded_run / 'attention'}")
    assert code == 0, msg


def _explorer_notes(run_dir: Path) -> list[str]:
    from lab.report.rundata import build_run_data

    return build_run_data(run_dir)["notes"]


# ---- 5. multirun sweeps ------------------------------------------------------------------------
KEYS = ["top_k", "seed", "batch_size", "+x", "shard"]  # shards share a folder by design


@FAST
@given(swept=st.lists(st.sampled_from(KEYS), unique=True, max_size=3), named=st.lists(st.sampled_from(KEYS), unique=True),
       multirun=st.booleans(), sweep_out=st.booleans())
def test_a_sweep_sharing_one_output_dir_is_refused_unless_each_job_names_its_folder(swept, named, multirun, sweep_out):
    out = "runs/x" + "".join(f"/{k.lstrip('+')}_${{{k.lstrip('+')}}}" for k in named)
    argv = (["-m"] if multirun else []) + [f"{k}=1,2" for k in swept] + [f"output_dir={out}" + (",runs/y" if sweep_out else "")]
    problem = multirun_problem(argv)
    shared = multirun and any(k != "shard" and k.lstrip("+") not in [n.lstrip("+") for n in named] for k in swept)
    assert (problem is not None) == shared, (argv, problem)
    if problem:
        assert "output_dir=" in problem and "\n" not in problem


def test_multirun_into_one_folder_is_refused_before_any_job(tmp_path):
    r = entry("-m", "top_k=1,2", "stage=select", f"output_dir={tmp_path / 'X'}")
    assert r.returncode == 2 and "-m sweeps top_k" in one_error_line(r.stderr)
    assert not (tmp_path / "X").exists()


# ---- 6. output_dir that cannot be a folder ------------------------------------------------------
def test_output_dir_that_is_a_file_or_under_one_is_one_line(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    for target, needle in ((f, "is an existing file, not a folder"), (f / "sub", "is a file, not a folder")):
        r = entry("stage=select", f"output_dir={target}")
        assert r.returncode == 2 and needle in one_error_line(r.stderr)


def test_read_only_output_dir_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (not root, or no mount)")
    try:
        for target in (ro, ro / "new"):
            r = entry("stage=select", f"output_dir={target}")
            assert r.returncode == 2 and "Read-only file system" in one_error_line(r.stderr)
    finally:
        subprocess.run(["umount", str(ro)], check=False)


# ---- 8. Ctrl-C ----------------------------------------------------------------------------------
def test_ctrl_c_is_one_line_exit_130_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, str(ROOT / "localization_heads_finder.py"), "stage=batch", "end_index=16", "batch_size=1",
            f"output_dir={out}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    t0 = time.time()
    while not list((out / "attention").glob("*.safetensors")) and time.time() - t0 < 120 and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted (Ctrl-C) at ") and last.endswith("run the same command again to resume"), last
    assert f"finished files are kept in {out}" in last
    done = len(list((out / "attention").glob("*.safetensors")))
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"skipped {done} already on disk" in r.stdout and len(list((out / "attention").glob("*.safetensors"))) == 16


@pytest.mark.parametrize("delay", [0.3, 1.5, 3.0])
def test_ctrl_c_at_start_up_is_one_line_too(delay, tmp_path):
    """Before the job starts (imports, Hydra composing the config): the same one line, exit 130."""
    p = subprocess.Popen([sys.executable, str(ROOT / "localization_heads_finder.py"), "stage=select",
                          f"output_dir={tmp_path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    if p.returncode in (2, -signal.SIGINT):  # it had answered (no records here); the signal came while the
        one_error_line(err)  # interpreter was shutting down (Python restores the default handler then)
        return
    assert p.returncode == 130 and "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]  # "while starting" or "at <where>": which one depends on the machine's speed
    assert last.startswith(("interrupted (Ctrl-C) at ", "interrupted (Ctrl-C) while starting")), err[-500:]
    assert "run the same command again" in last, last


def test_ctrl_c_stays_an_immediate_exit_until_the_job_itself_starts():
    """An import cut half-way by a KeyboardInterrupt can leave a library broken without a word (torch
    swallows the error of its first numpy import; `from scipy import ndimage` then recursed, exit 1 with
    a traceback, in CI): the imports in main() and the settings stay under the one-line exit."""
    from helpers import make_cfg

    from utils.cli import run_entry
    from utils.interrupt import _exit_now, quiet_sigint, run_quietly_interruptible

    seen = {}

    def main():
        seen["main"] = signal.getsignal(signal.SIGINT)
        run_entry(lambda s: seen.setdefault("job", signal.getsignal(signal.SIGINT)), make_cfg())

    old = signal.getsignal(signal.SIGINT)
    try:
        quiet_sigint()
        run_quietly_interruptible(main)
    finally:
        signal.signal(signal.SIGINT, old)
    assert seen == {"main": _exit_now, "job": signal.default_int_handler}


# ---- 9. late checks ------------------------------------------------------------------------------
@pytest.mark.parametrize("override,needle", [("strategy.layers=[99]", "strategy.layers=[99] out of range (0..3)"),
                                             ("strategy.maskout=[[99,0]]", "strategy.maskout has [99, 0]")])
def test_strategy_outside_the_model_fails_once_before_any_row(override, needle, tiny_vlm, tmp_path):
    scene(64, 48).save(tmp_path / "img.png")
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": f"r{i}", "prompt": "what color ?", "image_path": "img.png"}
                                              for i in range(6)])
    code, msg, loader = run(tiny_vlm, tmp_path / "out", "stage=batch", f"data_file={data}", override)
    assert code == 2 and needle in msg and "\n" not in msg, msg
    assert loader.calls == 1
    man = tmp_path / "out" / "manifest.jsonl"
    assert not man.exists() or not man.read_text().strip()  # no row failed: the run stopped before any


@pytest.mark.parametrize("url", ["http://example.com/a.png", "https://x/y.jpg", "file:///tmp/a.png", "s3://b/k.png"])
def test_url_image_path_is_refused(url, tmp_path, tiny_vlm):
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "prompt": "p", "image_path": url}])
    with pytest.raises(UserError, match=rf"d.jsonl:1: \"image_path\" .* is a URL; URLs are not read; give a local path"):
        load_rows(data)
    code, msg, _ = run(tiny_vlm, tmp_path / "out", "stage=collect", f"image_file={url}", "query=hi")
    assert code == 2 and "URLs are not read; give a local path" in msg, msg


def test_a_record_crafted_with_the_right_name_still_passes(three_records, tiny_vlm, tmp_path):
    rec = AttentionRecord.load(three_records / "a.safetensors")
    craft_record(tmp_path / "attention" / "a.safetensors", rec)
    code, msg, _ = run(tiny_vlm, tmp_path, "stage=select", "selection.exclude_layers=[]")
    assert code == 0, msg
