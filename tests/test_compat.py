"""llava/compat.py: the declared transformers range, complete weight loading, portable checkpoints,
and the one private transformers name we rely on (this file fails loudly if transformers changes it).

Run on every supported version (CI: the newest release and the floor). The fingerprints below are the
same on all of them: the shipped toy checkpoint loads identically, and the tiny test models are built
from seeded weights that do not depend on transformers' initialisation.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from inprocess import run_script
import torch
from PIL import Image

from llava import compat
from llava.toy import CHECKPOINT_DIR
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.versions  # also run on the floor transformers (tests/README.md)


def fingerprint(model) -> str:
    """sha256 (12 hex) over the state dict in version-independent names and order."""
    h = hashlib.sha256()
    sd = model.state_dict()
    for key in sorted(sd, key=compat.canonical_name):
        h.update(compat.canonical_name(key).encode())
        h.update(sd[key].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


# ---- the declared range ---------------------------------------------------------------------

def _declared(text: str) -> str:
    m = re.search(r"""["']?transformers\s*([<>=!~][^"'\s]*)""", text)
    assert m, "no transformers requirement"
    return m.group(1)


def test_range_is_declared_alike_everywhere():
    assert _declared((ROOT / "requirements.txt").read_text()) == compat.SUPPORTED
    assert _declared((ROOT / "pyproject.toml").read_text()) == compat.SUPPORTED
    assert f"transformers{compat.SUPPORTED}" in (ROOT / "README.md").read_text()
    compat.require_supported()  # the installed version is in it


@pytest.mark.parametrize("version", ["4.51.3", "4.56.2", "6.0.0"])
def test_versions_outside_the_range_are_refused(version):
    with pytest.raises(UserError, match=re.escape(f"transformers {version} is installed; this tool supports "
                                                  f"transformers{compat.SUPPORTED}")):
        compat.require_supported(version)


@pytest.mark.parametrize("version", ["4.57.0", "4.57.6", "5.5.4", "5.23.0", "5.99.0.dev0"])
def test_versions_inside_the_range_pass(version):
    compat.require_supported(version)


# ---- complete weight loading ----------------------------------------------------------------

def _edit_weights(src: Path, dst: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


RENAMED = "language_model.model.layers.2.self_attn.q_proj.weight"


def _rename(tensors):
    tensors[RENAMED.replace("q_proj", "q_prj")] = tensors.pop(RENAMED)


@pytest.fixture(scope="module")
def renamed_ckpt(tmp_path_factory) -> Path:
    """The toy checkpoint with one weight key misspelt (what a wrong key layout looks like)."""
    return _edit_weights(CHECKPOINT_DIR, tmp_path_factory.mktemp("renamed") / "ckpt", _rename)


def test_renamed_weight_is_refused_with_one_line(renamed_ckpt):
    from llava.model import load_vlm

    with pytest.raises(UserError) as err:
        load_vlm(str(renamed_ckpt), device="cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"checkpoint {renamed_ckpt} does not load completely with transformers {compat.installed_version()}" in msg
    assert "1 missing (model.language_model.layers.2.self_attn.q_proj.weight)" in msg
    assert "1 unexpected (" in msg and "q_prj.weight" in msg
    assert "saved with transformers" in msg


def test_renamed_weight_is_refused_by_the_cli(renamed_ckpt, tmp_path):
    r = run_script(ROOT / "localization_heads_finder.py", "stage=pipeline",  # in this process: tests/inprocess.py
                   f"image_file={ROOT / 'examples/toy/images/toy_0000.png'}", "query=what shape is the red one?",
                   f"model.name_or_path={renamed_ckpt}", "model.device=cpu", f"output_dir={tmp_path}",
                   cwd=Path(tempfile.mkdtemp(prefix="lhf_compat_")))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "does not load completely" in errors[0] and "q_prj.weight" in errors[0], r.stderr
    assert not (tmp_path / "attention").exists()


def test_wrong_shape_and_many_keys_are_counted(tmp_path):
    from transformers import AutoModelForImageTextToText

    def edit(tensors):
        tensors[RENAMED] = tensors[RENAMED][:64].clone()
        for key in [k for k in tensors if k.startswith("vision_tower.")][:5]:
            tensors["tower." + key] = tensors.pop(key)

    ckpt = _edit_weights(CHECKPOINT_DIR, tmp_path / "ckpt", edit)
    with pytest.raises(UserError) as err:
        compat.load_complete(AutoModelForImageTextToText, str(ckpt))
    msg = str(err.value)
    assert "1 mismatched (model.language_model.layers.2.self_attn.q_proj.weight)" in msg
    assert "5 missing (" in msg and ", ... 2 more)" in msg and "5 unexpected (tower.vision_tower." in msg


def test_tied_and_created_weights_are_not_problems():
    info = {"missing_keys": set(), "unexpected_keys": [], "mismatched_keys": [("a.weight", (1,), (2,))], "error_msgs": []}
    assert compat.weight_problems(info) == {"mismatched": ["a.weight"]}
    assert compat.weight_problems({"missing_keys": [], "unexpected_keys": set()}) == {}


# ---- the shipped toy checkpoint loads identically on every supported version -----------------

TOY_FINGERPRINT = "006ba2f019ac"


def test_toy_checkpoint_is_in_the_portable_layout():
    from safetensors import safe_open

    with safe_open(str(CHECKPOINT_DIR / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(compat.portable_weight_name(k) == k for k in keys)
    assert any(k.startswith("vision_tower.vision_model.") for k in keys)
    tok = json.loads((CHECKPOINT_DIR / "tokenizer_config.json").read_text())
    assert tok == compat.portable_tokenizer_config(tok)
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast" and "token_type_ids" not in tok["model_input_names"]


def test_toy_checkpoint_loads_the_same_tensors():
    from transformers import AutoModelForImageTextToText

    model = compat.load_complete(AutoModelForImageTextToText, str(CHECKPOINT_DIR))
    assert fingerprint(model) == TOY_FINGERPRINT


def test_portable_rewrite_of_a_5x_layout():
    assert compat.portable_weight_name("vision_tower.encoder.layers.0.mlp.fc1.weight") == \
        "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"
    assert compat.portable_weight_name("vision_tower.vision_model.post_layernorm.bias") == \
        "vision_tower.vision_model.post_layernorm.bias"
    assert compat.portable_weight_name("language_model.model.norm.weight") == "language_model.model.norm.weight"
    saved = {"backend": "tokenizers", "tokenizer_class": "TokenizersBackend", "extra_special_tokens": ["<image>"],
             "image_token": "<image>", "bos_token": "<s>"}
    assert compat.portable_tokenizer_config(saved) == {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "extra_special_tokens": {"image_token": "<image>"},
        "additional_special_tokens": ["<image>"], "model_input_names": ["input_ids", "attention_mask"]}


# ---- tiny test models: the same weights on every version -------------------------------------

TINY_FINGERPRINTS = {
    "llava": "a1c449f45c86",
    "llava_next": "a93ff4749083",
    "llava_onevision": "7d3f9e2319f8",
    "qwen2_vl": "e855a459a580",
    "qwen2_5_vl": "5efdd565d90a",
    "gemma3": "31133ee162a6",
}


@pytest.mark.parametrize("name", sorted(TINY_FINGERPRINTS))
def test_tiny_models_do_not_depend_on_transformers_init(name, tmp_path):
    from transformers import AutoModelForImageTextToText

    from llava.tiny.llava15 import TinyLlavaSpec, save_tiny_llava
    from llava.tiny.families import TINY_BUILDERS

    if name == "llava":
        folder = save_tiny_llava(tmp_path, TinyLlavaSpec(seed=3))
    else:
        folder = TINY_BUILDERS[name](tmp_path, seed=3)
    model = compat.load_complete(AutoModelForImageTextToText, str(folder))
    assert fingerprint(model) == TINY_FINGERPRINTS[name]


# ---- processors -----------------------------------------------------------------------------

def _word_tokenizer():
    from llava.tiny.llava15 import DEFAULT_WORDS, build_word_tokenizer

    return build_word_tokenizer(DEFAULT_WORDS)


def test_processor_from_parts_leaves_transformers_alone():
    """The per-part class check is skipped on a subclass only: transformers' own class still checks."""
    from transformers import LlavaProcessor, ProcessorMixin

    original = ProcessorMixin.check_argument_for_proper_class
    ip = compat.pil_image_processor("CLIPImageProcessor")()
    with pytest.raises(TypeError):  # transformers checks the parts, through the method we override
        LlavaProcessor(image_processor=object(), tokenizer=_word_tokenizer())
    proc = compat.processor_from_parts(LlavaProcessor, image_processor=ip, tokenizer=_word_tokenizer())
    assert isinstance(proc, LlavaProcessor) and type(proc).__name__ == "LlavaProcessor"
    assert ProcessorMixin.check_argument_for_proper_class is original
    assert LlavaProcessor.check_argument_for_proper_class is original


def test_processor_without_video_processor_works():
    """What Qwen / OneVision need without torchvision; fails loudly if transformers renames the check."""
    from transformers import Qwen2VLProcessor

    ip = compat.pil_image_processor("Qwen2VLImageProcessor")(min_pixels=28 * 28, max_pixels=28 * 28 * 4)
    from llava.tiny.families import QWEN_CHAT_TEMPLATE, _special_tokenizer

    tok = _special_tokenizer(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
                             QWEN_CHAT_TEMPLATE, {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    proc = compat.processor_from_parts(Qwen2VLProcessor, image_processor=ip, tokenizer=tok)
    assert getattr(proc, "video_processor", None) is None
    enc = proc(images=[Image.new("RGB", (56, 56))], text=["<|vision_start|> <|image_pad|> <|vision_end|> hi"],
               return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 4, 4]] and int((enc["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).sum()) == 4


def test_public_processor_config_readers_exist():
    from transformers import ImageProcessingMixin, ProcessorMixin

    cfg, _ = ProcessorMixin.get_processor_dict(str(CHECKPOINT_DIR))
    ip_cfg, _ = ImageProcessingMixin.get_image_processor_dict(str(CHECKPOINT_DIR))
    assert cfg["processor_class"] == "LlavaProcessor" and ip_cfg["image_processor_type"] == "LlavaImageProcessor"


@pytest.mark.parametrize("name", sorted(TINY_FINGERPRINTS))
def test_assembled_processor_equals_auto_processor(name, tmp_path):
    """The fallback used without torchvision gives the same model inputs as AutoProcessor (where
    AutoProcessor can build this family's processor in this environment)."""
    from transformers import AutoProcessor

    from llava.tiny.llava15 import TinyLlavaSpec, save_tiny_llava
    from llava.families import FAMILIES
    from llava.tiny.families import TINY_BUILDERS

    folder = save_tiny_llava(tmp_path, TinyLlavaSpec(pad_to_square=True)) if name == "llava" else TINY_BUILDERS[name](tmp_path)
    try:
        auto = AutoProcessor.from_pretrained(str(folder))
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        pytest.skip(f"AutoProcessor cannot build the {name} processor here ({type(e).__name__}); nothing to compare")
    parts = compat._assemble_processor(str(folder), FAMILIES[name].processor_class)
    assert type(parts).__name__ == type(auto).__name__
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 90, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color ?"}]}]
    text = auto.apply_chat_template(messages, add_generation_prompt=True)
    assert parts.apply_chat_template(messages, add_generation_prompt=True) == text
    images = [[img]] if FAMILIES[name].nested_images else [img]
    a, b = auto(images=images, text=[text], return_tensors="pt"), parts(images=images, text=[text], return_tensors="pt")
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_unloadable_processor_is_one_user_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(UserError, match=r"cannot load the processor of .* with transformers .*pip install torchvision"):
        compat.load_processor(str(tmp_path), "Qwen2VLProcessor")


def test_source_uses_no_private_transformers_api():
    for path in (ROOT / "llava").rglob("*.py"):
        text = path.read_text()
        for name in ("_raise_exceptions_for_missing_entries", "PROCESSOR_MAPPING_NAMES", "check_argument_for_proper_class ="):
            assert name not in text, f"{path}: {name}"


def test_rope_config_builds_the_same_rope():
    from transformers import Qwen2VLConfig

    cfg = Qwen2VLConfig(text_config=dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
                                         **compat.rope_config(Qwen2VLConfig, 12345.0, mrope_section=[2, 3, 3])))
    tc = cfg.text_config
    rope = getattr(tc, "rope_parameters", None) or tc.rope_scaling
    theta = rope.get("rope_theta", getattr(tc, "rope_theta", None))
    assert theta == 12345.0 and rope["mrope_section"] == [2, 3, 3]
