"""Train the tiny toy LLaVA on scenes of coloured shapes and save a standard HF checkpoint.

    python -m llava.toy.train --out llava/toy/checkpoint --steps 6000 --seed 0

The model is a genuine `LlavaForConditionalGeneration` (CLIP vision tower + Llama text model)
built by `llava.builders.build_tiny_llava` with LLaVA-1.5 pad-to-square preprocessing. The loss is
cross-entropy on the answer word and `</s>` only; attention is never supervised. Scenes are
rendered and preprocessed once (by the checkpoint's own image processor) and kept in memory, and the
prompt token ids come from the processor's chat template, so training sees exactly what
`AutoProcessor.apply_chat_template` + `processor(...)` produce at inference time.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from llava.builders import TinyLlavaSpec, build_tiny_llava
from llava.toy import scenes as S

DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoint"


def toy_spec(args) -> TinyLlavaSpec:
    return TinyLlavaSpec(
        image_size=args.image_size,
        patch_size=args.patch_size,
        vision_hidden=args.vision_hidden,
        vision_layers=args.vision_layers,
        vision_heads=args.vision_heads,
        text_hidden=args.text_hidden,
        text_layers=args.text_layers,
        text_heads=args.text_heads,
        text_intermediate=args.text_hidden * 2,
        vision_feature_layer=-1,
        words=S.WORDS,
        max_position_embeddings=256,
        pad_to_square=True,
        seed=args.seed,
    )


def chat_prompt(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


class Pool:
    """Scenes rendered + preprocessed once; (pixel_values, per-object colour/shape ids)."""

    def __init__(self, processor, seeds, desc="scenes", n_objects=None):
        self.scenes = [S.make_scene(s, n_objects(s) if n_objects else None)
                       for s in tqdm(seeds, desc=f"render {desc}", leave=False)]
        pix = []
        chunk = 512
        for i in tqdm(range(0, len(self.scenes), chunk), desc=f"preprocess {desc}", leave=False):
            imgs = [sc.render() for sc in self.scenes[i : i + chunk]]
            pix.append(processor.image_processor(imgs, return_tensors="pt")["pixel_values"])
        self.pixel_values = torch.cat(pix)
        self.n_obj = torch.tensor([len(sc.objects) for sc in self.scenes])

    def __len__(self):
        return len(self.scenes)


class Prompts:
    """Token ids of every question, from the processor's own chat template and tokenizer."""

    def __init__(self, processor, pool_image):
        tok = processor.tokenizer
        self.ids: dict[tuple[str, str], torch.Tensor] = {}
        for group in S.GROUPS:
            keys = S.COLORS if group == "shape_of_color" else S.SHAPES
            for k in keys:
                obj = S.ToyObject(shape=k, color=k, bbox=[0, 0, 1, 1])
                q, _ = S.question(group, obj)
                enc = processor(text=chat_prompt(processor, q), images=pool_image, return_tensors="pt")
                self.ids[(group, k)] = enc["input_ids"][0]
        self.answer_id = {w: tok.convert_tokens_to_ids(w) for w in [*S.COLORS, *S.SHAPES]}
        assert tok.unk_token_id not in self.answer_id.values()
        self.eos = tok.eos_token_id

    def batch(self, pool: Pool, idx: list[int], group: str, rng: random.Random):
        """input_ids = prompt + answer word, targets = (answer word, </s>)."""
        rows, targets = [], []
        for i in idx:
            obj = rng.choice(pool.scenes[i].objects)
            key = obj.color if group == "shape_of_color" else obj.shape
            ans = obj.shape if group == "shape_of_color" else obj.color
            a = self.answer_id[ans]
            rows.append(torch.cat([self.ids[(group, key)], torch.tensor([a])]))
            targets.append([a, self.eos])
        return torch.stack(rows), torch.tensor(targets), pool.pixel_values[idx]


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def quick_eval(model, prompts, pool, rng, batch=128):
    """Answer accuracy per group on `pool` (teacher-forced first token, same as greedy's first step)."""
    model.eval()
    out = {}
    for group in S.GROUPS:
        correct = total = 0
        for start in range(0, len(pool), batch):
            idx = list(range(start, min(len(pool), start + batch)))
            ids, tgt, pix = prompts.batch(pool, idx, group, rng)
            logits = model(input_ids=ids[:, :-1], pixel_values=pix, logits_to_keep=1).logits[:, -1]
            correct += (logits.argmax(-1) == tgt[:, 0]).sum().item()
            total += len(idx)
        out[group] = correct / total
    model.train()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--n-scenes", type=int, default=20000)
    ap.add_argument("--curriculum", type=str, default="0,0",
                    help="A,B: steps < A use 1-object scenes, steps < B use <= 2 objects, then 2-4")
    ap.add_argument("--one-frac", type=float, default=0.25, help="fraction of 1-object scenes in the pool")
    ap.add_argument("--groups", nargs="*", default=S.GROUPS)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--patch-size", type=int, default=8)
    ap.add_argument("--vision-hidden", type=int, default=64)
    ap.add_argument("--vision-layers", type=int, default=2)
    ap.add_argument("--vision-heads", type=int, default=4)
    ap.add_argument("--text-hidden", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--text-heads", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dry", action="store_true", help="do not save")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()

    spec = toy_spec(args)
    model, processor = build_tiny_llava(spec)
    model.config._attn_implementation = "sdpa"
    model.set_attn_implementation("sdpa") if hasattr(model, "set_attn_implementation") else None
    n_one = int(args.n_scenes * args.one_frac)
    train = Pool(processor, [args.seed * 10_000_019 + i for i in range(args.n_scenes)], "train",
                 n_objects=lambda s: 1 if (s % 10_000_019) < n_one else None)
    val = Pool(processor, [987_654_321 + args.seed * 7 + i for i in range(512)], "val")
    prompts = Prompts(processor, train.scenes[0].render())
    by_n = {k: [i for i in range(len(train)) if train.n_obj[i] == k] for k in range(1, 5)}
    stage_a, stage_b = (int(x) for x in args.curriculum.split(","))
    stages = [by_n[1], by_n[1] + by_n[2], by_n[2] + by_n[3] + by_n[4]]
    print(f"params: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M, "
          f"image tokens: {(spec.image_size // spec.patch_size) ** 2}, "
          f"seq len: {len(next(iter(prompts.ids.values()))) + 1}, data ready in {time.time() - t0:.0f}s")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.98))
    model.train()
    hist = []
    run_loss = run_acc = None
    bar = tqdm(range(args.steps), desc="train", mininterval=10)
    t_train = time.time()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        group = args.groups[step % len(args.groups)]
        src = stages[0] if step < stage_a else stages[1] if step < stage_b else stages[2]
        idx = [src[rng.randrange(len(src))] for _ in range(args.batch)]
        ids, tgt, pix = prompts.batch(train, idx, group, rng)
        logits = model(input_ids=ids, pixel_values=pix, logits_to_keep=2).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc = (logits[:, 0].argmax(-1) == tgt[:, 0]).float().mean().item()
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        run_acc = acc if run_acc is None else 0.98 * run_acc + 0.02 * acc
        bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{run_acc:.2f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            v = quick_eval(model, prompts, val, random.Random(0))
            hist.append(dict(step=step + 1, loss=run_loss, train_acc=run_acc, val=v,
                             minutes=(time.time() - t_train) / 60))
            tqdm.write(f"step {step + 1}: loss {run_loss:.3f} train acc {run_acc:.3f} val {v} "
                       f"({(time.time() - t_train) / 60:.1f} min)")
    train_min = (time.time() - t_train) / 60
    model.eval()
    if not args.dry:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        model.config._attn_implementation = None
        model.save_pretrained(out)
        processor.save_pretrained(out)
        info = dict(args=vars(args), train_minutes=train_min, total_minutes=(time.time() - t0) / 60,
                    history=hist, torch=torch.__version__)
        (out / "training_info.json").write_text(json.dumps(info, indent=2))
        print(f"saved to {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.2f} MB)")
    print(f"training time {train_min:.1f} min")
    return model, processor


if __name__ == "__main__":
    main()
