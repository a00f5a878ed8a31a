"""torchrun with 2 processes (gloo, CPU) gives the same records and heads.json as one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab.records.record import AttentionRecord

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_ranks_equal_single_process(tiny_ckpt, tmp_path):

    data = tmp_path / "data.jsonl"
    (tmp_path / "imgs").mkdir()
    from PIL import Image

    rng = np.random.default_rng(1)
    lines = []
    for i in range(7):
        w, h = (80, 56) if i % 2 else (56, 80)
        img = Image.new("RGB", (w, h), (230, 230, 230))
        x, y = int(rng.integers(0, w - 16)), int(rng.integers(0, h - 16))
        img.paste((30, 30, 200), (x, y, x + 16, y + 16))
        img.save(tmp_path / "imgs" / f"r{i}.png")
        lines.append(json.dumps({"id": f"r{i}", "prompt": "what color is the square ?" + " ?" * (i % 3),
                                 "image_path": f"imgs/r{i}.png", "bbox": [x, y, 16, 16]}))
    data.write_text("\n".join(lines) + "\n")
    common = ["stage=batch", f"data_file={data}", f"model.name_or_path={tiny_ckpt}", "model.builder=null",
              "model.name=t", "model.device=cpu", "batch_size=3", "max_new_tokens=0", "selection.exclude_layers=[]"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    single = tmp_path / "single"
    r1 = subprocess.run([sys.executable, str(ROOT / "localization_heads_finder.py"), *common, f"output_dir={single}"],
                        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-2000:]
    multi = tmp_path / "multi"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    r2 = subprocess.run([*torchrun, str(ROOT / "localization_heads_finder.py"), *common, f"output_dir={multi}"],
                        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert sorted(p.name for p in (multi).glob("manifest.shard*.jsonl")) == ["manifest.shard0-of-2.jsonl", "manifest.shard1-of-2.jsonl"]
    a = sorted((single / "attention").glob("*.safetensors"))
    b = sorted((multi / "attention").glob("*.safetensors"))
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 7
    for pa, pb in zip(a, b):
        ra, rb = AttentionRecord.load(pa), AttentionRecord.load(pb)
        assert np.abs(ra.image_attention - rb.image_attention).max() <= 1e-6
    ha = json.loads((single / "heads.json").read_text())
    hb = json.loads((multi / "heads.json").read_text())
    assert [(h["layer"], h["head"], h["frequency"]) for h in ha["ranked"]] == [(h["layer"], h["head"], h["frequency"]) for h in hb["ranked"]]
    shutil.rmtree(tmp_path / "imgs")
