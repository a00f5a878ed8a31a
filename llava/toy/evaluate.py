"""Evaluate a toy checkpoint with generic Hugging Face code only.

    python -m llava.toy.evaluate [--checkpoint DIR] [--data JSONL] [--out summary.json]

(1) Answer accuracy: `AutoProcessor.apply_chat_template` + `model.generate` (greedy).
(2) Pointing accuracy of every text-model head (layer, head): the fraction of rows where the argmax,
    over image tokens, of that head's attention from the LAST INPUT TOKEN falls inside the referred
    object's box. The argmax grid cell's centre is mapped back to original-image pixels through the
    LLaVA-1.5 pad-to-square geometry (pad to a centred square of side max(w, h), then resize).
    Attentions come from eager attention with `output_attentions=True`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llava.toy import CHECKPOINT_DIR

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "examples" / "toy" / "toy_grounding.jsonl"


def load_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        r["image_abspath"] = str((path.parent / r["image_path"]).resolve())
    return rows


def load_model(checkpoint: str | Path = CHECKPOINT_DIR, attn_implementation: str = "eager"):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from llava.compat import load_complete

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = load_complete(AutoModelForImageTextToText, str(checkpoint), attn_implementation=attn_implementation,
                          dtype=torch.float32).eval()
    return model, processor


def build_inputs(processor, question: str, image: Image.Image):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=text, images=image, return_tensors="pt")


def grid_geometry(model, processor) -> tuple[int, int]:
    """(side of the square model image in pixels, number of patches per side)."""
    vc = model.config.vision_config
    return vc.image_size, vc.image_size // vc.patch_size


def cell_center_to_original(index: int, grid: int, image_size: int, width: int, height: int,
                            pad_to_square: bool = True) -> tuple[float, float]:
    """Centre of grid cell `index` (row-major) in original-image pixel coordinates.

    Pad-to-square: the original image sits centred in a square of side max(w, h) (offset
    `(side - h) // 2` or `(side - w) // 2`, as `LlavaImageProcessorPil.pad_to_square`), which is then
    resized to `image_size`. Without padding (CLIP resize + centre crop) the shortest edge is resized
    to `image_size` and the centre is cropped.
    """
    r, c = divmod(index, grid)
    u, v = (c + 0.5) * image_size / grid, (r + 0.5) * image_size / grid  # model-image pixels
    if pad_to_square:
        side = max(width, height)
        s = side / image_size
        return u * s - (side - width) // 2, v * s - (side - height) // 2
    s = min(width, height) / image_size
    return u * s + (width - min(width, height)) / 2, v * s + (height - min(width, height)) / 2


def inside(x: float, y: float, bbox) -> bool:
    bx, by, bw, bh = bbox
    return bx <= x <= bx + bw and by <= y <= by + bh


@torch.no_grad()
def evaluate(checkpoint=CHECKPOINT_DIR, data=DEFAULT_DATA, limit: int | None = None, rows=None,
             model=None, processor=None, generate: bool = True, verbose: bool = False) -> dict:
    if model is None:
        model, processor = load_model(checkpoint)
    rows = rows if rows is not None else load_rows(data)
    rows = rows[:limit] if limit else rows
    image_size, grid = grid_geometry(model, processor)
    pad = bool(getattr(processor.image_processor, "do_pad", False))
    image_token = model.config.image_token_id
    L = model.config.text_config.num_hidden_layers
    H = model.config.text_config.num_attention_heads
    hits = np.zeros((L, H), dtype=np.int64)
    group_hits: dict[str, np.ndarray] = {}
    group_n: dict[str, int] = {}
    chance = []
    correct = 0
    per_group: dict[str, list[int]] = {}
    details = []
    t0 = time.time()
    for row in rows:
        image = Image.open(row["image_abspath"]).convert("RGB")
        w, h = image.size
        inputs = build_inputs(processor, row["prompt"], image)
        pred = None
        if generate:
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            pred = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            ok = pred.lower() == row["answer"].lower()
            correct += ok
            per_group.setdefault(row.get("group", "all"), []).append(int(ok))
        att = model(**inputs, output_attentions=True).attentions  # L x [1, H, T, T]
        img_pos = (inputs["input_ids"][0] == image_token).nonzero().flatten()
        assert len(img_pos) == grid * grid, (len(img_pos), grid)
        centers = [cell_center_to_original(k, grid, image_size, w, h, pad) for k in range(grid * grid)]
        in_box = np.array([inside(x, y, row["bbox"]) for x, y in centers])
        chance.append(in_box.mean())
        g = row.get("group", "all")
        gh = group_hits.setdefault(g, np.zeros((L, H), dtype=np.int64))
        group_n[g] = group_n.get(g, 0) + 1
        for layer, a in enumerate(att):
            arg = a[0, :, -1, img_pos].argmax(-1).numpy()  # [H]
            hits[layer] += in_box[arg]
            gh[layer] += in_box[arg]
        details.append(dict(id=row["id"], answer=row["answer"], pred=pred))
        if verbose and pred is not None and pred != row["answer"]:
            print(f"  wrong: {row['id']} {row['prompt']!r} -> {pred!r} (want {row['answer']!r})")
    return _summary(checkpoint, data, rows, generate, correct, per_group, hits, group_hits, group_n, chance,
                    time.time() - t0, details)


def _summary(checkpoint, data, rows, generate, correct, per_group, hits, group_hits, group_n, chance,
             seconds, details) -> dict:
    """`evaluate`'s result: answer accuracy (overall, per group) and each head's pointing rate ``[L, H]``."""
    H = hits.shape[1]
    n = len(rows)
    pointing = hits / n
    order = np.argsort(-pointing, axis=None)
    top = [dict(layer=int(i // H), head=int(i % H), pointing=float(pointing.flat[i])) for i in order]
    return dict(
        checkpoint=str(checkpoint), data=str(data), n=n,
        answer_accuracy=correct / n if generate else None,
        answer_accuracy_by_group={g: float(np.mean(v)) for g, v in per_group.items()},
        pointing=pointing.round(4).tolist(),
        top_heads=top[:10],
        heads_at_least_90=[t for t in top if t["pointing"] >= 0.9],
        top_heads_by_group={
            g: [dict(layer=int(i // H), head=int(i % H), pointing=float((gh / group_n[g]).flat[i]))
                for i in np.argsort(-(gh / group_n[g]), axis=None)[:5]]
            for g, gh in group_hits.items()
        },
        chance_pointing=float(np.mean(chance)),
        seconds=seconds,
        details=details,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(CHECKPOINT_DIR))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON summary path (default: print only)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    res = evaluate(args.checkpoint, args.data, args.limit, verbose=args.verbose)
    print(f"rows: {res['n']}  answer accuracy (generate, greedy): {res['answer_accuracy']:.3f}  "
          f"by group: {res['answer_accuracy_by_group']}")
    print(f"chance pointing (random image cell inside the box): {res['chance_pointing']:.3f}")
    print("top heads (layer, head): pointing accuracy")
    for t in res["top_heads"]:
        print(f"  L{t['layer']} H{t['head']}: {t['pointing']:.3f}")
    for g, tops in res["top_heads_by_group"].items():
        print(f"  {g}: " + ", ".join(f"L{t['layer']}H{t['head']} {t['pointing']:.3f}" for t in tops[:3]))
    print(f"heads >= 0.90: {[(t['layer'], t['head']) for t in res['heads_at_least_90']]}")
    if args.out:
        Path(args.out).write_text(json.dumps({k: v for k, v in res.items() if k != 'details'}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
