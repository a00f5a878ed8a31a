"""Train the tiny toy LLaVA on scenes of coloured shapes and save a standard HF checkpoint.

    python -m llava.toy.train --out llava/toy/checkpoint --threads 1   # = the shipped run (~11 min)

Stage 1 pretrains the vision tower alone on a dense per-patch shape/colour task (the stand-in for
LLaVA's pretrained CLIP); stage 2 freezes it and trains projector + Llama on the answer loss.

The model is a genuine `LlavaForConditionalGeneration` (CLIP vision tower + Llama text model)
built by `llava.tiny.llava15.build_tiny_llava` with LLaVA-1.5 pad-to-square preprocessing. The loss is
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
from PIL import Image
from tqdm import tqdm

from llava.tiny.llava15 import TinyLlavaSpec, build_tiny_llava
from llava.compat import make_portable
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

    def __init__(self, processor, seeds, desc="scenes", n_objects=None, label_rule="center"):
        self.scenes = [S.make_scene(s, n_objects(s) if n_objects else None)
                       for s in tqdm(seeds, desc=f"render {desc}", leave=False)]
        pix = []
        chunk = 512
        for i in tqdm(range(0, len(self.scenes), chunk), desc=f"preprocess {desc}", leave=False):
            imgs = [sc.render() for sc in self.scenes[i : i + chunk]]
            pix.append(processor.image_processor(imgs, return_tensors="pt")["pixel_values"])
        self.pixel_values = torch.cat(pix)
        self.n_obj = torch.tensor([len(sc.objects) for sc in self.scenes])
        self.grid = processor.image_processor.crop_size["height"] // processor.patch_size
        self.shape_lbl, self.color_lbl = patch_labels(self.scenes, self.grid, rule=label_rule)

    def __len__(self):
        return len(self.scenes)


def patch_labels(scenes, grid: int, min_cover: float = 0.05, rule: str = "center"):
    """Per image patch: (shape id, colour id) of the object it shows, 0 = background.

    rule="center": a patch shows an object when the patch centre lies inside the object's box (and
    the object covers >= `min_cover` of the patch); rule="cover": the object covering the patch most,
    if it covers >= 15%. Computed in the padded-square geometry of the image processor (centred pad,
    then resize). Used only to pretrain the vision tower (the stand-in for LLaVA's pretrained CLIP
    encoder); the language model never sees these labels.
    """
    shapes = np.zeros((len(scenes), grid * grid), dtype=np.int64)
    colors = np.zeros_like(shapes)
    color_ids = {c: i + 1 for i, c in enumerate(S.COLORS)}
    shape_ids = {c: i + 1 for i, c in enumerate(S.SHAPES)}
    for n, sc in enumerate(scenes):
        _, masks = S.render_scene(sc)
        side = max(sc.width, sc.height)
        ox, oy = (side - sc.width) // 2, (side - sc.height) // 2
        cover = []
        for m in masks:
            sq = Image.new("L", (side, side), 0)
            sq.paste(m, (ox, oy))
            cover.append(np.asarray(sq.resize((grid, grid), Image.BOX), dtype=np.float32).ravel() / 255)
        cover = np.stack(cover)
        best = cover.argmax(0)
        if rule == "cover":
            ok = cover.max(0) >= 0.15
        else:
            cell = side / grid
            cx = (np.arange(grid * grid) % grid + 0.5) * cell - ox
            cy = (np.arange(grid * grid) // grid + 0.5) * cell - oy
            ok = np.zeros(grid * grid, dtype=bool)
            for k, obj in enumerate(sc.objects):
                x, y, w, h = obj.bbox
                ink = (cx >= x) & (cx <= x + w) & (cy >= y) & (cy <= y + h) & (cover[k] >= min_cover)
                best = np.where(ink, k, best)
                ok |= ink
        for k, obj in enumerate(sc.objects):
            sel = ok & (best == k)
            shapes[n, sel] = shape_ids[obj.shape]
            colors[n, sel] = color_ids[obj.color]
    return torch.from_numpy(shapes), torch.from_numpy(colors)


def pretrain_vision(model, train, val, steps: int, lr: float, batch: int, feature_layer: int):
    """Stage 1: dense per-patch shape/colour classification on the vision tower (CLIP stand-in).

    Only the vision tower and two throw-away linear heads are trained; the language model and its
    attention are untouched (they learn from the answer loss alone in stage 2).
    """
    vt = model.model.vision_tower
    d = model.config.vision_config.hidden_size
    heads = torch.nn.Linear(d, 1 + len(S.SHAPES) + 1 + len(S.COLORS))
    params = list(vt.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ns = 1 + len(S.SHAPES)

    def run(pool, idx):
        hs = vt(pool.pixel_values[idx], output_hidden_states=True).hidden_states[feature_layer][:, 1:]
        out = heads(hs)
        ls, lc = pool.shape_lbl[idx], pool.color_lbl[idx]
        loss = F.cross_entropy(out[..., :ns].flatten(0, 1), ls.flatten()) + F.cross_entropy(
            out[..., ns:].flatten(0, 1), lc.flatten())
        obj = ls > 0
        acc_s = (out[..., :ns].argmax(-1) == ls)[obj].float().mean().item()
        acc_c = (out[..., ns:].argmax(-1) == lc)[obj].float().mean().item()
        return loss, acc_s, acc_c

    vt.train()
    g = torch.Generator().manual_seed(1)
    bar = tqdm(range(steps), desc="stage 1 (vision)", mininterval=10)
    for step in bar:
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, steps, lr, min(200, steps // 10))
        idx = torch.randint(len(train), (batch,), generator=g)
        loss, acc_s, acc_c = run(train, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", shape=f"{acc_s:.2f}", color=f"{acc_c:.2f}")
    vt.eval()
    with torch.no_grad():
        _, acc_s, acc_c = run(val, torch.arange(len(val)))
    tqdm.write(f"stage 1 done: val patch shape acc {acc_s:.3f}, colour acc {acc_c:.3f}")
    return dict(patch_shape_acc=acc_s, patch_color_acc=acc_c)


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
def quick_eval(model, prompts, pool, rng, groups, batch=128):
    """Answer accuracy per group on `pool` (teacher-forced first token, same as greedy's first step)."""
    model.eval()
    out = {}
    for group in groups:
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


def save(model, processor, args, hist, stage1, t0, t_train, final=False):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    make_portable(out)  # the layout every supported transformers version loads alike
    model.train(was_training)
    if args.freeze_vision:
        model.model.vision_tower.eval()
    info = dict(args=vars(args), final=final, total_minutes=(time.time() - t0) / 60,
                stage2_minutes=(time.time() - t_train) / 60, stage1=stage1, history=hist,
                torch=torch.__version__)
    (out / "training_info.json").write_text(json.dumps(info, indent=2))
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    tqdm.write(f"saved to {out} ({size:.2f} MB)")


def _parser() -> argparse.ArgumentParser:
    """The command line of `python -m llava.toy.train` (defaults: the bundled toy)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--n-scenes", type=int, default=10000)
    ap.add_argument("--curriculum", type=str, default="200,800",
                    help="A,B: steps < A use 1-object scenes, steps < B use <= 2 objects, then 2-4")
    ap.add_argument("--one-frac", type=float, default=0.2, help="fraction of 1-object scenes in the pool")
    ap.add_argument("--groups", nargs="*", default=S.GROUPS,
                    help="question types, alternated step by step (shape_of_color alone stayed at chance)")
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--patch-size", type=int, default=8)
    ap.add_argument("--vision-hidden", type=int, default=96)
    ap.add_argument("--vision-layers", type=int, default=3)
    ap.add_argument("--vision-heads", type=int, default=4)
    ap.add_argument("--text-hidden", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--text-heads", type=int, default=4)
    ap.add_argument("--vision-steps", type=int, default=1000, help="stage 1 vision pretraining steps")
    ap.add_argument("--vision-lr", type=float, default=2e-3)
    ap.add_argument("--label-rule", choices=["center", "cover"], default="center",
                    help="which patches count as showing an object in stage 1")
    ap.add_argument("--freeze-vision", type=int, default=1, help="freeze the vision tower in stage 2")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-every-eval", type=int, default=1, help="also save at every evaluation")
    ap.add_argument("--dry", action="store_true", help="do not save")
    return ap


def main(argv=None):
    args = _parser().parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()

    spec = toy_spec(args)
    model, processor = build_tiny_llava(spec, version_free_weights=False)
    model.set_attn_implementation("sdpa")  # fast for training; evaluation loads with eager
    n_one = int(args.n_scenes * args.one_frac)
    train = Pool(processor, [args.seed * 10_000_019 + i for i in range(args.n_scenes)], "train",
                 n_objects=lambda s: 1 if (s % 10_000_019) < n_one else None, label_rule=args.label_rule)
    val = Pool(processor, [987_654_321 + args.seed * 7 + i for i in range(512)], "val", label_rule=args.label_rule)
    prompts = Prompts(processor, train.scenes[0].render())
    by_n = {k: [i for i in range(len(train)) if train.n_obj[i] == k] for k in range(1, 5)}
    stages = [by_n[1], by_n[1] + by_n[2], by_n[2] + by_n[3] + by_n[4]]
    print(f"params: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M, "
          f"image tokens: {(spec.image_size // spec.patch_size) ** 2}, "
          f"seq len: {len(next(iter(prompts.ids.values()))) + 1}, data ready in {time.time() - t0:.0f}s")

    stage1 = None
    if args.vision_steps:
        stage1 = pretrain_vision(model, train, val, args.vision_steps, args.vision_lr, args.batch, -1)
    if args.freeze_vision:
        model.model.vision_tower.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                            weight_decay=args.weight_decay, betas=(0.9, 0.98))
    model.train()
    if args.freeze_vision:
        model.model.vision_tower.eval()
    t_train = time.time()
    hist = _train_stage2(model, opt, prompts, train, val, stages, args, rng,
                         lambda h: save(model, processor, args, h, stage1, t0, t_train))
    model.eval()
    if not args.dry:
        save(model, processor, args, hist, stage1, t0, t_train, final=True)
    print(f"training time {(time.time() - t0) / 60:.1f} min (stage 2: {(time.time() - t_train) / 60:.1f} min)")
    return model, processor


def _train_stage2(model, opt, prompts, train, val, stages, args, rng, save_now) -> list[dict]:
    """Stage 2: next-token training on the question pools with the curriculum of `--curriculum`;
    evaluates every `--eval-every` steps (and saves with `save_now(history)` unless --dry)."""
    stage_a, stage_b = (int(x) for x in args.curriculum.split(","))
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
            v = quick_eval(model, prompts, val, random.Random(0), args.groups)
            hist.append(dict(step=step + 1, loss=run_loss, train_acc=run_acc, val=v,
                             minutes=(time.time() - t_train) / 60))
            tqdm.write(f"step {step + 1}: loss {run_loss:.3f} train acc {run_acc:.3f} val {v} "
                       f"({(time.time() - t_train) / 60:.1f} min)")
            if args.save_every_eval and not args.dry:
                save_now(hist)
    return hist


if __name__ == "__main__":
    main()
