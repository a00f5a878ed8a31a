"""cli_llava.py: one query, and the chat driven through stdin (subprocess and in process)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest
from inprocess import run_script
import helpers
from PIL import Image

from lab.records.record import AttentionRecord
from lab.stages import StageContext
from utils.settings.declarations import register_configs

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
register_configs()


def run_cli_process(*args, stdin: str | None = None, cwd=None):
    """cli_llava.py in a fresh interpreter, stdin piped (the chat as a terminal user drives it)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "cli_llava.py"), *args], input=stdin, cwd=cwd or tempfile.mkdtemp(prefix="lhf_chat_"),
                          capture_output=True, text=True, env=env, timeout=300)


def run_cli(*args, stdin: str | None = None, cwd=None):
    """cli_llava.py as `python cli_llava.py <args>` runs it, in this process (tests/inprocess.py)."""
    return run_script(ROOT / "cli_llava.py", *args, cwd=cwd or tempfile.mkdtemp(prefix="lhf_chat_"), stdin=stdin or "")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat_img")
    a = Image.new("RGB", (96, 64), (240, 240, 240))
    a.paste((200, 20, 20), (10, 10, 40, 40))
    a.save(d / "square.png")
    b = Image.new("RGB", (64, 96), (30, 30, 200))
    b.paste((250, 250, 0), (20, 50, 50, 90))
    b.save(d / "other.png")
    return d / "square.png", d / "other.png"


def model_args(ckpt, tmp_path):
    return [f"model.name_or_path={ckpt}", "model.builder=null", "model.name=t", "model.device=cpu",
            f"output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}", "max_new_tokens=5"]


def _paths(stdout: str, key: str) -> list[Path]:
    return [Path(m) for m in re.findall(rf"^{key}: (\S+)$", stdout, flags=re.M)]


def test_chat_through_stdin(tiny_ckpt, images, tmp_path):
    square, other = images
    script = "\n".join([
        "what color is the square ?",
        "and where is it ?",
        "/save",
        f"/image {other}",
        "what is in the image ?",
        "/bogus",
        "/image /nonexistent/cat.png",
        "/heads 2:1,3:0",
        "/save",
        "exit",
        "this line is never read",
    ]) + "\n"
    r = run_cli_process("cli_mode=true", f"image_file={square}", *model_args(tiny_ckpt, tmp_path), stdin=script)
    assert r.returncode == 0, r.stderr
    out, err = r.stdout, r.stderr
    assert out.count("assistant: ") == 3
    assert "Traceback" not in err
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert errors[0].startswith("error: unknown command /bogus; commands: /image PATH, /save")
    assert errors[1].startswith("error: image not found: /nonexistent/cat.png")
    assert len(errors) == 2
    assert f"image: {other} (64x96); conversation cleared" in out
    assert out.rstrip().endswith("bye")
    overlays = _paths(out, "overlay")
    records = _paths(out, "record")
    assert len(overlays) == 2 and len(records) == 2
    for p in overlays + _paths(out, "tokens") + _paths(out, "image_share"):
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5000
    first, second = (AttentionRecord.load(p) for p in records)
    # turn 2 saw turn 1 (history); after the image switch the history starts again
    assert "what color is the square ?" in first.meta.prompt and "and where is it ?" in first.meta.prompt
    assert first.meta.query == "and where is it ?" and first.meta.image_path == str(square)
    assert "square" not in second.meta.prompt and second.meta.image_path == str(other)
    assert second.meta.query_mode == "generated" and second.image_attention.shape[0] >= 1
    assert "heads: L2H1, L3H0 (chosen with /heads)" in out
    assert "never read" not in out


def test_single_query_streams_and_saves(tiny_ckpt, images, tmp_path):
    square, _ = images
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({"heads": [{"layer": 3, "head": 1}, {"layer": 2, "head": 0}]}))
    r = run_cli("query=what color is the square ?", f"image_file={square}", f"heads_file={heads}", "save_id=demo",
                *model_args(tiny_ckpt, tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("assistant: ") == 1
    rec_path = tmp_path / "out" / "attention" / "demo.safetensors"
    assert f"record: {rec_path}" in r.stdout
    rec = AttentionRecord.load(rec_path)
    assert rec.meta.query_mode == "generated" and rec.meta.generated_text
    answer_line = next(l for l in r.stdout.splitlines() if l.startswith("assistant: "))
    assert answer_line == f"assistant: {rec.meta.generated_text}"
    fig = tmp_path / "out" / "figures" / "demo_heads.png"
    assert fig.read_bytes()[:8] == PNG
    assert f"heads: L3H1, L2H0 (the run's selected heads, from {heads})" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["query=hi", "image_file=/nonexistent/cat.png"], "error: image not found: /nonexistent/cat.png"),
    (["cli_mode=true", "qury=hi"], "unknown key qury (did you mean query?)"),
])
def test_cli_errors_are_one_line(args, needle, images, tmp_path):
    args = [a.replace("IMG", str(images[0])) for a in args]
    r = run_cli(*args, "model.device=cpu", f"model.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path / 'h'}",
                f"output_dir={tmp_path}")
    assert r.returncode != 0
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    if needle.startswith("error:"):
        assert r.returncode == 2 and len([l for l in r.stderr.splitlines() if l.strip()]) == 1


# ---- in process: the same loop with a fake stdin --------------------------------------------------
def make_cfg(*overrides):
    return helpers.make_cfg(*overrides, config_name="cli_config")


def test_chat_in_process(tiny_vlm, images, tmp_path, capsys):
    from lab.sessions import chat as session

    square, other = images
    cfg = make_cfg("cli_mode=true", "max_new_tokens=3", "stream=false", "token_figures=false",
                   "query_positions=last_input")
    ctx = StageContext(loader=lambda: tiny_vlm, output_dir=tmp_path)
    stdin = io.StringIO("\n".join(["hello ?", "/save", f"/image {square}", "what ?", "what else ?", "/reset",
                                   "/heads", "/heads 1:1", "/heads auto", "/image", "/heads 1-2", "again ?", "/save"]))
    res = session.chat(cfg, ctx, stdin=stdin)  # ends at end of input
    out, err = capsys.readouterr()
    assert res == {"turns": 3}
    assert "error: no image yet: give image_file= or type /image PATH first" in err
    assert "error: nothing to save yet" in err
    assert "error: /image needs a path" in err and "error: /heads: '1-2' is not LAYER:HEAD" in err
    assert out.count("assistant: ") == 3 and "heads: auto" in out and "heads: L1H1" in out
    assert "conversation cleared" in out
    (rec_path,) = _paths(out, "record")
    rec = AttentionRecord.load(rec_path)
    assert rec.meta.query == "again ?" and "what ?" not in rec.meta.prompt  # /reset dropped the history
    assert rec.meta.query_mode == "last_input"
    assert not list((tmp_path / "figures").glob("*_tokens.png"))


@pytest.mark.parametrize("args,needle", [
    (["image_file=IMG"], "give query=... and image_file=..."),
    (["query=hi"], "give query=... and image_file=..."),
    (["query=hi", "image_file=IMG", "query_positions=all"], "query_positions='all' must be one of generated, last_input"),
    (["query=hi", "image_file=IMG", "heads_file=/nonexistent/heads.json"], "heads_file not found"),
    (["cli_mode=true", "image_file=/nonexistent/dog.png"], "image not found: /nonexistent/dog.png"),
])
def test_user_errors_before_the_model_loads(args, needle, images, tmp_path):
    from lab.sessions import chat as session
    from utils.errors import UserError

    def loader():
        raise AssertionError("the model must not load for a bad command line")

    cfg = make_cfg(*[a.replace("IMG", str(images[0])) for a in args])
    with pytest.raises(UserError, match=re.escape(needle)):
        session.run_cli(cfg, StageContext(loader=loader, output_dir=tmp_path))


def test_parse_heads():
    from lab.sessions import chat as session
    from utils.errors import UserError

    assert session.parse_heads("2:1, 3:0", 4, 4) == [(2, 1), (3, 0)]
    for bad in ("", "2", "a:b", "4:0", "0:-1"):
        with pytest.raises(UserError):
            session.parse_heads(bad, 4, 4)
