"""The entry point as a user runs it: a record from a real subprocess that matches eager, clear errors
(exit 2 from a subprocess; the other refusals in this process, tests/inprocess.py)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest
import torch
from inprocess import run_script
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def run_cli(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "localization_heads_finder.py"), *args], cwd=cwd or tempfile.mkdtemp(prefix="lhf_cli_"),
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("img") / "scene.png"
    img = Image.new("RGB", (96, 64), (240, 240, 240))
    img.paste((200, 20, 20), (10, 10, 40, 40))
    img.save(p)
    return p


def test_collect_on_a_saved_checkpoint_matches_eager(tiny_ckpt, tiny_eager, image_file, tmp_path):
    r = run_cli("stage=collect", f"image_file={image_file}", "query=what color is the square ?",
                f"model.name_or_path={tiny_ckpt}", "model.builder=null", "model.name=tmp", "model.device=cpu",
                f"output_dir={tmp_path}", "save_id=demo", "max_new_tokens=2")
    assert r.returncode == 0, r.stderr
    path = tmp_path / "attention" / "demo.safetensors"
    assert str(path) in r.stdout
    from lab.records.record import AttentionRecord

    rec = AttentionRecord.load(path)
    batch = tiny_eager.prepare([(Image.open(image_file).convert("RGB"), "what color is the square ?")])
    out = tiny_eager.forward(batch, output_attentions=True)
    exp = torch.stack([a[0, :, -1, batch.image_cols[0]] for a in out.attentions])  # (L, H, V)
    assert abs(rec.image_attention[0] - exp.numpy()).max() <= 1e-5
    assert rec.meta.image_path == str(image_file) and rec.meta.image_size == [96, 64]


@pytest.mark.parametrize("args,needle", [
    (["stage=collect", "image_file=/nonexistent/cat.jpg", "query=hi"], "image not found: /nonexistent/cat.jpg"),
    (["stage=nonsense"], "unknown stage='nonsense'"),
    (["stge=collect"], "unknown key stge (did you mean stage?)"),
    (["model.dtype=float64", "stage=collect", "image_file=IMG", "query=hi"], "model.dtype='float64'"),
])
def test_bad_input_gives_one_clear_error(args, needle, image_file, tmp_path):
    """In this process (tests/inprocess.py: the script as __main__, its exit status and output); the exit
    status a shell sees is test_unreadable_image's."""
    args = [a.replace("IMG", str(image_file)) for a in args]
    r = run_script(ROOT / "localization_heads_finder.py", *args, "model.device=cpu", f"model.cache_dir={tmp_path}/cache",
                   f"output_dir={tmp_path}", cwd=tmp_path)
    assert r.returncode != 0
    assert needle in r.stderr + r.stdout
    assert "Traceback" not in r.stderr


def test_unreadable_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = run_cli("stage=collect", f"image_file={bad}", "query=hi", f"output_dir={tmp_path}")
    assert r.returncode == 2 and "cannot read image" in r.stderr and "broken.png" in r.stderr
    assert "Traceback" not in r.stderr
