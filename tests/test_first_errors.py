"""A newcomer's first mistakes (issue 24): a mistyped key, a model that is not there, a failed run's
folder, a selection over too few samples; and the span of captured heads in an error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from inprocess import run_script
from helpers import make_cfg

from lab.analysis.across_samples import MIN_SAMPLES, sample_count_warning
from lab.records.record import _span
from llava import sources
from utils.settings.declarations import ChatConfig, FinderConfig, VisualizeConfig
from utils.errors import UserError
from utils.preflight import config_groups
from utils.settings.reading import check_override_keys, unknown_override_keys

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "examples" / "toy" / "images" / "toy_0000.png"


def _run(script: str, *args: str, cwd: Path, **env: str):
    """An entry point in a fresh interpreter with `env` added (the hub's settings are read at import)."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", **env)
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=300)


def _run_here(script: str, *args: str, cwd: Path):
    """An entry point as `python <script> <args>` runs it, in this process (tests/inprocess.py)."""
    return run_script(ROOT / script, *args, cwd=cwd)


# ---- item 6: a mistyped key gets the project's message at the first try ---------------------------
@pytest.mark.parametrize("words, schema, bad", [
    (["topk=5"], FinderConfig, ["topk (did you mean top_k?)"]),
    (["model.nme=x", "stage=select"], FinderConfig, ["model.nme (did you mean model.name?)"]),
    (["selection.elbow.methd=chord"], FinderConfig, ["selection.elbow.methd (did you mean selection.elbow.method?)"]),
    (["tokens.layers=[1]"], FinderConfig, ["tokens (did you mean max_new_tokens?)"]),
    (["tokens.layrs=[1]", "mode=tokens"], VisualizeConfig, ["tokens.layrs (did you mean tokens.layers?)"]),
    (["qury=hi"], ChatConfig, ["qury (did you mean query?)"]),
    # fine: real keys, groups, Hydra's own keys, + / ++ / ~ (left to check_config), flags and their values
    (["top_k=5", "model=llava15_7b", "method=kang_release", "model.name_or_path=x", "strategy.maskout=[[1,2]]",
      "hydra.run.dir=x", "hydra/launcher=basic", "+topk=5", "++top_k=3", "~top_k", "-m", "--cfg", "job",
      "grounding.sam.name_or_path=facebook/sam-vit-base", "output_dir=runs/x"], FinderConfig, []),
    (["query=what, is it", "top_k='3'"], ChatConfig, []),  # what Hydra cannot parse is Hydra's to report
])
def test_unknown_override_keys(words, schema, bad):
    assert unknown_override_keys(words, schema, config_groups()) == bad


def test_check_override_keys_names_the_schema():
    with pytest.raises(UserError, match=r"^unknown key topk \(did you mean top_k\?\): not in the FinderConfig schema"):
        check_override_keys(["topk=5"], FinderConfig, config_groups())
    assert set(config_groups()) >= {"model", "method"}


def test_mistyped_key_on_the_command_line(tmp_path):
    r = _run_here("localization_heads_finder.py", "topk=5", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ("error: unknown key topk (did you mean top_k?): not in the FinderConfig schema "
                                "(utils/settings/declarations.py)")
    assert "To append" not in r.stderr + r.stdout and list(tmp_path.iterdir()) == []


# ---- item 7: a missing folder, a hub id offline ----------------------------------------------------
@pytest.mark.parametrize("name", ["/no/such/folder", "./no/such/folder", "../nope", "~/no-such-folder-lhf"])
def test_a_path_that_does_not_exist(name):
    with pytest.raises(UserError, match=rf"^model.name_or_path={name}: folder does not exist$"):
        sources.check_source(name)


def test_hub_id_offline_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"model.name_or_path=someorg/no-such-model: .*HF_HUB_OFFLINE=1"):
        sources.check_source("someorg/no-such-model")
    assert time.perf_counter() - t0 < 1.0


def test_hub_id_without_network_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for k in sources._PROXIES:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(sources, "_cached", lambda repo: False)
    monkeypatch.setattr(sources, "_endpoint", lambda: "https://hub.invalid")  # .invalid never resolves (RFC 2606)
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"hub.invalid cannot be reached .*HF_HUB_OFFLINE=1"):
        sources.check_source("someorg/no-such-model")
    assert time.perf_counter() - t0 < sources.PROBE_SECONDS + 1.0


def test_local_folders_and_cached_ids_pass(monkeypatch, tmp_path):
    sources.check_source(str(tmp_path))  # exists: the loader names a missing config.json
    sources.check_source(str(ROOT / "llava" / "toy" / "checkpoint"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sources, "_cached", lambda repo: True)
    sources.check_source("someorg/cached-model")
    with pytest.raises(UserError, match="not a hub id"):
        sources.check_source("a/b/c")


def test_offline_hub_id_run_is_one_line_and_leaves_nothing(tmp_path):
    """Items 7 and 8 end to end: no retry warnings, one line, and Hydra's run folder is removed."""
    cache = tmp_path / "cache"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = _run("localization_heads_finder.py", "stage=collect", f"image_file={IMG}", "query=hi",
             "model.name_or_path=someorg/no-such-model", cwd=cwd, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "HF_HUB_OFFLINE=1" in lines[0] and "someorg/no-such-model" in lines[0], r.stderr
    assert "Retrying" not in r.stdout + r.stderr
    assert list(cwd.iterdir()) == [], "a run that failed before any work left a folder"


# ---- item 8: a failed run's folder --------------------------------------------------------------
def test_failed_run_into_output_dir_leaves_nothing_it_created(tmp_path):
    """Issue 31, item 6 (this test used to expect the error in `<out>/localization_heads_finder.log`):
    a run that fails before any work leaves no folder, lock, log or plan behind; the error line is on
    stderr."""
    out = tmp_path / "new" / "run"
    args = ("stage=collect", f"image_file={IMG}", "query=hi", "model.name_or_path=/no/such/folder")
    r = _run_here("localization_heads_finder.py", *args, f"output_dir={out}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: model.name_or_path=/no/such/folder: folder does not exist"
    assert list(tmp_path.iterdir()) == []  # the run's folder and the parent it made, gone


def test_a_folder_that_existed_keeps_only_what_it_had(tmp_path):
    from utils.folder_undo import remember_output_dir, undo_idle_run

    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine")
    (old / "lhf.log").write_text("an earlier run\n")
    (old / "manifest.plan.json").write_text('{"rows": 4}')
    remember_output_dir(old)
    (old / ".lock").write_text("{}")  # what the failed run adds and changes
    (old / "lhf.log").write_text("an earlier run\nerror: ...\n")
    (old / "manifest.plan.json").write_text('{"rows": 2}')
    assert undo_idle_run(old, "lhf.log") is True
    assert sorted(p.name for p in old.iterdir()) == ["lhf.log", "manifest.plan.json", "notes.txt"]
    assert (old / "lhf.log").read_text() == "an earlier run\n" and (old / "manifest.plan.json").read_text() == '{"rows": 4}'


def test_a_failed_run_that_did_work_keeps_its_folder(tmp_path):
    from utils.folder_undo import remember_output_dir, undo_idle_run

    out = tmp_path / "run"
    remember_output_dir(out)
    (out / "attention").mkdir(parents=True)
    (out / ".lock").write_text("{}")
    assert undo_idle_run(out) is False and (out / ".lock").exists()  # a record folder: work was done
    remember_output_dir(tmp_path / "x")
    assert undo_idle_run(out) is False  # a note about another folder is not about this one


@pytest.mark.parametrize("words, bad", [
    (["model=llava15-7b"], ["unknown model llava15-7b: config/model/ has no llava15-7b.yaml (did you mean model=llava15_7b?)"]),
    (["method=kang", "model=toy"], ["unknown method kang: config/method/ has no kang.yaml (did you mean method=kang_release?)"]),
    (["-m", "model=toy,qwen25vl"], ["unknown model qwen25vl: config/model/ has no qwen25vl.yaml (did you mean model=qwen25_vl_7b?)"]),
    (["model=toy", "method=paper", "~model", "hydra/launcher=basic", "top_k=3", "model.name=x"], []),
])
def test_unknown_group_choices(words, bad):
    from utils.preflight import unknown_group_choices

    got = unknown_group_choices(words)
    assert [g.split(";")[0] for g in got] == bad
    assert all("; " + g.split(" ")[1] + "= takes " in x for g, x in zip(bad, got))


def test_mistyped_model_group_on_the_command_line(tmp_path):
    r = _run_here("localization_heads_finder.py", "model=llava15-7b", f"output_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: unknown model llava15-7b: config/model/ has no llava15-7b.yaml (did you mean "
                               "model=llava15_7b?); model= takes gemma3_4b, ")
    assert "Could not find" not in r.stderr + r.stdout and list(tmp_path.iterdir()) == []


def test_idle_run_folder_is_removed_and_a_busy_one_kept(tmp_path, monkeypatch):
    """`_drop_idle_run_folder` in process, under a fake Hydra run (what a failing job sees)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from utils import cli

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "outputs" / "localization_heads" / "2026-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / "localization_heads_finder.log").write_text("")
    (tmp_path / "outputs" / "other").mkdir()
    hc = OmegaConf.create({"hydra": {"mode": RunMode.RUN, "runtime": {"output_dir": str(run)},
                                     "job": {"name": "localization_heads_finder"}}})
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hc.hydra))
    cfg = OmegaConf.create({"output_dir": None})
    (run / "attention").mkdir()
    assert cli._drop_idle_run_folder(cfg) is None and run.is_dir()  # work was done: kept
    (run / "attention").rmdir()
    assert cli._drop_idle_run_folder(OmegaConf.create({"output_dir": str(run)})) is None  # the user's folder: kept
    assert cli._drop_idle_run_folder(cfg) == run.resolve()
    assert not run.parent.exists() and (tmp_path / "outputs" / "other").is_dir()  # empty parents only


# ---- item 11: too few samples ----------------------------------------------------------------------
def test_sample_count_warning():
    assert sample_count_warning(MIN_SAMPLES) is None and sample_count_warning(1000) is None
    w = sample_count_warning(2)
    assert w.startswith("selection over 2 samples: below 100 samples") and "1,000" in w and "0.35" in w


def test_select_over_two_samples_warns_in_console_and_heads_json(toy_run, tmp_path, capsys):
    from lab.stages import StageContext, run_stage

    recs = tmp_path / "two"
    recs.mkdir()
    for f in sorted((toy_run / "attention").glob("*.safetensors"))[:2]:
        shutil.copy(f, recs / f.name)
    out = tmp_path / "out"
    cfg = make_cfg("stage=select", f"attention_dir={recs}", f"output_dir={out}")
    run_stage(cfg, StageContext(loader=lambda: None, output_dir=out))
    assert "warning: selection over 2 samples" in capsys.readouterr().out
    (w,) = json.loads((out / "heads.json").read_text())["warnings"]
    assert "1,000" in w


# ---- item 2: what a record holds, in full ---------------------------------------------------------
def test_span_never_hides_a_value():
    assert _span([0, 1, 2, 3]) == "0..3"
    assert _span(range(32)) == "0..31"
    assert _span([0, 1, 2, 3, 7, 9, 10, 11]) == "[0..3, 7, 9..11]"
    assert _span([2, 5]) == "[2, 5]" and _span([4]) == "[4]"


# ---- issue 29 item 6: broken checkpoints and the planted builder: one line naming the file -----------
class _Evil:
    def __reduce__(self):
        return (print, ("the pickle ran",))


def _truncate(d):
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _evil_pickle(d):
    import torch

    (d / "model.safetensors").unlink()
    torch.save({"x": _Evil()}, d / "pytorch_model.bin")


BROKEN = {
    "truncated": (_truncate, r"model\.safetensors: not a readable safetensors file \(\d+ bytes; .*truncated or corrupt"),
    "empty weights": (lambda d: (d / "model.safetensors").write_bytes(b""), r"model\.safetensors: .*\(0 bytes"),
    "no config": (lambda d: (d / "config.json").unlink(), r"config\.json: missing"),
    "bad json": (lambda d: (d / "config.json").write_text("{not json"), r"config\.json: not valid JSON \(.*line 1 column 2"),
    "no model_type": (lambda d: (d / "config.json").write_text("{}"), r"config\.json: has no \"model_type\""),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), r"no weights file"),
    "pickle": (_evil_pickle, r"pytorch_model\.bin: a pickle that torch\.load\(weights_only=True\) refuses .*it was not run"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_checkpoint_is_one_line_naming_the_file(case, tiny_ckpt, tmp_path, capsys):
    from llava.model import load_vlm

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, folder)
    breaks, message = BROKEN[case]
    breaks(folder)
    with pytest.raises(UserError, match=message) as e:
        load_vlm(str(folder), device="cpu", dtype="float32")
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    assert "the pickle ran" not in capsys.readouterr().out


def test_planted_builder_refuses_a_file_and_a_negative_seed(tmp_path, capsys):
    from llava.planted.__main__ import main

    afile = tmp_path / "f"
    afile.write_text("x")
    assert main(["--out", str(afile)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {afile}: {afile} is a file, not a folder; give a folder (new or one an earlier build wrote)"
    assert main(["--out", str(tmp_path / "p"), "--seed", "-1"]) == 2
    assert "--seed -1: must be an integer in 0..4294967295" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_planted_grounding_set_into_an_older_folder_holds_only_its_rows(tmp_path):
    from llava.planted.scenes import write_grounding_set

    write_grounding_set(tmp_path, 5, seed=0)
    (tmp_path / "images" / "mine.png").write_bytes(b"")  # not the builder's: kept
    path = write_grounding_set(tmp_path, 2, seed=0)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == sorted([Path(r["image_path"]).name for r in rows] + ["mine.png"])
