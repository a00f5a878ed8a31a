"""Tiny random checkpoints of the non-LLaVA-1.5 families, built offline for tests.

Each `save_tiny_<family>(folder)` writes a standard Hugging Face folder (safetensors + processor
files) that `llava.model.load_vlm(folder)` loads like a hub checkpoint. Sizes are chosen so that
the geometry is non-trivial (several crops for anyres, non-square grids for Qwen) while a forward
pass takes milliseconds on a CPU. Their attention means nothing.
"""

from __future__ import annotations

from pathlib import Path

from llava.builders import DEFAULT_WORDS, LLAVA15_CHAT_TEMPLATE, build_word_tokenizer, seeded_weights
from llava.compat import pil_image_processor, processor_from_parts, rope_config

# ---- tokenizers -------------------------------------------------------------------------

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|> {{ message['role'] }} \n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|> <|image_pad|> <|vision_end|> "
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} <|im_end|> \n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant \n{% endif %}"
)

GEMMA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<start_of_turn> {{ 'model' if message['role'] == 'assistant' else message['role'] }} \n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %} <start_of_image> "
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} <end_of_turn> \n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn> model \n{% endif %}"
)


def _special_tokenizer(specials: list[str], chat_template: str, named: dict[str, str]):
    """Word tokenizer plus whole special tokens; `named` become tokenizer attributes (`image_token`,
    `boi_token`, ...) that the processors read."""
    return build_word_tokenizer(DEFAULT_WORDS, chat_template, specials=specials, named=named)


def _model(cls, cfg, seed: int):
    """cls(cfg) with `seeded_weights`: the same tiny model on every transformers version."""
    model = cls(cfg).eval()
    seeded_weights(model, seed)
    return model


def _finish(model, tokenizer, out_dir, processor):
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if getattr(processor, "video_processor", 1) is None:
        _save_without_video(processor, out)
    else:
        processor.save_pretrained(out)
    return out


def _save_without_video(processor, out: Path) -> None:
    """`ProcessorMixin.save_pretrained` cannot skip a missing video processor: write the parts."""
    import json

    processor.tokenizer.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    cfg = {"processor_class": type(processor).__name__}
    for key in ("num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio", "image_token", "video_token"):
        if hasattr(processor, key) and isinstance(getattr(processor, key), (int, str)):
            cfg[key] = getattr(processor, key)
    (out / "processor_config.json").write_text(json.dumps(cfg, indent=2))


def _llama_text(tokenizer, hidden=64, layers=3, heads=4, kv_heads=2, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       tie_word_embeddings=False, **kw)


# ---- LLaVA-NeXT -------------------------------------------------------------------------

def save_tiny_llava_next(out_dir, seed: int = 0, image_size: int = 56, patch_size: int = 14,
                         pinpoints=((56, 112), (112, 56), (112, 112), (56, 168), (168, 56))) -> Path:
    """LLaVA-NeXT: CLIP tower (4x4 patches per 56 px crop), anyres crops from `pinpoints`."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor

    tok = build_word_tokenizer(DEFAULT_WORDS, LLAVA15_CHAT_TEMPLATE)
    pins = [list(p) for p in pinpoints]
    ip = pil_image_processor("LlavaNextImageProcessor")(size={"shortest_edge": image_size},
                                    crop_size={"height": image_size, "width": image_size}, image_grid_pinpoints=pins)
    proc = processor_from_parts(LlavaNextProcessor, image_processor=ip, tokenizer=tok, patch_size=patch_size,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=LLAVA15_CHAT_TEMPLATE)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=image_size, patch_size=patch_size, projection_dim=32)
    cfg = LlavaNextConfig(vision_config=vision, text_config=_llama_text(tok), image_grid_pinpoints=pins,
                          image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                          vision_feature_select_strategy="default", tie_word_embeddings=False)
    model = _model(LlavaNextForConditionalGeneration, cfg, seed)
    return _finish(model, tok, out_dir, proc)


# ---- LLaVA-OneVision --------------------------------------------------------------------

def save_tiny_llava_onevision(out_dir, seed: int = 0, image_size: int = 32, patch_size: int = 8,
                              max_crops: int = 2) -> Path:
    """LLaVA-OneVision: SigLIP tower (4x4 patches per 32 px crop), Qwen2 text, anyres_max_{max_crops}."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor,
                              Qwen2Config, SiglipVisionConfig)

    tok = build_word_tokenizer(DEFAULT_WORDS, LLAVA15_CHAT_TEMPLATE)
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    tok.video_token = "<video>"
    pins = [[image_size * a, image_size * b] for a in range(1, 4) for b in range(1, 4)]
    ip = pil_image_processor("LlavaOnevisionImageProcessor")(size={"height": image_size, "width": image_size}, image_grid_pinpoints=pins)
    proc = processor_from_parts(LlavaOnevisionProcessor, image_processor=ip, tokenizer=tok,
                                num_image_tokens=(image_size // patch_size) ** 2,
                                vision_feature_select_strategy="full", chat_template=LLAVA15_CHAT_TEMPLATE,
                                vision_aspect_ratio=f"anyres_max_{max_crops}",
                                image_token="<image>", video_token="<video>")
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=image_size, patch_size=patch_size)
    text = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       tie_word_embeddings=False)
    cfg = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_grid_pinpoints=pins,
                               image_token_index=tok.convert_tokens_to_ids("<image>"),
                               video_token_index=tok.convert_tokens_to_ids("<video>"),
                               vision_feature_layer=-1, vision_feature_select_strategy="full",
                               vision_aspect_ratio=f"anyres_max_{max_crops}", tie_word_embeddings=False)
    model = _model(LlavaOnevisionForConditionalGeneration, cfg, seed)
    return _finish(model, tok, out_dir, proc)


# ---- Qwen2-VL / Qwen2.5-VL --------------------------------------------------------------

def save_tiny_qwen_vl(out_dir, seed: int = 0, version: str = "2.5", max_pixels: int = 28 * 28 * 12) -> Path:
    """Qwen2-VL (version "2") or Qwen2.5-VL ("2.5"): patch 14, 2x2 merge, M-RoPE text model."""
    from transformers import Qwen2Config

    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]
    tok = _special_tokenizer(specials, QWEN_CHAT_TEMPLATE, {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    ip = pil_image_processor("Qwen2VLImageProcessor")(min_pixels=28 * 28, max_pixels=max_pixels)
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                **rope_config(Qwen2Config, 10000.0, mrope_section=[2, 3, 3]),
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  tie_word_embeddings=False)
    if version == "2":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        cfg = Qwen2VLConfig(vision_config=vision, text_config=text, **common)
        cls, pcls = Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
        cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=text, **common)
        cls, pcls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    proc = processor_from_parts(pcls, image_processor=ip, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)
    model = _model(cls, cfg, seed)
    return _finish(model, tok, out_dir, proc)


# ---- Gemma 3 ----------------------------------------------------------------------------

def save_tiny_gemma3(out_dir, seed: int = 0, image_size: int = 32, patch_size: int = 4, tokens_per_image: int = 16,
                     sliding_window: int = 512) -> Path:
    """Gemma 3: SigLIP tower (8x8 patches), pooled to tokens_per_image (4x4), sliding + full layers."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig, SiglipVisionConfig

    specials = ["<start_of_image>", "<end_of_image>", "<image_soft_token>", "<start_of_turn>", "<end_of_turn>"]
    tok = _special_tokenizer(specials, GEMMA_CHAT_TEMPLATE, {"image_token": "<image_soft_token>",
                                                              "boi_token": "<start_of_image>",
                                                              "eoi_token": "<end_of_image>"})
    ip = pil_image_processor("Gemma3ImageProcessor")(size={"height": image_size, "width": image_size})
    proc = processor_from_parts(Gemma3Processor, image_processor=ip, tokenizer=tok, chat_template=GEMMA_CHAT_TEMPLATE,
                                image_seq_length=tokens_per_image)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=image_size, patch_size=patch_size, vision_use_head=False)
    text = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=sliding_window,
                            layer_types=["sliding_attention", "full_attention"] * 2, max_position_embeddings=4096,
                            tie_word_embeddings=False,
                            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens_per_image,
                       image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
                       boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                       eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"), tie_word_embeddings=False)
    model = _model(Gemma3ForConditionalGeneration, cfg, seed)
    return _finish(model, tok, out_dir, proc)


TINY_BUILDERS = {
    "llava_next": save_tiny_llava_next,
    "llava_onevision": save_tiny_llava_onevision,
    "qwen2_vl": lambda out, seed=0: save_tiny_qwen_vl(out, seed, version="2"),
    "qwen2_5_vl": lambda out, seed=0: save_tiny_qwen_vl(out, seed, version="2.5"),
    "gemma3": save_tiny_gemma3,
}

# InternVL, Qwen3-VL, Idefics3 / SmolVLM (transformers' tester configs): llava/family_builders_more.py
from llava.family_builders_more import MORE_BUILDERS  # noqa: E402  (it imports the helpers above)

TINY_BUILDERS.update(MORE_BUILDERS)
