"""python -m llava.planted --out DIR [--seed S] [--samples N] [--heads L:H,...]

Writes DIR/checkpoint/ (a LLaVA-1.5-geometry checkpoint with constructed weights + planted.json)
and, with --samples N, DIR/data/planted_grounding.jsonl + DIR/data/images/ (docs/planted.md).
"""

from __future__ import annotations

import argparse
import sys
import time

from utils.errors import UserError


def parse_heads(text: str) -> list[tuple[int, int]]:
    """'14:13,14:24,17:5' -> [(14, 13), (14, 24), (17, 5)]; layers 2..31, heads 0..31."""
    out = []
    for part in text.split(","):
        try:
            layer, head = (int(v) for v in part.strip().split(":"))
        except ValueError:
            raise UserError(f"--heads {text!r}: each entry must be LAYER:HEAD, got {part!r}") from None
        if not (2 <= layer < 32 and 0 <= head < 32) or (layer, head) == (0, 0):
            raise UserError(f"--heads {text!r}: {layer}:{head} is outside layers 2..31 x heads 0..31")
        out.append((layer, head))
    if not out or len(set(out)) != len(out):
        raise UserError(f"--heads {text!r}: give one or more distinct LAYER:HEAD pairs")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llava.planted", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write (checkpoint/ and data/ inside)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the head placement, strengths and scenes")
    ap.add_argument("--samples", type=int, default=0, help="grounding rows to write into DIR/data/")
    ap.add_argument("--heads", default=None, help="localization heads, LAYER:HEAD,... (default 14:13,14:24,17:5)")
    args = ap.parse_args(argv)
    try:
        heads = parse_heads(args.heads) if args.heads else None
        if args.samples < 0:
            raise UserError(f"--samples must be >= 0, got {args.samples}")
        from llava.planted.build import check_target, save_planted

        check_target(args.out, args.seed)  # before the seconds of building
        t0 = time.perf_counter()
        out = save_planted(args.out, args.seed, heads, args.samples)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}/checkpoint" + (f" and {args.samples} rows in {out}/data" if args.samples else "")
          + f" in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
