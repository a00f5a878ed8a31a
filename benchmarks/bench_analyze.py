"""Benchmark: per-sample head analysis + selection over synthetic LLaVA-sized records.

    python benchmarks/bench_analyze.py                 # 1000 records, 32 layers x 32 heads, 24x24
    python benchmarks/bench_analyze.py --n 200 --grid 24

Each record is ``image_attention[L, H, V]`` float32 (V = grid * grid): heavy-tailed speckle
noise (log-normal weights, many small above-mean components: the expensive case for labelling)
scaled to a per-head image-attention mass, plus a few planted localization heads (one compact
blob, high mass). Records are generated in chunks, in memory; generation time is reported
separately and is NOT part of the timed total. Timed: `analyze_sample` (S_img + vectorised
spatial entropy + bottom-row share) for every record, then `select_heads` over all of them.
Target: <= 60 s for 1000 records of 32 x 32 x 576.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lab.analysis.per_sample import analyze_sample  # noqa: E402
from lab.analysis.across_samples import select_heads  # noqa: E402

TARGET_S = 60.0


def make_chunk(rng: np.random.Generator, n: int, layers: int, heads: int, grid: int, planted: list[tuple[int, int]]) -> np.ndarray:
    """``n`` synthetic records ``[n, L, H, V]`` float32."""
    V = grid * grid
    w = rng.lognormal(0.0, 1.5, size=(n, layers, heads, V)).astype(np.float32)
    w /= w.sum(-1, keepdims=True)
    mass = rng.uniform(0.02, 0.2, size=(n, layers, heads, 1)).astype(np.float32)
    att = w * mass
    b = max(2, grid // 8)
    for i in range(n):
        for l, h in planted:
            blob = np.zeros((grid, grid), dtype=np.float32)
            r, c = rng.integers(0, grid - b + 1, size=2)
            blob[r : r + b, c : c + b] = 1.0
            blob = blob.ravel() / blob.sum()
            att[i, l, h] = rng.uniform(0.5, 0.8) * (0.9 * blob + 0.1 / V)
    return att


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="number of records (default 1000)")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--grid", type=int, default=24, help="grid side: V = grid * grid (default 24 -> 576)")
    ap.add_argument("--chunk", type=int, default=50, help="records generated at a time (memory)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=TARGET_S, help="time target in seconds for the timed part")
    args = ap.parse_args(argv)

    L, H, G, N = args.layers, args.heads, args.grid, args.n
    rng = np.random.default_rng(args.seed)
    planted = [(min(L - 1, L // 2), 3 % H), (min(L - 1, L // 2 + 2), 7 % H), (min(L - 1, 3 * L // 4), 11 % H)]
    print(f"records: {N} x {L} layers x {H} heads x {G * G} tokens ({G}x{G}), float32; planted heads {planted}")

    s_img = np.empty((N, L, H))
    ent = np.empty((N, L, H))
    gen_s = 0.0
    analyze_s = 0.0
    done = 0
    while done < N:
        m = min(args.chunk, N - done)
        t0 = time.perf_counter()
        chunk = make_chunk(rng, m, L, H, G, planted)
        gen_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for j in range(m):
            r = analyze_sample(chunk[j], (G, G))
            s_img[done + j] = r.s_img
            ent[done + j] = r.entropy
        analyze_s += time.perf_counter() - t0
        done += m
        del chunk

    t0 = time.perf_counter()
    import kneed  # noqa: F401  (one-time import, ~1-2 s: reported apart from the selection)

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sel = select_heads(s_img, ent)
    select_s = time.perf_counter() - t0

    total = analyze_s + select_s
    print(f"generation (not timed):     {gen_s:8.2f} s")
    print(f"per-sample analysis:        {analyze_s:8.2f} s  ({1000 * analyze_s / N:.2f} ms/record)")
    print(f"selection:                  {select_s:8.3f} s")
    print(f"total (analysis+selection): {total:8.2f} s  -> {N / total:.1f} records/s")
    print(f"one-time kneed import:      {import_s:8.2f} s  (total incl. import: {total + import_s:.2f} s)")
    ok = total + import_s <= args.target
    print(f"target <= {args.target:.0f} s: {'MET' if ok else 'NOT MET'}")
    print(f"threshold {sel.threshold:.4g} ({sel.elbow.method_used}), {int(sel.eligible.sum())} eligible heads")
    print("selected:", sel.head_list, "(planted:", sorted(planted), ")")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
