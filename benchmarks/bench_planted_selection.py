"""The paper's setting unscaled on the planted LLaVA-1.5-7B-geometry model: 1,000 samples, every default
of method=paper (k=10, the elbow over 1,024 heads), and whether the selection is exactly the planted
localization heads.

This was a slow test (tests/test_planted.py, ~10 min of CI per run); the claim stays checked there at
100 samples (`test_hundred_samples_select_exactly_the_planted_heads`) and at 24 in the default run.
The whole world is measured here: the real `stage=batch` (composed config -> `lab.stages.run_stage`),
one forward per sample (`max_new_tokens=0`: the selection reads the last input token only).

    python benchmarks/bench_planted_selection.py                    # 1,000 samples, CPU float32
    python benchmarks/bench_planted_selection.py --samples 300 --out /tmp/planted
    python benchmarks/bench_planted_selection.py --device cuda --dtype bfloat16

Prints the machine, the seconds of building, collecting + selecting, samples/s, the selected heads
against planted.json, the frequency of each selected head and of the next three, and exits 1 when the
selection is not the planted heads (so a run can gate on it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine

sys.path.insert(0, str(ROOT / "tests"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", type=Path, default=None, help="folder for the checkpoint and the run (default: a temporary one)")
    args = p.parse_args(argv)

    from helpers import make_cfg

    from lab.stages import StageContext, run_stage
    from llava.model import load_vlm
    from llava.planted.build import save_planted

    base = args.out or Path(tempfile.mkdtemp(prefix="planted_bench_"))
    print(f"machine: {machine()}")
    t0 = time.perf_counter()
    out = save_planted(base / "p", seed=args.seed, samples=args.samples)
    t_build = time.perf_counter() - t0
    plan = json.loads((out / "checkpoint" / "planted.json").read_text())
    vlm = load_vlm(str(out / "checkpoint"), device=args.device, dtype=args.dtype)
    run = base / "run"
    cfg = make_cfg("model=planted", f"model.name_or_path={out / 'checkpoint'}", f"batch_size={args.batch_size}",
                   "max_new_tokens=0", f"model.device={args.device}", f"model.dtype={args.dtype}",
                   f"data_file={out / 'data' / 'planted_grounding.jsonl'}", f"output_dir={run}", "report.max_samples=0")
    t0 = time.perf_counter()
    run_stage(cfg, StageContext(loader=lambda: vlm, output_dir=run))
    t_run = time.perf_counter() - t0
    heads = json.loads((run / "heads.json").read_text())
    got = sorted((h["layer"], h["head"]) for h in heads["heads"])
    want = sorted(tuple(h) for h in plan["localization_heads"])
    print(f"samples: {args.samples}  seed: {args.seed}  device: {args.device} {args.dtype}")
    print(f"build: {t_build:.1f} s  collect + select: {t_run:.1f} s  ({args.samples / t_run:.2f} samples/s)")
    print(f"planted: {want}")
    print(f"selected: {got}  {'== planted' if got == want else '!= planted'}")
    for h in heads["ranked"][:len(want) + 3]:
        print(f"  L{h['layer']}H{h['head']}: frequency {h['frequency']}")
    exact = got == want and heads["ranked"][len(want)]["frequency"] < heads["ranked"][len(want) - 1]["frequency"]
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
