"""Assemble and save the planted LLaVA: config, processor, constructed weights, planted.json."""

from __future__ import annotations

import json
from pathlib import Path

from llava.planted import layout as Lo
from utils.errors import UserError

FORMAT = 1
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are non-negative; seed + 7 and seed * 1_000_003 + i stay exact


def check_target(out: str | Path, seed: int) -> Path:
    """Refuse, in one line, a seed outside 0..MAX_SEED or an `out` that is (or holds at checkpoint/ or
    data/) a file, before anything is built.

    Args:
        out: the folder `save_planted` writes.
        seed: the construction's seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed!r}: must be an integer in 0..{MAX_SEED}")
    out = Path(out)
    for path in (out, out / "checkpoint", out / "data", out / "data" / "images"):
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {out}: {path} is a file, not a folder; give a folder (new or one an earlier build wrote)")
    return out


def planted_spec(seed: int):
    """TinyLlavaSpec at LLaVA-1.5-7B's geometry (336 px, patch 14, 32 x 32 heads), narrow widths."""
    from llava.tiny.llava15 import DEFAULT_WORDS, TinyLlavaSpec
    from llava.planted.scenes import WORDS

    return TinyLlavaSpec(
        image_size=336, patch_size=14, vision_hidden=Lo.VISION_WIDTH, vision_layers=2, vision_heads=2,
        text_hidden=Lo.TEXT_WIDTH, text_layers=Lo.N_LAYERS, text_heads=Lo.N_HEADS, text_intermediate=8,
        vision_feature_layer=-2, words=list(dict.fromkeys([*DEFAULT_WORDS, *WORDS])),
        max_position_embeddings=4096, pad_to_square=True, seed=seed,
    )


def build_planted(seed: int = 0, localization: list[tuple[int, int]] | None = None):
    """Return `(model, processor, plan)`: the planted LlavaForConditionalGeneration (float32, eval)."""
    import torch
    from transformers import LlamaConfig, LlavaForConditionalGeneration

    from llava.tiny.llava15 import build_config, build_processor
    from llava.compat import rope_config
    from llava.planted.text_weights import text_weights
    from llava.planted.weights import projector_weights, strengths, vision_weights

    spec = planted_spec(seed)
    processor = build_processor(spec)
    config = build_config(spec, processor.tokenizer)
    tc = config.text_config
    tc.head_dim = Lo.HEAD_DIM
    for key, value in rope_config(LlamaConfig, Lo.ROPE_THETA).items():
        setattr(tc, key, value)
    plan = Lo.plan_heads(localization, seed)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    ip = processor.image_processor
    scale = vision_weights(model.model.vision_tower, ip.image_mean, ip.image_std, seed)
    projector_weights(model.model.multi_modal_projector, scale)
    text_weights(model, processor.tokenizer, plan, strengths(seed, len(plan.visual)))
    tok = processor.tokenizer
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model, processor, plan


def planted_json(plan: Lo.HeadPlan, seed: int) -> dict:
    """What planted.json says: every planted head and its role, plus the construction's constants."""
    from llava.planted import weights as W

    return {
        "format": FORMAT,
        "seed": seed,
        "localization_heads": [list(h) for h in plan.localization],
        "visual_heads": [list(h) for h in plan.visual],
        "fixed_heads": [list(h) for h in plan.fixed],
        "fixed_regions": {f"{l}:{h}": Lo.FIXED_REGIONS[i][0] for i, (l, h) in enumerate(plan.fixed)},
        "copy_heads": [list(plan.copy)],
        "rest": "every other head: most mass on the first token <s>, a little on the image",
        "image_tokens": Lo.N_PATCHES,
        "grid": [Lo.GRID, Lo.GRID],
        "layers": Lo.N_LAYERS,
        "heads": Lo.N_HEADS,
        "head_dim": Lo.HEAD_DIM,
        "text_width": Lo.TEXT_WIDTH,
        "vision_width": Lo.VISION_WIDTH,
        "rope_theta": Lo.ROPE_THETA,
        "localization_by": "colour (six colours; the query's colour word, copied to the last token by the copy head)",
        "answer_path": "localization heads move the attended patches' column code to the last token; "
                       "lm_head reads left/right from its sign (ties -> 'left')",
        "constants": {k: getattr(W, k) for k in ("DETECTOR_GAIN", "COPY_SCORE", "COPY_BOS", "LOC_SCORE", "VISUAL_SCORE",
                                                 "VISUAL_SPECKLE", "FIXED_SCORE", "REST_BOS", "ANSWER_GAIN")},
    }


def save_planted(out: str | Path, seed: int = 0, localization: list[tuple[int, int]] | None = None,
                 samples: int = 0) -> Path:
    """Write `out/checkpoint/` (+ planted.json) and, with samples > 0, `out/data/`. Returns `out`."""
    from llava.compat import make_portable
    from llava.planted.scenes import write_grounding_set

    out = check_target(out, seed)
    ckpt = out / "checkpoint"
    model, processor, plan = build_planted(seed, localization)
    ckpt.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    make_portable(ckpt)
    (ckpt / "planted.json").write_text(json.dumps(planted_json(plan, seed), indent=2) + "\n")
    if samples:
        write_grounding_set(out / "data", samples, seed)
    return out
