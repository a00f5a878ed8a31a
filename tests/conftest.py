"""Shared fixtures: tiny random LLaVA checkpoints built offline (never a hub download)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _build(tmp_path_factory, name, **spec_kwargs) -> Path:
    from llava.builders import TinyLlavaSpec, save_tiny_llava

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
