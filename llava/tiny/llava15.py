"""Build small LLaVA checkpoints offline: word-level tokenizer, CLIP-style processor, random model.

Used by tests (tiny random models), the `tiny_random` model group and the toy world. Everything is
built in code from configs, so nothing is ever downloaded; the result is a standard Hugging Face
folder that `AutoProcessor` / `AutoModelForImageTextToText` load back like any hub checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
CHAT_WORDS = ["user", "assistant", ":", ".", ",", "?", "!", "\n"]

# LLaVA-1.5 conversation form: "USER: <image>\n{text} ASSISTANT:" (lower-cased by the tokenizer).
LLAVA15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %} "
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

DEFAULT_WORDS = (
    "what is in the image this a an of on at left right top bottom center middle color shape "
    "red green blue yellow purple orange white black gray circle square triangle cross star "
    "where which object describe picture there how many one two three four yes no and with "
    "small large big cat dog person car tree sky"
).split()


@dataclass
class TinyLlavaSpec:
    """Sizes of a tiny LLaVA; defaults give a model of a few hundred kB that runs in milliseconds."""

    image_size: int = 56
    patch_size: int = 14
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 64
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int | None = None  # < text_heads gives a GQA text model
    text_intermediate: int = 128
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    words: Sequence[str] = field(default_factory=lambda: list(DEFAULT_WORDS))
    chat_template: str = LLAVA15_CHAT_TEMPLATE
    max_position_embeddings: int = 4096
    pad_to_square: bool = False  # True: LLaVA-1.5 original pad-to-square (LlavaImageProcessorPil do_pad)
    seed: int = 0


def build_word_tokenizer(words: Sequence[str], chat_template: str | None = None, specials: Sequence[str] = (),
                         named: dict[str, str] | None = None):
    """A lower-casing word-level fast tokenizer whose vocabulary is exactly specials + `words`.

    specials: whole tokens beyond SPECIAL_TOKENS (kept as written); named: tokenizer attributes the
    processors read (`image_token`, `boi_token`, ...; default `image_token` = <image>).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    keep = {*SPECIAL_TOKENS, *specials}
    vocab: dict[str, int] = {}
    for w in [*SPECIAL_TOKENS, *specials, *CHAT_WORDS, *words]:
        vocab.setdefault(w if w in keep else w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # Like LLaMA's tokenizer, every encoded text starts with <s>.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=named or {"image_token": "<image>"},
        padding_side="left",
        chat_template=chat_template,
        model_input_names=["input_ids", "attention_mask"],  # 4.x would add token_type_ids
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>", *specials]})
    return fast


def seeded_weights(model, seed: int, std: float = 0.1) -> None:
    """Give `model` weights that depend on `seed` only, not on transformers' initialisation.

    Each parameter gets N(0, std) from a generator seeded by (seed, its name without the levels that
    differ between versions), so a tiny model is the same on every supported transformers version.
    One-dimensional parameters initialised to a constant (norm scales, biases) keep the constant;
    other biases become 0.
    """
    import zlib

    import torch

    from llava.compat import canonical_name

    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().flatten()
            if p.dim() == 1 and (bool((flat == flat[0]).all()) or name.endswith("bias")):
                p.fill_(flat[0] if bool((flat == flat[0]).all()) else 0.0)
                continue
            g = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{canonical_name(name)}".encode()))
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(std).to(p.dtype))


def build_processor(spec: TinyLlavaSpec):
    """LlavaProcessor = PIL image processor + word tokenizer.

    The image processor is CLIP's (resize shortest edge + centre crop, as llava-hf ships) or, with
    `spec.pad_to_square`, LLaVA's with `do_pad=True` (the original LLaVA-1.5 handling); both PIL-backed.
    """
    from transformers import LlavaProcessor

    from llava.compat import pil_image_processor

    sizes = dict(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    if spec.pad_to_square:
        image_processor = pil_image_processor("LlavaImageProcessor")(do_pad=True, **sizes)
    else:
        image_processor = pil_image_processor("CLIPImageProcessor")(**sizes)
    tokenizer = build_word_tokenizer(spec.words, spec.chat_template)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy=spec.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=spec.chat_template,
    )


def build_config(spec: TinyLlavaSpec, tokenizer):
    """LlavaConfig with a CLIP vision tower and a Llama text model sized by `spec`."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_hidden * 4,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads or spec.text_heads,
        max_position_embeddings=spec.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    grid = spec.image_size // spec.patch_size
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=grid * grid,
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy=spec.vision_feature_select_strategy,
    )


def build_tiny_llava(spec: TinyLlavaSpec | None = None, version_free_weights: bool = True):
    """Return `(model, processor)`: a random LlavaForConditionalGeneration in float32.

    version_free_weights: weights from `seeded_weights` (the same on every transformers version);
    False keeps transformers' own initialisation under `torch.manual_seed(spec.seed)` (toy training).
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    spec = spec or TinyLlavaSpec()
    processor = build_processor(spec)
    config = build_config(spec, processor.tokenizer)
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config).eval()
    if version_free_weights:
        seeded_weights(model, spec.seed)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.bos_token_id = processor.tokenizer.bos_token_id
    return model, processor


def save_tiny_llava(out_dir: str | Path, spec: TinyLlavaSpec | None = None) -> Path:
    """Build a tiny random LLaVA and save it (safetensors + processor files) to `out_dir`."""
    out = Path(out_dir)
    model, processor = build_tiny_llava(spec)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
