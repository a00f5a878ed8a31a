"""Shared fixtures: tiny random LLaVA checkpoints built offline (never a hub download)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What CI exports, for a plain `python -m pytest` too (set before transformers is imported: it reads the
# hub flag once): never a hub request, figures without a display. The entry points run in this process
# (tests/inprocess.py) see the same.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one torch thread per worker (-n N workers share the cores);
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the subprocesses a test starts inherit it
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Property tests explore new random cases on every local run; under CI (CI=true) they replay a fixed
# sequence, so a landing never depends on the draw (a case found locally is fixed, then kept as a test).
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")


def _build(tmp_path_factory, name, **spec_kwargs) -> Path:
    from llava.tiny.llava15 import TinyLlavaSpec, save_tiny_llava

    out = tmp_path_factory.mktemp(name)
    save_tiny_llava(out, TinyLlavaSpec(**spec_kwargs))
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """Multi-head attention, CLIP centre-crop processor, 4x4 image grid."""
    return _build(tmp_path_factory, "tiny_mha", seed=1)


@pytest.fixture(scope="session")
def tiny_gqa_ckpt(tmp_path_factory) -> Path:
    """GQA text model: 8 query heads sharing 2 key/value heads."""
    return _build(tmp_path_factory, "tiny_gqa", text_heads=8, text_kv_heads=2, seed=2)


@pytest.fixture(scope="session")
def tiny_pad_ckpt(tmp_path_factory) -> Path:
    """Original LLaVA-1.5 pad-to-square processor, 8x8 grid."""
    return _build(tmp_path_factory, "tiny_pad", image_size=64, patch_size=8, pad_to_square=True, seed=3)


@pytest.fixture(scope="session")
def tiny_vlm(tiny_ckpt):
    from llava.model import load_vlm

    return load_vlm(str(tiny_ckpt), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_eager(tiny_ckpt):
    from llava.model import load_vlm

    return load_vlm(str(tiny_ckpt), device="cpu", dtype="float32", attn_implementation="eager")


@pytest.fixture(scope="session")
def toy_vlm():
    """The bundled toy model (the default of every entry point)."""
    from llava.model import load_vlm

    return load_vlm(str(ROOT / "llava" / "toy" / "checkpoint"), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory, toy_vlm):
    """The default toy run on its first 16 rows (stage=batch), then stage=evaluate into the same folder."""
    from lab.stages import StageContext, run_stage
    from helpers import make_cfg

    out = tmp_path_factory.mktemp("toy_run")
    for stage in ("batch", "evaluate"):
        cfg = make_cfg(f"stage={stage}", f"output_dir={out}", "end_index=16")
        run_stage(cfg, StageContext(loader=lambda: toy_vlm, output_dir=out))
    return out


@pytest.fixture(scope="session")
def toy_tokens_run(tmp_path_factory, toy_vlm):
    """4 toy rows captured at every generated token (strategy.query_positions=generated), with the
    vision tower's token->patch matrices (strategy.vision=true)."""
    from lab.stages import StageContext, run_stage
    from helpers import make_cfg

    out = tmp_path_factory.mktemp("toy_tokens")
    cfg = make_cfg("stage=batch", f"output_dir={out}", "end_index=4", "max_new_tokens=4",
                   "strategy.query_positions=generated", "strategy.vision=true")
    run_stage(cfg, StageContext(loader=lambda: toy_vlm, output_dir=out))
    return out


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium through Playwright, once per session (tests/browser_page.py opens pages on it).

    Skips and says why without Chromium or Playwright; under CI=true that is a failure instead, so a
    skip cannot hide a broken install."""
    from browser_page import ARGS, CHROMIUM, missing

    why = missing()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the browser tests cannot run: {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
