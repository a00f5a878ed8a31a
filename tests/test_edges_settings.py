"""Settings are checked when the config is composed -- before any record is read or model loaded --
each problem naming its key and the allowed values; `+key` outside the schema is an error; and
`output_dir=` means nothing is written anywhere else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from inprocess import run_script
from edges_common import ROOT, run, scene
from helpers import make_cfg
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.errors import UserError
from utils.settings.declarations import FinderConfig
from utils.settings.reading import check_config, rules

BAD = [
    ("top_k=0", "top_k=0 must be an integer in [1, 65536]"),
    ("selection.k=0", "selection.k=0 must be an integer in [1, 65536]"),
    ("selection.elbow.method=bogus", "selection.elbow.method='bogus' must be one of kneedle, chord"),
    ("batch_size=0", "batch_size=0 must be an integer in [1, 4096]"),
    ("batch_size=-1", "batch_size=-1 must be an integer in [1, 4096]"),
    ("max_new_tokens=-1", "max_new_tokens=-1 must be an integer in [0, 32768]"),
    ("+top_kk=3", "unknown key top_kk (did you mean top_k?)"),
    ("+selection.kk=3", "unknown key selection.kk (did you mean selection.k?)"),
    ("+model.foo=1", "unknown key model.foo"),
    ("shard=2/2", "shard='2/2' must look like i/n"),
    ("start_index=-1", "start_index=-1 must be an integer >= 0"),
    ("end_index=-3", "end_index=-3 must be an integer >= 0"),
    ("grounding.sigma=-1", "grounding.sigma=-1.0 must be a finite number"),
    ("grounding.random_draws=-1", "grounding.random_draws=-1 must be an integer in [0, 1000]"),
    ("grounding.sigma=1e6", "grounding.sigma=1000000.0 must be a finite number in [0.0, 256.0]"),
    ("grounding.sigma=1e9", "grounding.sigma=1000000000.0 must be a finite number in [0.0, 256.0]"),
    ("grounding.sigma=1e4", "grounding.sigma=10000.0 must be a finite number in [0.0, 256.0]"),
    ("grounding.random_draws=1000000000", "grounding.random_draws=1000000000 must be an integer in [0, 1000]"),
    ("ablation.random_draws=5000", "ablation.random_draws=5000 must be an integer in [0, 1000]"),
    ("top_k=1000000", "top_k=1000000 must be an integer in [1, 65536]"),
    ("selection.mean_factor=1e6", "selection.mean_factor=1000000.0 must be a finite number in [0.0, 100.0]"),
    ("selection.binarize_threshold=2", "selection.binarize_threshold=2.0 must be a finite number in [0.0, 1.0]"),
    ("report.image_side=100000", "report.image_side=100000 must be an integer in [16, 4096]"),
    ("grounding.sam.num_points=1000", "grounding.sam.num_points=1000 must be an integer in [1, 64]"),
    ("seed=-1", "seed=-1 must be an integer in [0, 4294967295]"),
    ("selection.connectivity=6", "selection.connectivity=6 must be 4 or 8"),
    ("selection.component_weight=volume", "must be one of mass, area"),
    ("selection.bottom_row_fraction=0", "must be a finite number in (0.0, 1.0]"),
    ("selection.exclude_layers=[-1]", "selection.exclude_layers=[-1] must be a list of integers >= 0"),
    ("strategy.query_positions=first", "strategy.query_positions='first' must be one of last_input, generated, all_input"),
    ("strategy.maskout=[[1]]", "strategy.maskout=[[1]] must be a list of [layer, head] pairs"),
    ("strategy.modify_factor=-2", "strategy.modify_factor=-2.0 must be a finite number"),
    ("strategy.steps=some", "must be one of all, prefill"),
    ("ablation.match=fuzzy", "ablation.match='fuzzy' must be one of exact, contains"),
    ("model.dtype=float64", "model.dtype='float64' must be one of auto, float32, float16, bfloat16"),
    ("model.device=gpu", "model.device='gpu' must be auto, cpu, mps, cuda or cuda:N"),
    ("max_image_pixels=0", "max_image_pixels=0 must be an integer in [1, 4294967296]"),
]


@pytest.mark.parametrize("override, needle", BAD)
def test_bad_setting_is_named_before_any_work(override, needle, tiny_vlm, tmp_path):
    code, msg, loader = run(tiny_vlm, tmp_path / "out", override)
    assert code == 2 and needle in msg, msg
    assert loader.calls == 0 and not (tmp_path / "out").exists()


def test_every_problem_in_one_line():
    with pytest.raises(UserError) as e:
        check_config(make_cfg("top_k=0", "batch_size=0", "+top_kk=1"))
    msg = str(e.value)
    assert "\n" not in msg and msg.count(";") >= 2 and "top_k=0" in msg and "batch_size=0" in msg and "top_kk" in msg


@pytest.mark.parametrize("config_name, override, needle", [
    ("visualization_config", "mode=both", "mode='both' must be one of single, batch"),
    ("visualization_config", "+heads=3", "unknown key heads"),
    ("visualization_config", "layer=-1", "layer=-1 must be an integer in [0, 65535]"),
    ("visualization_config", "tokens.max_tokens=100000", "tokens.max_tokens=100000 must be an integer in [1, 4096]"),
    ("cli_config", "query_positions=all_input", "query_positions='all_input' must be one of generated, last_input"),
    ("cli_config", "top_k=0", "top_k=0 must be an integer in [1, 65536]"),
    ("cli_config", "max_new_tokens=10000000", "max_new_tokens=10000000 must be an integer in [0, 32768]"),
])
def test_every_entry_point_checks_its_settings(config_name, override, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        check_config(make_cfg(override, config_name=config_name))


def test_defaults_pass(tmp_path):
    for name in ("localization_config", "visualization_config", "cli_config"):
        check_config(make_cfg(config_name=name))


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(sorted(rules(FinderConfig))),
       value=st.one_of(st.integers(-5, 20), st.floats(-2, 2, allow_nan=False), st.sampled_from(["bogus", "null", "[]"])))
def test_any_value_is_accepted_or_named(key, value):
    """Whatever a user types for a checked key: the config composes and passes, or one UserError names the key."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = make_cfg(f"{key}={value}")
    except (HydraException, OmegaConfBaseException):  # Hydra's own type check (the entry point prints it)
        return
    try:
        check_config(cfg)
    except UserError as e:
        assert key in str(e) and "\n" not in str(e)


@settings(max_examples=80, deadline=None)
@given(side=st.integers(1, 256), sigma=st.floats(0, 256, allow_nan=False))
def test_sigma_is_bounded_by_the_grid(side, sigma):
    """grounding.sigma in cells: up to the grid's side it is used as given; above, one SettingError
    naming the key, the value and the bound (never a flat map or minutes of filtering)."""
    from utils.errors import SettingError
    from utils.settings.declarations import smoothing_sigma

    if sigma <= side:
        assert smoothing_sigma(sigma, side) == sigma
    else:
        with pytest.raises(SettingError, match=rf"grounding.sigma=.* must be at most {side} "):
            smoothing_sigma(sigma, side)
    assert smoothing_sigma(None, side) == side / 24.0


def test_sigma_above_the_grid_ends_a_batch_at_its_first_record(toy_vlm, tmp_path):
    """The toy's grid is 6x6: sigma=7 passes the compose-time bound (256 cells) and is refused once the
    first record shows the grid, before the other rows are collected; the record made is kept."""
    out = tmp_path / "out"
    code, msg, _ = run(toy_vlm, out, "stage=batch", "end_index=4", "batch_size=1", "grounding.sigma=7")
    assert code == 2 and "grounding.sigma=7 cells is more than the grid's side (6 cells): must be at most 6" in msg, msg
    assert len(list((out / "attention").glob("*.safetensors"))) == 1


def _entry(script: str, *args: str, cwd: Path):
    """The entry point run as `python <script> <args>` would run it, in this process (tests/inprocess.py)."""
    return run_script(ROOT / script, *args, cwd=cwd)


def test_output_dir_means_nothing_is_written_elsewhere(tiny_ckpt, tmp_path):
    """Entry points in an empty working folder with output_dir=: the folder stays empty (no outputs/,
    no .hydra), everything lands in output_dir; a bad key fails with exit 2 and one line."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    img = tmp_path / "img.png"
    scene(64, 48).save(img)
    out = tmp_path / "out"
    model = [f"model.name_or_path={tiny_ckpt}", "model.builder=null", "model.name=t", "model.device=cpu"]
    r = _entry("localization_heads_finder.py", "stage=pipeline", f"image_file={img}", "query=what color ?",
               f"output_dir={out}", "save_id=demo", "max_new_tokens=0", "selection.exclude_layers=[]", *model, cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    r2 = _entry("visualize_attention.py", f"attention_file={out}/attention/demo.safetensors", f"output_dir={out}",
                "selection.exclude_layers=[]", cwd=cwd)
    assert r2.returncode == 0, r2.stderr[-2000:]
    r3 = _entry("localization_heads_finder.py", "+top_kk=3", f"output_dir={out}", cwd=cwd)
    assert r3.returncode == 2 and r3.stderr.strip().splitlines()[-1].startswith("error: unknown key top_kk")
    assert "Traceback" not in r3.stderr
    assert os.listdir(cwd) == []
    made = {str(p.relative_to(out)) for p in out.rglob("*")}
    assert {"attention/demo.safetensors", "analysis/demo.analysis.json", "figures/demo_heads.png",
            "localization_heads_finder.log", "visualize_attention.log"} <= made
    assert not any(p.startswith(".hydra") for p in made)


@pytest.mark.parametrize("word, needle", [("top_k=2.5", "top_k=2.5 must be an integer in [1, 65536]"),
                                          ("top_k=abc", "top_k='abc' must be an integer"),
                                          ("grounding.sigma=1e9", "grounding.sigma=1000000000.0 must be a finite number")])
def test_bad_value_refused_before_hydra_leaves_no_output_dir(word, needle, tmp_path, capsys):
    """A value Hydra would refuse in four lines (exit 1) after setting up output_dir: one line, exit 2, nothing made."""
    from utils.preflight import check_output_dir_arg

    with pytest.raises(SystemExit) as e:
        check_output_dir_arg([word, f"output_dir={tmp_path / 'out'}"], FinderConfig)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "out").exists()
    check_output_dir_arg(["top_k='3'", "grounding.sigma=1", "top_k=${oc.env:K,3}", f"output_dir={tmp_path / 'ok'}"], FinderConfig)
