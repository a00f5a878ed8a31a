"""Stages through Hydra's compose API (in process). The batch stage killed (-9) and resumed in a real
process: tests/test_edges_batch.py (test_kill_9_then_resume_gives_the_same_records_and_heads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_cfg
from PIL import Image

from lab.records.record import AttentionRecord
from lab.stages import StageContext, run_stage
from utils.settings.declarations import register_configs
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
register_configs()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A JSONL of 6 rows with coloured squares (and their boxes) on non-square images."""
    d = tmp_path_factory.mktemp("data")
    (d / "imgs").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(6):
        w, h = (96, 64) if i % 2 else (64, 96)
        img = Image.new("RGB", (w, h), (235, 235, 235))
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        img.paste((200, 30, 30), (x, y, x + 20, y + 20))
        img.save(d / "imgs" / f"s{i}.png")
        rows.append({"id": f"s{i}", "prompt": "what color is the square ?", "image_path": f"imgs/s{i}.png",
                     "bbox": [x, y, 20, 20], "answer": "red", "group": "a" if i < 3 else "b"})
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def ctx_for(cfg, out, vlm):
    return StageContext(loader=lambda: vlm, output_dir=Path(out))


def test_batch_then_select_analyze_visualize_evaluate(dataset, tiny_vlm, tiny_ckpt, tmp_path):
    common = [f"data_file={dataset / 'data.jsonl'}", f"output_dir={tmp_path}", "batch_size=4", "max_new_tokens=2",
              "selection.exclude_layers=[0]", "top_k=2", "visualize_batch=true"]
    res = run_stage(make_cfg("stage=batch", *common), ctx_for(None, tmp_path, tiny_vlm))
    assert res["collect"]["ok"] == 6 and res["collect"]["failed"] == 0
    heads = json.loads((tmp_path / "heads.json").read_text())
    assert len(heads["heads"]) == 2 and heads["records"]["count"] == 6
    assert all(h["layer"] != 0 for h in heads["ranked"])
    csv_lines = (tmp_path / "heads.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + tiny_vlm.num_layers * tiny_vlm.num_heads
    visual = json.loads((tmp_path / "visual_heads.json").read_text())
    assert set(visual["groups"]) == {"a", "b"}
    for f in ("mean_s_img.png", "mean_entropy.png", "frequency.png", "elbow.png"):
        assert (tmp_path / "figures" / f).stat().st_size > 1000
    assert len(list((tmp_path / "figures" / "samples").glob("*.png"))) == 6
    html = (tmp_path / "index.html").read_text()
    assert "figures/elbow.png" in html
    rec = AttentionRecord.load(tmp_path / "attention" / "s1.safetensors")
    assert rec.meta.extra["bbox"] and rec.meta.extra["group"] == "a"

    att = str(tmp_path / "attention" / "s2.safetensors")
    out = run_stage(make_cfg("stage=analyze", f"attention_file={att}", *common), ctx_for(None, tmp_path, tiny_vlm))
    ana = json.loads(Path(out["analysis"]).read_text())
    assert len(ana["entropy"]) == tiny_vlm.num_layers and "passes_c1" in ana
    vis = run_stage(make_cfg("stage=visualize", f"attention_file={att}", f"heads_file={tmp_path / 'heads.json'}", *common),
                    ctx_for(None, tmp_path, tiny_vlm))
    assert Path(vis["figure"]).exists() and [tuple(h) for h in vis["heads"]] == [tuple((h["layer"], h["head"])) for h in heads["heads"]]
    ev = run_stage(make_cfg("stage=evaluate", *common), ctx_for(None, tmp_path, tiny_vlm))
    metrics = json.loads(Path(ev["metrics_file"]).read_text())
    assert set(metrics) >= {"selected_heads", "all_heads_mean", "random_heads"}
    assert metrics["selected_heads"]["n"] == 6 and 0 <= metrics["selected_heads"]["miou"] <= 1


def test_missing_image_is_recorded_and_others_finish(dataset, tiny_vlm, tmp_path):
    lines = (dataset / "data.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    bad["image_path"] = "imgs/does_not_exist.png"
    lines[1] = json.dumps(bad)
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n")
    for i in range(6):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        (tmp_path / "imgs" / f"s{i}.png").write_bytes((dataset / "imgs" / f"s{i}.png").read_bytes())
    (tmp_path / "imgs" / "s3.png").write_bytes(b"corrupt")
    res = run_stage(make_cfg("stage=batch", f"data_file={data}", f"output_dir={tmp_path}/run", "batch_size=3",
                             "max_new_tokens=0", "selection.exclude_layers=[]"), ctx_for(None, tmp_path / "run", tiny_vlm))
    assert res["collect"]["ok"] == 4 and res["collect"]["failed"] == 2
    manifest = [json.loads(x) for x in (tmp_path / "run" / "manifest.jsonl").read_text().splitlines()]
    failed = {m["id"]: m["reason"] for m in manifest if m["status"] == "failed"}
    assert "does_not_exist.png" in failed["s1"] and "s3.png" in failed["s3"]


def test_broken_jsonl_line_is_named_before_loading_the_model(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "a", "prompt": "p", "image_path": "x.png"}\n{"id": "b", "prompt": \n'
                    '{"id": "c", "image_path": "y.png"}\n{"id": "a", "prompt": "p", "image_path": "x.png"}\n')
    loaded = []
    ctx = StageContext(loader=lambda: loaded.append(1), output_dir=tmp_path)
    with pytest.raises(UserError) as e:
        run_stage(make_cfg("stage=batch", f"data_file={data}", f"output_dir={tmp_path}"), ctx)
    msg = str(e.value)
    assert f"{data}:2" in msg and f"{data}:3" in msg and "prompt" in msg and f"{data}:4" in msg and "duplicate" in msg
    assert not loaded


def test_shard_and_range_selection():
    from utils.data import Row, select_rows

    rows = [Row(id=str(i), prompt="p", image_path="x", line=i + 1) for i in range(10)]
    assert [r.id for r in select_rows(rows, 2, 8)] == ["2", "3", "4", "5", "6", "7"]
    shards = [[r.id for r in select_rows(rows, shard=f"{i}/3")] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(r.id for r in rows) and shards[0] == ["0", "3", "6", "9"]
    with pytest.raises(UserError):
        select_rows(rows, shard="3/3")
