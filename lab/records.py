"""AttentionRecord: the one file format that crosses from `llava/` to `lab/`.

`<out>/attention/<id>.safetensors` holds the tensors; the metadata (JSON) sits in the
safetensors header under the key `attention_record`, so one file is the whole record and opening
someone else's record never executes code (no pickle).

Tensors
  image_attention  float32 (Q, L, H, V): captured query rows x layers x heads x image tokens
  input_ids        int64   (S,): the sample's own (unpadded) prompt
  generated_ids    int64   (T,): optional, the generated answer
  first_attention  float32 (Q, L, H): optional, the same rows' attention on the sample's first prompt
                   token (BOS), so a per-layer "zero the first column and renormalise" weighting
                   (VLM-Visualizer's) can be computed from the record (lab/tokens.py)
  vision_<name>    float32 (V, P): optional (`strategy.vision=true`), the vision tower's token->patch
                   matrix for aggregate <name> (mean | rollout | vlm_visualizer): row = image token,
                   columns = input patches in row-major order on the patch grid of `meta.vision`
Metadata: see `RecordMeta`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UserError
from utils.io import atomic_write_bytes
from utils.layout import ImageLayout

FORMAT = "attention_record"
FORMAT_VERSION = 1
META_KEY = "attention_record"
VISION_PREFIX = "vision_"


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("localization-heads")
    except Exception:
        return "0.1.0"


@dataclass
class RecordMeta:
    """Everything needed to interpret the tensors without the model."""

    sample_id: str
    model_id: str
    model_type: str
    num_layers: int  # of the text model
    num_heads: int
    layers: list[int]  # captured layer indices (the L axis)
    heads: list[int]  # captured head indices (the H axis)
    prompt: str
    query: str
    query_mode: str  # last_input | generated | all_input | positions
    query_positions: list[int]  # positions in input_ids (generated rows: len(input_ids) - 1 + t)
    query_tokens: list[str]
    image_path: str | None
    image_size: list[int]  # original (W, H)
    image_aspect: str
    layout: dict[str, Any]
    prompt_template: str = "chat"
    generated_text: str = ""
    generated_tokens: list[str] = field(default_factory=list)
    interventions: dict[str, Any] = field(default_factory=dict)
    vision: dict[str, Any] = field(default_factory=dict)  # patch grid + settings of the vision_<name> tensors
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)
    tool_version: str = field(default_factory=tool_version)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION


@dataclass
class AttentionRecord:
    image_attention: np.ndarray  # (Q, L, H, V) float32
    input_ids: np.ndarray  # (S,) int64
    meta: RecordMeta
    generated_ids: np.ndarray | None = None
    path: Path | None = None
    first_attention: np.ndarray | None = None  # (Q, L, H) float32
    vision: dict[str, np.ndarray] = field(default_factory=dict)  # aggregate name -> (V, P) float32

    @property
    def layout(self) -> ImageLayout:
        return ImageLayout.from_dict(self.meta.layout)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.image_attention.shape)  # type: ignore[return-value]

    def maps(self, q: int = -1, grid: str | None = None) -> np.ndarray:
        """(L, H, rows, cols) attention maps of query row q on the image grid."""
        return self.layout.to_grid(self.image_attention[q], grid)

    def validate(self, where: str = "record") -> None:
        """Shapes agree with each other and with the metadata; raises UserError naming `where`."""
        a, m = self.image_attention, self.meta
        problems = []
        if a.ndim != 4:
            problems.append(f"image_attention has {a.ndim} dims, expected 4 (Q, L, H, V)")
        else:
            q, l, h, v = a.shape
            if q != len(m.query_positions):
                problems.append(f"{q} query rows but {len(m.query_positions)} query_positions")
            if l != len(m.layers):
                problems.append(f"{l} layers in the tensor but {len(m.layers)} in metadata")
            if h != len(m.heads):
                problems.append(f"{h} heads in the tensor but {len(m.heads)} in metadata")
            try:
                lay = self.layout
                if v != lay.num_tokens:
                    problems.append(f"{v} image tokens in the tensor but the layout has {lay.num_tokens}")
            except (KeyError, TypeError, ValueError) as e:
                problems.append(f"layout is malformed ({e})")
            if self.first_attention is not None and tuple(self.first_attention.shape) != (q, l, h):
                problems.append(f"first_attention has shape {tuple(self.first_attention.shape)}, expected {(q, l, h)}")
            problems += self._vision_problems(v)
        if self.input_ids.ndim != 1:
            problems.append(f"input_ids has {self.input_ids.ndim} dims, expected 1")
        if m.format != FORMAT:
            problems.append(f"format is {m.format!r}, expected {FORMAT!r}")
        if m.format_version > FORMAT_VERSION:
            problems.append(f"format_version {m.format_version} is newer than this tool reads ({FORMAT_VERSION}); upgrade the tool")
        if problems:
            raise UserError(f"{where}: invalid attention record: " + "; ".join(problems))

    def _vision_problems(self, v: int) -> list[str]:
        vm = self.meta.vision or {}
        if not self.vision and not vm:
            return []
        try:
            p = int(vm["patch_rows"]) * int(vm["patch_cols"])
            names = list(vm["aggregates"])
        except (KeyError, TypeError, ValueError) as e:
            return [f"vision metadata is malformed ({e!r})"]
        out = []
        if sorted(names) != sorted(self.vision):
            out.append(f"vision metadata names {names} but the tensors are {sorted(self.vision)}")
        for name, m in self.vision.items():
            if tuple(m.shape) != (v, p):
                out.append(f"vision_{name} has shape {tuple(m.shape)}, expected {(v, p)} (image tokens x patches)")
        return out

    # ---- files --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename): a killed run never leaves a half-written record."""
        from safetensors.numpy import save

        path = Path(path)
        self.validate(str(path))
        tensors = {
            "image_attention": np.ascontiguousarray(self.image_attention, dtype=np.float32),
            "input_ids": np.ascontiguousarray(self.input_ids, dtype=np.int64),
        }
        if self.generated_ids is not None:
            tensors["generated_ids"] = np.ascontiguousarray(self.generated_ids, dtype=np.int64)
        if self.first_attention is not None:
            tensors["first_attention"] = np.ascontiguousarray(self.first_attention, dtype=np.float32)
        for name, m in self.vision.items():
            tensors[VISION_PREFIX + name] = np.ascontiguousarray(m, dtype=np.float32)
        meta = json.dumps(asdict(self.meta), allow_nan=False)
        atomic_write_bytes(path, save(tensors, metadata={META_KEY: meta}))
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AttentionRecord":
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise UserError(f"attention file not found: {path} (set attention_file=<path to a .safetensors record>)")
        try:
            with safe_open(str(path), framework="np") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise UserError(f"{path}: not a readable safetensors attention record ({e})") from None
        if META_KEY not in header:
            raise UserError(f"{path}: safetensors file without '{META_KEY}' metadata; was it written by this tool?")
        try:
            raw = json.loads(header[META_KEY])
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: record metadata is not valid JSON ({e})") from None
        known = {f.name for f in fields(RecordMeta)}
        required = [f.name for f in fields(RecordMeta) if f.name not in raw and _is_required(f)]
        if required:
            raise UserError(f"{path}: record metadata lacks {required}")
        meta = RecordMeta(**{k: v for k, v in raw.items() if k in known})
        for name in ("image_attention", "input_ids"):
            if name not in tensors:
                raise UserError(f"{path}: record has no '{name}' tensor")
        rec = cls(
            image_attention=tensors["image_attention"],
            input_ids=tensors["input_ids"],
            meta=meta,
            generated_ids=tensors.get("generated_ids"),
            path=path,
            first_attention=tensors.get("first_attention"),
            vision={k[len(VISION_PREFIX):]: t for k, t in tensors.items() if k.startswith(VISION_PREFIX)},
        )
        rec.validate(str(path))
        return rec


def _is_required(f) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING  # type: ignore[misc]


def record_path(output_dir: str | os.PathLike, sample_id: str) -> Path:
    """Where a sample's record lives: `<output_dir>/attention/<sample_id>.safetensors`."""
    return Path(output_dir) / "attention" / f"{safe_id(sample_id)}.safetensors"


def safe_id(sample_id: str) -> str:
    """A file-name-safe form of a sample id (ids come from user JSONL files)."""
    keep = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in str(sample_id))
    keep = keep.lstrip(".") or "sample"
    return keep[:200]


def check_compatible(records: list[AttentionRecord]) -> None:
    """Records analysed together must come from one model and one capture layout."""
    if not records:
        return
    ref = records[0]
    for r in records[1:]:
        for key in ("model_id", "num_layers", "num_heads", "layers", "heads"):
            if getattr(r.meta, key) != getattr(ref.meta, key):
                raise UserError(
                    f"{r.path}: {key}={getattr(r.meta, key)!r} differs from {ref.path} ({getattr(ref.meta, key)!r}); "
                    "analyse records of one model and one capture setting together (use separate folders)"
                )
