"""Validating a large JSONL data file: peak RSS and time of the code path stage=batch uses.

    python benchmarks/bench_jsonl.py [--rows 1000000] [--file /tmp/big.jsonl] [--root <checkout>]

Writes a file of `--rows` toy-like rows (about 200 bytes each; kept and reused when it exists),
then, each in a fresh process (RSS never shrinks): the whole file selected, `end_index=8`, and
`shard=0/4`. Peak RSS is the process's ru_maxrss minus its RSS after the imports; time is wall
time of validation + selection. The rows selected are kept, so their memory is part of the run's
need (a million kept rows cost what a million Row objects cost); `end_index=8` shows the bound
of the validation itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
import utils.data as D
base = rss()
t0 = time.perf_counter()
start, end, shard = 0, (None if sys.argv[3] == "-" else int(sys.argv[3])), (None if sys.argv[4] == "-" else sys.argv[4])
try:
    from utils.data import load_selection
except ImportError:
    load_selection = None
if load_selection is not None:
    rows = load_selection(sys.argv[2], start_index=start, end_index=end, shard=shard, progress=False).rows
else:  # the code path before streaming validation
    rows = D.select_rows(D.load_rows(sys.argv[2]), start, end, shard)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rows": len(rows), "seconds": round(dt, 2), "peak_extra_mib": round((peak - base) / 2**20, 1)}))
"""


def write_file(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"sample_{i:07d}", "prompt": "what shape is the yellow one in the picture?",
                                "image_path": f"images/toy_{i % 240:04d}.png", "bbox": [40, 12, 24, 24],
                                "answer": "cross", "group": "shape_of_color"}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--file", default="/tmp/bench_jsonl_1m.jsonl")
    ap.add_argument("--root", default=str(ROOT), help="the checkout whose code is measured (e.g. an older commit's)")
    args = ap.parse_args()
    path = Path(args.file)
    if not path.exists() or sum(1 for _ in open(path, "rb")) != args.rows:
        write_file(path, args.rows)
    print(f"{path}: {args.rows} rows, {os.path.getsize(path) / 2**20:.0f} MiB")
    for end, shard, label in (("-", "-", "all rows"), ("8", "-", "end_index=8"), ("-", "0/4", "shard=0/4")):
        out = subprocess.run([sys.executable, "-c", CHILD, args.root, str(path), end, shard],
                             capture_output=True, text=True, check=True).stdout
        print(f"{label:12s} {out.strip()}")


if __name__ == "__main__":
    main()
