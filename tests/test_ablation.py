"""stage=ablate on a tiny random model: plumbing, the ablation.json schema, and that masking matters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from inprocess import run_script
from helpers import make_cfg
from PIL import Image

from lab.runs.conditions import answer_correct, normalize_answer
from lab.stages import StageContext, run_stage
from lab.capture.station import Strategy, collect
from utils.settings.declarations import register_configs
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def ctx(out, vlm):
    return StageContext(loader=lambda: vlm, output_dir=Path(out))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_vlm):
    """6 rows whose "answer" is the tiny model's own baseline answer: baseline accuracy is exactly 1."""
    d = tmp_path_factory.mktemp("ablate_data")
    (d / "imgs").mkdir()
    rng = np.random.default_rng(0)
    queries = ["what color is the square ?", "where is the red object ?", "what shape is in the image ?"]
    rows = []
    for i in range(6):
        w, h = (96, 64) if i % 2 else (64, 96)
        img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 255, 3)))
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        img.paste((200, 30, 30), (x, y, x + 20, y + 20))
        img.save(d / "imgs" / f"a{i}.png")
        rows.append({"id": f"a{i}", "prompt": queries[i % 3], "image_path": f"imgs/a{i}.png"})
    recs = collect(tiny_vlm, [(Image.open(d / "imgs" / f"a{i}.png").convert("RGB"), r["prompt"], r["id"]) for i, r in enumerate(rows)],
                   Strategy(capture=False), max_new_tokens=3)
    for r, rec in zip(rows, recs):
        assert rec.meta.generated_text.strip()
        r["answer"] = rec.meta.generated_text
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _heads_file(path: Path, heads) -> Path:
    path.write_text(json.dumps({"heads": [{"layer": l, "head": h} for l, h in heads]}))
    return path


# ---- answer matching --------------------------------------------------------------------------
@pytest.mark.parametrize("pred,ref,match,ok", [
    ("Red.", "red", "exact", True),
    ("red square on the left", "red", "exact", True),
    ("The red one", "red", "exact", True),
    ("a dark red", "red", "exact", False),
    ("a dark red", "red", "contains", True),
    ("two", "2", "exact", True),
    ("Yes, it is", "yes", "exact", True),
    ("no", "yes", "contains", False),
    ("light blue sky", "light blue", "exact", True),
    ("blue light", "light blue", "contains", False),
    ("", "red", "exact", False),
])
def test_answer_matching(pred, ref, match, ok):
    assert answer_correct(pred, ref, match) is ok


def test_normalize_answer():
    assert normalize_answer("The  Cat's hat, an apple!") == ["cat", "s", "hat", "apple"]
    with pytest.raises(UserError, match="ablation.match='fuzzy'"):
        answer_correct("a", "a", "fuzzy")  # type: ignore[arg-type]


# ---- the stage ----------------------------------------------------------------------------------
def _common(dataset, out):
    return [f"data_file={dataset / 'data.jsonl'}", f"output_dir={out}", "batch_size=4", "max_new_tokens=3"]


def test_ablate_with_heads_file(dataset, tiny_vlm, tmp_path):
    hf = _heads_file(tmp_path / "heads.json", [(2, 1), (3, 0)])
    res = run_stage(make_cfg("stage=ablate", f"heads_file={hf}", "ablation.random_draws=3", "seed=7",
                             "selection.exclude_layers=[0,1]", *_common(dataset, tmp_path)), ctx(tmp_path, tiny_vlm))
    data = json.loads((tmp_path / "ablation.json").read_text())
    assert set(data) >= {"baseline", "selected_heads", "random_heads", "settings"}
    assert data["baseline"] == {"accuracy": 1.0, "n": 6, "correct": 6}
    sel = data["selected_heads"]
    assert sel["heads"] == [[2, 1], [3, 0]] and sel["n"] == 6 and 0.0 <= sel["accuracy"] <= 1.0
    assert sel["source"] == str(hf)
    rnd = data["random_heads"]
    assert len(rnd["draws"]) == 3 and rnd["n"] == 6
    assert rnd["mean"] == pytest.approx(np.mean([d["accuracy"] for d in rnd["draws"]]))
    assert rnd["std"] == pytest.approx(np.std([d["accuracy"] for d in rnd["draws"]]))
    for d in rnd["draws"]:
        assert len(d["heads"]) == 2
        assert all(l not in (0, 1) and [l, h] not in sel["heads"] for l, h in d["heads"])  # exclude_layers=[0,1]
    assert data["settings"]["match"] == "exact" and data["settings"]["random_draws"] == 3
    assert len(data["samples"]) == 6 and all(s["baseline_correct"] for s in data["samples"])
    png = tmp_path / "figures" / "ablation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert res["ablation_file"] == str(tmp_path / "ablation.json")
    assert "ablation.json" in (tmp_path / "index.html").read_text()
    # same seed, same draws
    out2 = tmp_path / "again"
    run_stage(make_cfg("stage=ablate", f"heads_file={hf}", "ablation.random_draws=3", "seed=7",
                       "selection.exclude_layers=[0,1]", *_common(dataset, out2)), ctx(out2, tiny_vlm))
    again = json.loads((out2 / "ablation.json").read_text())
    assert again["random_heads"]["draws"] == rnd["draws"] and again["selected_heads"] == sel


def test_masking_all_heads_changes_the_answers(dataset, tiny_vlm, tmp_path, capsys):
    L, H = tiny_vlm.num_layers, tiny_vlm.num_heads
    hf = _heads_file(tmp_path / "all.json", [(l, h) for l in range(L) for h in range(H)])
    run_stage(make_cfg("stage=ablate", f"heads_file={hf}", f"top_k={L * H}", "selection.exclude_layers=[]",
                       "ablation.match=contains", *_common(dataset, tmp_path)), ctx(tmp_path, tiny_vlm))
    data = json.loads((tmp_path / "ablation.json").read_text())
    assert data["baseline"]["accuracy"] == 1.0
    assert len(data["selected_heads"]["heads"]) == L * H
    assert data["selected_heads"]["changed_vs_baseline"] > 0
    assert any(s["selected_heads"] != s["baseline"] for s in data["samples"])
    assert data["selected_heads"]["accuracy"] < 1.0
    assert data["random_heads"]["mean"] is None and data["random_heads"]["draws"] == []  # no head left to draw
    out = capsys.readouterr().out
    assert "baseline" in out and "selected_heads" in out and "n/a" in out
    for mode in ("uniform",):
        o = tmp_path / mode
        run_stage(make_cfg("stage=ablate", f"heads_file={hf}", f"top_k={L * H}", "selection.exclude_layers=[]",
                           f"ablation.maskout_mode={mode}", *_common(dataset, o)), ctx(o, tiny_vlm))
        assert json.loads((o / "ablation.json").read_text())["selected_heads"]["changed_vs_baseline"] > 0


def test_ablate_selects_heads_on_the_fly(dataset, tiny_vlm, tmp_path):
    res = run_stage(make_cfg("stage=ablate", "top_k=2", "selection.exclude_layers=[0]", "ablation.random_draws=2",
                             "ablation.visual_heads=true", "visual_heads.min_ratio=0.02",
                             *_common(dataset, tmp_path)), ctx(tmp_path, tiny_vlm))
    heads = json.loads((tmp_path / "heads.json").read_text())
    data = json.loads((tmp_path / "ablation.json").read_text())
    assert data["selected_heads"]["heads"] == [[h["layer"], h["head"]] for h in heads["heads"]]
    assert data["selected_heads"]["source"] == "selected on the fly from this run"
    assert len(list((tmp_path / "attention").glob("*.safetensors"))) == 6
    assert len(data["random_heads"]["draws"]) == 2 and res["baseline"]["accuracy"] == 1.0
    named = json.loads((tmp_path / "visual_heads.json").read_text())["named"]["heads"]
    assert named and data["visual_heads"]["heads"] == [[h["layer"], h["head"]] for h in named]
    assert data["visual_heads"]["source"] == str(tmp_path / "visual_heads.json") and data["visual_heads"]["n"] == 6


def test_ablate_errors(dataset, tiny_vlm, tmp_path):
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(json.dumps({"id": "x", "prompt": "what ?", "image_path": str(dataset / "imgs" / "a0.png")}) + "\n")
    with pytest.raises(UserError, match='no_answer.jsonl:1: missing "answer"'):
        run_stage(make_cfg("stage=ablate", f"data_file={no_answer}", f"output_dir={tmp_path}"), ctx(tmp_path, tiny_vlm))
    hf = _heads_file(tmp_path / "bad.json", [(9, 0)])
    with pytest.raises(UserError, match=r"heads L9H0 are outside"):
        run_stage(make_cfg("stage=ablate", f"heads_file={hf}", *_common(dataset, tmp_path)), ctx(tmp_path, tiny_vlm))
    good = _heads_file(tmp_path / "good.json", [(1, 0)])
    with pytest.raises(UserError, match="ablation.visual_heads=true: no .*visual_heads.json; run stage=select"):
        run_stage(make_cfg("stage=ablate", f"heads_file={good}", "ablation.visual_heads=true", *_common(dataset, tmp_path / "v")),
                  ctx(tmp_path / "v", tiny_vlm))
    with pytest.raises(UserError, match="ablation.match='fuzzy'"):
        run_stage(make_cfg("stage=ablate", "ablation.match=fuzzy", *_common(dataset, tmp_path)), ctx(tmp_path, tiny_vlm))


def test_ablate_through_the_entry_point(dataset, tiny_ckpt, tmp_path):
    """`python localization_heads_finder.py stage=ablate ...` as typed (run in this process: tests/inprocess.py)."""
    hf = _heads_file(tmp_path / "heads.json", [(2, 1), (3, 0)])
    r = run_script(ROOT / "localization_heads_finder.py", "stage=ablate", f"heads_file={hf}",
                   f"model.name_or_path={tiny_ckpt}", "model.builder=null", "model.name=t", "model.device=cpu",
                   "ablation.random_draws=2", f"hydra.run.dir={tmp_path / 'hydra'}", *_common(dataset, tmp_path),
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ablation:" in r.stdout and "random_heads" in r.stdout
    assert json.loads((tmp_path / "ablation.json").read_text())["baseline"]["accuracy"] == 1.0
