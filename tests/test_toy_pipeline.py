"""The head finder on the shipped toy model: it must find the heads that really localize.

Ground truth from the toy world: the referred object's box for every held-out row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_cfg

from lab.records.record import AttentionRecord
from lab.stages import StageContext, run_stage
from utils.settings.declarations import register_configs

ROOT = Path(__file__).resolve().parents[1]
register_configs()


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def cfg(*overrides):
    return make_cfg(*overrides)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Default run (model=toy, the toy grounding set): batch, then evaluate and ablate on the same records."""
    from llava.model import load_from_config

    out = tmp_path_factory.mktemp("toy_run")
    base = cfg(f"output_dir={out}")
    vlm = load_from_config(base.model)
    ctx = StageContext(loader=lambda: vlm, output_dir=out)
    batch = run_stage(cfg(f"output_dir={out}", "max_new_tokens=2"), ctx)
    ev = run_stage(cfg("stage=evaluate", f"output_dir={out}", f"heads_file={out / 'heads.json'}", "max_new_tokens=2"), ctx)
    ab = run_stage(cfg("stage=ablate", f"output_dir={out}", f"heads_file={out / 'heads.json'}", "end_index=80",
                       "max_new_tokens=2"), ctx)
    return out, batch, ev, ab


def _pointing(rec: AttentionRecord, layer: int, head: int) -> bool:
    lay = rec.layout
    m = lay.to_grid(rec.image_attention[0, layer, head])
    r, c = np.unravel_index(np.argmax(m), m.shape)
    x, y = lay.cell_center(r, c)
    bx, by, bw, bh = rec.meta.extra["bbox"]
    return bx <= x <= bx + bw and by <= y <= by + bh


def test_selected_heads_include_a_head_pointing_at_the_object(run):
    out, batch, _, _ = run
    assert batch["collect"]["ok"] + batch["collect"]["skipped_existing"] == 240
    heads = [(h["layer"], h["head"]) for h in json.loads((out / "heads.json").read_text())["heads"]]
    recs = [AttentionRecord.load(p) for p in sorted((out / "attention").glob("*.safetensors"))]
    acc = {h: np.mean([_pointing(r, *h) for r in recs]) for h in heads}
    assert max(acc.values()) >= 0.90, acc


def test_default_run_selects_the_documented_heads(run):
    """README: the default command selects L1H0, L1H3, L2H2, on every supported transformers version
    (5.0-5.5 once selected L0H1, L3H2, L1H0 from a vision tower left random)."""
    out, _, _, _ = run
    heads = [(h["layer"], h["head"]) for h in json.loads((out / "heads.json").read_text())["heads"]]
    assert heads == [(1, 0), (1, 3), (2, 2)]


def test_grounding_beats_baselines(run):
    _, _, ev, _ = run
    sel, allh, rnd = ev["selected_heads"], ev["all_heads_mean"], ev["random_heads"]
    assert sel["acc@0.5"] >= 0.5 and sel["acc@0.5"] >= 2 * allh["acc@0.5"], ev
    assert sel["pointing"] > rnd["pointing"] and sel["miou"] > rnd["miou"]


def test_masking_selected_heads_hurts_more_than_random(run):
    _, _, _, ab = run
    data = json.loads(Path(ab["ablation_file"]).read_text())
    assert data["baseline"]["accuracy"] >= 0.95
    assert data["selected_heads"]["accuracy"] < data["random_heads"]["mean"] - 0.3, data
