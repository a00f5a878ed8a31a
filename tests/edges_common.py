"""Shared by tests/test_edges_*.py: run a stage as the entry point would (in process), guard against
hangs, build adversarial files (images, records, JSONL rows) and check the batch invariants."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from helpers import make_cfg
from PIL import Image

from lab.records.record import AttentionRecord, record_path
from lab.stages import StageContext, run_stage
from utils.data import file_stem
from utils.errors import UserError
from utils.io import read_jsonl_lenient
from utils.settings.reading import check_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("LHF_EDGE_EXAMPLES_FACTOR", "1"))  # e.g. 10 for a longer hunt


@contextmanager
def no_hang(seconds: int = 60) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging: a FIFO opened for reading blocks forever."""
    def on_alarm(signum, frame):  # noqa: ARG001
        raise TimeoutError(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class Loader:
    """The model loader a StageContext gets; counts loads (settings must fail before any)."""

    def __init__(self, vlm: Any):
        self.vlm, self.calls = vlm, 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.vlm


def run(vlm: Any, out: Path, *overrides: str, config_name: str = "localization_config") -> tuple[int, str, Any]:
    """(exit status, error line, result) of an entry point run in process: 0 on success, 2 on a
    UserError (what run_entry prints as `error: ...`). Any other exception propagates: a traceback."""
    cfg = make_cfg(*overrides, f"output_dir={out}", config_name=config_name)
    loader = Loader(vlm)
    try:
        check_config(cfg)
        return 0, "", run_stage(cfg, StageContext(loader=loader, output_dir=Path(out)))
    except UserError as e:
        return 2, str(e), loader


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def manifest_status(out: Path) -> dict[str, dict]:
    """id -> its last manifest line (all manifests of the folder)."""
    last: dict[str, dict] = {}
    for m in sorted(out.glob("manifest*.jsonl")):
        for line in read_jsonl_lenient(m):
            last[line["id"]] = line
    return last


def check_batch_invariants(out: Path, rows: list[dict]) -> dict[str, dict]:
    """Every row accounted for in the manifest (its last line ok or failed, with a reason); every ok
    row's record exists under the row's own file name and holds that row; no other record on disk
    (the folder is the rows' own). Returns the manifest's last line per id."""
    status = manifest_status(out)
    ids = [str(r["id"]) for r in rows]
    missing = [i for i in ids if i not in status]
    assert not missing, f"rows missing from the manifest: {missing[:5]}"
    for i in ids:
        m = status[i]
        assert m["status"] in ("ok", "failed"), m
        assert m["file"] == file_stem(i)
        if m["status"] == "ok":
            assert AttentionRecord.load(record_path(out, i)).meta.sample_id == i
        else:
            assert isinstance(m["reason"], str) and m["reason"], m
    folder = out / "attention"
    on_disk = {p.name for p in folder.glob("*.safetensors")} if folder.exists() else set()
    assert on_disk == {f"{file_stem(i)}.safetensors" for i in ids if status[i]["status"] == "ok"}
    return status


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def scene(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    """A light image with one red square (and its box)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), (235, 235, 235))
    s = max(1, min(w, h) // 3)
    x, y = int(rng.integers(0, max(1, w - s))), int(rng.integers(0, max(1, h - s)))
    img.paste((200, 30, 30), (x, y, x + s, y + s))
    return img


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A tiny PNG file whose header claims `width` x `height` pixels (a decompression bomb's size)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))  # one row; the rest is missing
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def craft_record(path: Path, template: AttentionRecord, meta: dict | None = None,
                 attention: np.ndarray | None = None) -> Path:
    """Write a record file whose metadata / attention are given as-is (no validation on the way out)."""
    from dataclasses import asdict

    from safetensors.numpy import save

    m = json.loads(json.dumps(asdict(template.meta))) if meta is None else meta
    tensors = {"image_attention": np.ascontiguousarray(template.image_attention if attention is None else attention),
               "input_ids": np.ascontiguousarray(template.input_ids)}
    if template.generated_ids is not None:
        tensors["generated_ids"] = np.ascontiguousarray(template.generated_ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(save(tensors, metadata={"attention_record": json.dumps(m)}))
    return path


def entry(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """localization_heads_finder.py run as a user would (a fresh process, the repo as cwd)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "localization_heads_finder.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def one_error_line(stderr: str) -> str:
    """The run's last stderr line, which must be `error: ...`, with no traceback anywhere."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert lines and lines[-1].startswith("error: "), stderr[-2000:]
    return lines[-1]
