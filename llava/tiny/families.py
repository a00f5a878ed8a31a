"""Tiny random checkpoints of the non-LLaVA-1.5 families, built offline for tests.

Each `save_tiny_<family>(folder)` writes a standard Hugging Face folder (safetensors + processor
files) that `llava.model.load_vlm(folder)` loads like a hub checkpoint. Sizes are chosen so that
the geometry is non-trivial (several crops for anyres, non-square grids for Qwen) while a forward
pass takes milliseconds on a CPU. Their attention means nothing.
"""

from __future__ import annotations

from pathlib import Path

from llava.tiny.llava15 import DEFAULT_WORDS, LLAVA15_CHAT_TEMPLATE, build_word_tokenizer, seeded_weights
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


# =========================================================================================
# InternVL, Qwen3-VL, Idefics3 / SmolVLM. Sizes come from transformers' own model testers
# (tests/models/<family>/test_modeling_<family>.py: the text, vision and projector values of
# `*VisionText2TextModelTester`); what a tester leaves open (vocabulary, token ids, processor sizes)
# is ours: the word tokenizer above and processor sizes that give several tiles / a non-square grid
# for a small non-square image.
# =========================================================================================

# ---- chat templates (the hub checkpoints' forms, on our word tokenizer) ---------------------

INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|> {{ message['role'] }} \n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %} <IMG_CONTEXT> \n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} <|im_end|> \n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant \n{% endif %}"
)

IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>"
    "{% for message in messages %}"
    "{{ message['role'] }} :"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} <end_of_utterance> \n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)

# ---- InternVL ----------------------------------------------------------------------------

INTERNVL_TESTER_TEXT = dict(hidden_size=128, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
                            num_key_value_heads=2, hidden_act="silu", max_position_embeddings=512,
                            tie_word_embeddings=True)
INTERNVL_TESTER_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                              image_size=64, patch_size=4, num_channels=3, hidden_act="quick_gelu",
                              use_absolute_position_embeddings=True)


def save_tiny_internvl(out_dir, seed: int = 0, max_patches: int = 4) -> Path:
    """InternVL (tester config): 64 px tiles of 16x16 patches, pixel shuffle 0.5 -> 8x8 = 64 tokens per tile,
    dynamic tiling up to `max_patches` tiles plus a thumbnail; Qwen2 text model."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, Qwen2Config

    specials = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>", "<|im_start|>", "<|im_end|>"]
    tok = _special_tokenizer(specials, INTERNVL_CHAT_TEMPLATE, {
        "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>"})
    for name in ("start_image_token", "end_image_token", "context_image_token"):  # the processor reads <name>_id
        setattr(tok, f"{name}_id", tok.convert_tokens_to_ids(getattr(tok, name)))
    side = INTERNVL_TESTER_VISION["image_size"]
    tokens = (side // INTERNVL_TESTER_VISION["patch_size"] // 2) ** 2  # pixel shuffle 0.5
    ip = pil_image_processor("GotOcr2ImageProcessor")(size={"height": side, "width": side}, crop_to_patches=True,
                                                       min_patches=1, max_patches=max_patches)
    proc = processor_from_parts(InternVLProcessor, image_processor=ip, tokenizer=tok, image_seq_length=tokens,
                                chat_template=INTERNVL_CHAT_TEMPLATE)
    text = Qwen2Config(vocab_size=len(tok), **INTERNVL_TESTER_TEXT, **rope_config(Qwen2Config, 10000.0),
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = InternVLConfig(text_config=text, vision_config=dict(INTERNVL_TESTER_VISION),
                         image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=tokens,
                         vision_feature_layer=-1, tie_word_embeddings=True)
    model = _model(InternVLForConditionalGeneration, cfg, seed)
    out = _finish(model, tok, out_dir, proc)
    _add_processor_keys(out, image_seq_length=tokens)  # the no-video save keeps only the keys it knows
    return out


def _add_processor_keys(folder: Path, **keys) -> None:
    import json

    path = folder / "processor_config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    cfg.update(keys)
    path.write_text(json.dumps(cfg, indent=2))


# ---- Qwen3-VL ----------------------------------------------------------------------------

QWEN3_VL_TESTER_TEXT = dict(hidden_act="silu", head_dim=8, hidden_size=32, intermediate_size=37,
                            max_position_embeddings=512, num_attention_heads=4, num_hidden_layers=2,
                            num_key_value_heads=2, tie_word_embeddings=True)
QWEN3_VL_TESTER_VISION = dict(depth=2, in_chans=3, hidden_act="gelu_pytorch_tanh", intermediate_size=32,
                              out_hidden_size=32, hidden_size=32, num_heads=4, patch_size=16, spatial_merge_size=1,
                              temporal_patch_size=2, num_position_embeddings=16, deepstack_visual_indexes=[0, 1])


def save_tiny_qwen3_vl(out_dir, seed: int = 0, spatial_merge_size: int = 1, max_pixels: int = 16 * 16 * 40) -> Path:
    """Qwen3-VL (tester config): 16 px patches, interleaved M-RoPE, deepstack features from both vision
    layers into the first two text layers; `spatial_merge_size` 1 as in the tester, 2 as in the hub models."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLTextConfig

    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]
    tok = _special_tokenizer(specials, QWEN_CHAT_TEMPLATE, {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    patch = QWEN3_VL_TESTER_VISION["patch_size"]
    factor = patch * spatial_merge_size
    ip = pil_image_processor("Qwen2VLImageProcessor")(
        patch_size=patch, merge_size=spatial_merge_size, temporal_patch_size=2,
        min_pixels=factor * factor, max_pixels=max_pixels * spatial_merge_size**2,
        size={"shortest_edge": factor * factor, "longest_edge": max_pixels * spatial_merge_size**2},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    proc = processor_from_parts(Qwen3VLProcessor, image_processor=ip, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)
    text = dict(vocab_size=len(tok), **QWEN3_VL_TESTER_TEXT,
                **rope_config(Qwen3VLTextConfig, 10000.0, mrope_section=[16, 8, 8], mrope_interleaved=True),
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = dict(QWEN3_VL_TESTER_VISION, spatial_merge_size=spatial_merge_size)
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
    model = _model(Qwen3VLForConditionalGeneration, cfg, seed)
    return _finish(model, tok, out_dir, proc)


# ---- Idefics3 / SmolVLM ------------------------------------------------------------------

IDEFICS3_TESTER_VISION = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=32, dropout=0.1, attention_dropout=0.1, initializer_range=0.02)
IDEFICS3_TESTER_TEXT = dict(hidden_size=64, intermediate_size=56, num_hidden_layers=3, num_attention_heads=2,
                            num_key_value_heads=2, hidden_act="silu", max_position_embeddings=256,
                            initializer_range=0.02, rms_norm_eps=1e-6, tie_word_embeddings=False,
                            attention_dropout=0.0)
IDEFICS3_TESTER_SCALE = 2


def idefics3_specials() -> list[str]:
    """The image-structure tokens the Idefics3 / SmolVLM processors write around image tokens."""
    rows_cols = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    return ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<|begin_of_text|>", *rows_cols]


def save_tiny_idefics3(out_dir, seed: int = 0, tiles_longest_edge: int = 4, model_type: str = "idefics3",
                       tile_px: int | None = None) -> Path:
    """Idefics3 (tester config; `model_type="smolvlm"` gives SmolVLM with the same sizes): 16 px tiles of
    4x4 patches, pixel shuffle x2 -> 2x2 = 4 tokens per tile; images are resized to a longest edge of
    `tiles_longest_edge` tiles, split into tiles, plus a global image; Llama text model.

    tile_px: the processor's tile size (default: the tower's 16 px); 18 gives tiles that are no whole
    number of patches (4 x 4 px patches cover 16 of 18 px), as SmolVLM-Instruct's 384 px tiles of 14 px patches.
    """
    import transformers
    from transformers import LlamaConfig

    prefix = {"idefics3": "Idefics3", "smolvlm": "SmolVLM"}[model_type]
    seq = (IDEFICS3_TESTER_VISION["image_size"] // IDEFICS3_TESTER_VISION["patch_size"]) ** 2 // IDEFICS3_TESTER_SCALE**2
    tile = tile_px or IDEFICS3_TESTER_VISION["image_size"]
    tok = _special_tokenizer(idefics3_specials(), IDEFICS3_CHAT_TEMPLATE, {"image_token": "<image>"})
    tok.add_special_tokens({"additional_special_tokens": ["<image>", *idefics3_specials()]})
    ip = pil_image_processor(f"{prefix}ImageProcessor")(size={"longest_edge": tiles_longest_edge * tile},
                                                         max_image_size={"longest_edge": tile}, do_image_splitting=True)
    proc = processor_from_parts(getattr(transformers, f"{prefix}Processor"), image_processor=ip, tokenizer=tok,
                                image_seq_len=seq, chat_template=IDEFICS3_CHAT_TEMPLATE)
    text = LlamaConfig(vocab_size=len(tok), **IDEFICS3_TESTER_TEXT, **rope_config(LlamaConfig, 10000.0),
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = getattr(transformers, f"{prefix}Config")(
        use_cache=True, image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False,
        vision_config=dict(IDEFICS3_TESTER_VISION), text_config=text, scale_factor=IDEFICS3_TESTER_SCALE)
    model = _model(getattr(transformers, f"{prefix}ForConditionalGeneration"), cfg, seed)
    out = _finish(model, tok, out_dir, proc)
    _add_processor_keys(out, image_seq_len=seq)
    return out


TINY_BUILDERS.update({
    "internvl": save_tiny_internvl,
    "qwen3_vl": save_tiny_qwen3_vl,
    "idefics3": save_tiny_idefics3,
    "smolvlm": lambda out, seed=0: save_tiny_idefics3(out, seed, model_type="smolvlm"),
})
