"""Batch throughput of the real collection path (lab.stations.collect) at batch sizes 1 / 4 / 8.

Same model and samples for every batch size, in one process; prints samples/s and the speed-up
over batch size 1. Prompts differ in length, so batches are padded as in real use.

    python benchmarks/bench_batch.py                    # narrow 8-layer model, 336 px (576 image tokens)
    python benchmarks/bench_batch.py --preset llava15_7b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import machine

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench_capture import build  # noqa: E402
from lab.capture.station import Strategy, collect  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,4,8")
    ap.add_argument("--size", type=int, default=336)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--preset", default="narrow", choices=["narrow", "llava15_7b"])
    args = ap.parse_args()
    print(f"machine: {machine()}")
    vlm = build(args.size, args)
    words = "what is the color of the object on the left side of this picture".split()
    samples = [(Image.effect_noise((args.size + 8 * (i % 5), args.size), 50).convert("RGB"),
                " ".join(words[: 4 + i % 8]) + " ?") for i in range(args.samples)]
    collect(vlm, samples[:2], Strategy(), max_new_tokens=args.new_tokens)  # warm-up
    rates = {}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(0, len(samples), bs):
                collect(vlm, samples[i: i + bs], Strategy(), max_new_tokens=args.new_tokens)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - t0)
        rates[bs] = len(samples) / statistics.median(runs)
    base = rates[min(rates)]
    print(f"{args.samples} samples, {args.size}px, {'prefill' if not args.new_tokens else f'{args.new_tokens} new tokens'}")
    for bs, r in rates.items():
        print(f"  batch {bs:2d}: {r:7.2f} samples/s   x{r / base:.2f} vs batch {min(rates)}")


if __name__ == "__main__":
    main()
