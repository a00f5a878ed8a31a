"""Capture vs plain SDPA vs eager + output_attentions: time and peak memory, side by side.

Same model, same inputs, one process. The text model's attention implementation is switched
between the three modes; the vision tower runs SDPA in all of them, so differences come from the
text model's attention path alone.

    python benchmarks/bench_capture.py                       # CPU defaults: 8 layers, width 256
    python benchmarks/bench_capture.py --sizes 336 --new-tokens 32
    python benchmarks/bench_capture.py --preset llava15_7b --device cuda --dtype bfloat16   # GPU
"""

from __future__ import annotations

import argparse
import statistics

from common import PeakMemory, machine, mib, timed

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lab.capture.station import AttentionStation, RunInputs, Strategy  # noqa: E402
from llava import attention  # noqa: E402
from llava.tiny.llava15 import TinyLlavaSpec, build_config, build_processor  # noqa: E402
from llava.model import VLM  # noqa: E402


def build(size: int, args) -> VLM:
    from transformers import LlavaForConditionalGeneration

    if args.preset == "llava15_7b":
        spec = TinyLlavaSpec(image_size=size, patch_size=14, vision_hidden=1024, vision_layers=24, vision_heads=16,
                             text_hidden=4096, text_layers=32, text_heads=32, text_intermediate=11008,
                             max_position_embeddings=8192)
    else:
        spec = TinyLlavaSpec(image_size=size, patch_size=14, vision_hidden=64, vision_layers=2, vision_heads=4,
                             text_hidden=args.width, text_layers=args.layers, text_heads=args.heads,
                             text_intermediate=args.width * 2, max_position_embeddings=8192)
    processor = build_processor(spec)
    config = build_config(spec, processor.tokenizer)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    with torch.device(args.device):
        model = LlavaForConditionalGeneration(config).to(dtype).eval()
    model.set_attn_implementation({"text_config": attention.register(), "vision_config": "sdpa"})
    vlm = VLM(model, processor, model_id=f"bench-{args.preset}")
    return vlm


def set_text_attention(vlm: VLM, impl: str) -> None:
    vlm.model.config.text_config._attn_implementation = impl


def setup(size: int, args):
    """Model, one prepared sample and `run(mode)` for mode in sdpa | capture | eager."""
    vlm = build(size, args)
    img = Image.effect_noise((size + 40, size), 60).convert("RGB")
    batch = vlm.prepare([(img, "what is in the image ?")])
    strategy = Strategy(query_positions="generated" if args.new_tokens else "last_input")
    lm = vlm.model.model.language_model
    head = vlm.model.lm_head
    embeds = {}
    if args.text_only:
        def keep(module, args_, kwargs):
            embeds["x"] = kwargs["inputs_embeds"]

        hook = lm.register_forward_pre_hook(keep, with_kwargs=True)
        vlm.forward(batch)
        hook.remove()

    @torch.inference_mode()
    def go(output_attentions: bool = False):
        if args.text_only:
            out = lm(inputs_embeds=embeds["x"], attention_mask=batch.inputs["attention_mask"],
                     output_attentions=output_attentions)
            head(out.last_hidden_state[:, -1:])
            return
        if args.new_tokens:
            kw = dict(output_attentions=True, return_dict_in_generate=True) if output_attentions else {}
            vlm.model.generate(**batch.inputs, max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, **kw)
        else:
            vlm.model(**batch.inputs, output_attentions=output_attentions)

    def run(mode: str):
        if mode == "eager":
            set_text_attention(vlm, "eager")
            go(output_attentions=True)
            return
        set_text_attention(vlm, attention.ATTN_IMPLEMENTATION)
        if mode == "capture":
            with AttentionStation().run(strategy, RunInputs(batch.attention_mask, batch.image_cols)) as r:
                go()
            r.image_attention(0)  # include moving the result to CPU
        else:
            go()

    return vlm, batch, run


def probe_memory(mode: str, size: int, args) -> int:
    """Peak RSS growth of one run of `mode` in this (fresh) process."""
    _, _, run = setup(size, args)
    with PeakMemory(torch.device(args.device)) as pm:  # sampled RSS; a fresh process has no pooled memory
        run(mode)
    return pm.peak


def memory_in_subprocess(mode: str, size: int, args) -> int:
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--memory-probe", f"{mode},{size}", "--layers", str(args.layers), "--width",
           str(args.width), "--heads", str(args.heads), "--new-tokens", str(args.new_tokens), "--device", args.device,
           "--dtype", args.dtype, "--preset", args.preset] + (["--text-only"] if args.text_only else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    return int(out[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="336,756", help="image sizes in px (336 -> 576 tokens, 756 -> 2916)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=0, help="0: one forward (prefill); N: generate N tokens")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--preset", default="narrow", choices=["narrow", "llava15_7b"])
    ap.add_argument("--text-only", action="store_true",
                    help="time the text model alone on cached input embeddings (vision tower and projector excluded)")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: MODE,SIZE in a fresh process
    args = ap.parse_args()
    if args.memory_probe:
        mode, size = args.memory_probe.split(",")
        print(probe_memory(mode, int(size), args))
        return
    device = torch.device(args.device)
    print(f"machine: {machine()}")
    print(f"model: {args.preset} ({args.layers if args.preset == 'narrow' else 32} layers), dtype {args.dtype}, "
          f"{'prefill' if not args.new_tokens else f'generate {args.new_tokens} tokens'}, median of {args.repeats}"
          f"{', text model only (cached embeddings)' if args.text_only else ', whole model'}")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        vlm, batch, run = setup(size, args)
        n_img = int(batch.image_cols[0].numel())
        seq = int(batch.inputs["input_ids"].shape[1])
        res = {}
        modes = ("sdpa", "capture", "eager")
        for mode in modes:  # warm-up
            run(mode)
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits all modes alike
            for mode in modes:
                times[mode].append(timed(lambda: run(mode), device, repeats=1, warmup=0)[0])
        for mode in modes:
            if device.type == "cuda":
                with PeakMemory(device) as pm:
                    run(mode)
                peak = pm.peak
            else:  # RSS only grows: measure each mode's peak in a fresh process
                peak = memory_in_subprocess(mode, size, args)
            res[mode] = (statistics.median(times[mode]), peak)
        rows.append((size, n_img, seq, res))
        print(f"\n{size}px: {n_img} image tokens, sequence {seq}")
        for mode, (t, peak) in res.items():
            print(f"  {mode:8s} {t * 1000:9.1f} ms   peak +{mib(peak)}")
        cs = res["capture"][0] / res["sdpa"][0]
        ec = res["eager"][0] / res["capture"][0]
        print(f"  capture/sdpa = {cs:.3f}   eager/capture = {ec:.2f}   "
              f"memory eager/capture = {res['eager'][1] / max(res['capture'][1], 1):.1f}x")
        del vlm
    print("\nsummary (targets: capture/sdpa <= 1.10; eager/capture >= 2 at 576 tokens, >= 8 at ~2900)")
    for size, n_img, seq, res in rows:
        cs = res["capture"][0] / res["sdpa"][0]
        ec = res["eager"][0] / res["capture"][0]
        print(f"  {n_img:5d} image tokens: capture/sdpa {cs:.3f}  eager/capture {ec:.2f}  "
              f"peak sdpa {mib(res['sdpa'][1])} capture {mib(res['capture'][1])} eager {mib(res['eager'][1])}")


if __name__ == "__main__":
    main()
