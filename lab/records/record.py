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
                   (VLM-Visualizer's) can be computed from the record (lab/analysis/token_maps.py)
  vision_<name>    float32 (V, P): optional (`strategy.vision=true`), the vision tower's token->patch
                   matrix for aggregate <name> (mean | rollout | vlm_visualizer): row = image token,
                   columns = input patches in row-major order on the patch grid of `meta.vision`
Metadata: see `RecordMeta`; `fingerprint` says what made the record (lab/records/provenance.py).
Loading checks everything before use (lab/records/validation.py): a regular file, metadata types and
sizes against the tensors, attention values finite, non-negative, rows summing to <= 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lab.records.provenance import check_compatible_fingerprints
from lab.records.validation import (FORMAT, FORMAT_VERSION, check_meta, check_tensor_shapes, check_values, read_header,
                               same_regular_file)
from utils.settings.choices import VisionAggregate, options
from utils.settings.declarations import excluded_layers
from utils.data import file_stem
from utils.errors import UserError
from utils.io import atomic_write_bytes
from utils.contracts.layout import ImageLayout

META_KEY = "attention_record"
VISION_PREFIX = "vision_"
VISION_AGGREGATES = options(VisionAggregate)  # the vision_<name> tensors a record may hold


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
    fingerprint: dict[str, Any] = field(default_factory=dict)  # what made it (lab/records/provenance.py); {} = unknown
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

    # ---- record axes <-> model indices (records may hold a subset of layers / heads) ---------
    def model_head(self, li: int, hi: int) -> tuple[int, int]:
        """Indices on the record's (L, H) axes -> the model's (layer, head)."""
        return int(self.meta.layers[li]), int(self.meta.heads[hi])

    def model_heads(self, axes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        return [self.model_head(li, hi) for li, hi in axes]

    def has_heads(self, heads: Sequence[tuple[int, int]]) -> bool:
        """Whether every model (layer, head) of `heads` was captured in this record."""
        layers, hs = set(self.meta.layers), set(self.meta.heads)
        return all(layer in layers and head in hs for layer, head in heads)

    def axes_of(self, heads: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Model (layer, head) pairs -> indices on the record's (L, H) axes; a head that was not
        captured is a UserError naming it and what the record holds."""
        li = {layer: i for i, layer in enumerate(self.meta.layers)}
        hi = {head: i for i, head in enumerate(self.meta.heads)}
        for layer, head in heads:
            if layer not in li or head not in hi:
                raise UserError(f"{self.path}: head L{layer}H{head} was not captured in this record "
                                f"(layers {_span(self.meta.layers)}, heads {_span(self.meta.heads)})")
        return [(li[layer], hi[head]) for layer, head in heads]

    def excluded_axes(self, exclude_layers: Sequence[int] | None) -> list[int]:
        """Excluded model layers (`selection.exclude_layers`; None = scaled to the model's depth) ->
        indices on the record's L axis."""
        wanted = set(excluded_layers(exclude_layers, self.meta.num_layers))
        return [i for i, layer in enumerate(self.meta.layers) if layer in wanted]

    def shapes(self) -> dict[str, list[int]]:
        out = {"image_attention": list(self.image_attention.shape), "input_ids": list(self.input_ids.shape)}
        if self.generated_ids is not None:
            out["generated_ids"] = list(self.generated_ids.shape)
        return out

    def validate(self, where: str = "record") -> None:
        """Shapes, metadata and values agree with each other (lab/records/validation.py); UserError naming `where`."""
        dtypes = {"image_attention": "F32" if self.image_attention.dtype == np.float32 else str(self.image_attention.dtype),
                  "input_ids": "I64" if self.input_ids.dtype == np.int64 else str(self.input_ids.dtype)}
        if self.generated_ids is not None:
            dtypes["generated_ids"] = "I64" if self.generated_ids.dtype == np.int64 else str(self.generated_ids.dtype)
        shapes = self.shapes()
        check_tensor_shapes({k: (dtypes[k], v) for k, v in shapes.items()}, where)
        try:
            plain = json.loads(json.dumps(asdict(self.meta), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: record metadata is not plain JSON ({e})") from None
        check_meta(plain, shapes, where)
        check_values(self.image_attention, where)
        problems = self._optional_problems()
        if problems:
            raise UserError(f"{where}: invalid attention record: " + "; ".join(problems))

    def _optional_problems(self) -> list[str]:
        """The optional tensors: first_attention (Q, L, H) and vision_<name> (V, P), finite and >= 0."""
        q, l, h, v = self.image_attention.shape
        out = []
        if self.first_attention is not None:
            if tuple(self.first_attention.shape) != (q, l, h):
                out.append(f"first_attention has shape {tuple(self.first_attention.shape)}, expected {(q, l, h)}")
            elif not (np.isfinite(self.first_attention).all() and (self.first_attention >= 0).all()):
                out.append("first_attention holds non-finite or negative values")
        out += self._vision_problems(v)
        return out

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
        unknown = [n for n in names if n not in VISION_AGGREGATES]
        if unknown:
            out.append(f"vision metadata names unknown aggregates {unknown[:3]} (known: {', '.join(VISION_AGGREGATES)})")
        for name, m in self.vision.items():
            if tuple(m.shape) != (v, p):
                out.append(f"vision_{name} has shape {tuple(m.shape)}, expected {(v, p)} (image tokens x patches)")
            elif not (np.isfinite(m).all() and (m >= 0).all()):
                out.append(f"vision_{name} holds non-finite or negative values")
        return out

    # ---- files --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename): a killed run never leaves a half-written record."""
        from safetensors.numpy import save

        path = Path(path)
        self.image_attention = np.ascontiguousarray(self.image_attention, dtype=np.float32)
        self.input_ids = np.ascontiguousarray(self.input_ids, dtype=np.int64)
        if self.generated_ids is not None:
            self.generated_ids = np.ascontiguousarray(self.generated_ids, dtype=np.int64)
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
        """Read and check a record (see the module docstring); any problem is a UserError naming the file."""
        from safetensors import safe_open

        path = Path(path)
        if not os.path.lexists(path):
            raise UserError(f"attention file not found: {path} (set attention_file=<path to a .safetensors record>)")
        header, shapes, ident = read_header(path)  # regular files only; bounded header
        if META_KEY not in header:
            raise UserError(f"{path}: safetensors file without '{META_KEY}' metadata; was it written by this tool?")
        try:
            raw = json.loads(header[META_KEY])
        except (TypeError, json.JSONDecodeError, RecursionError) as e:
            raise UserError(f"{path}: record metadata is not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: record metadata must be a JSON object, got {type(raw).__name__}")
        required = [f.name for f in fields(RecordMeta) if f.name not in raw and _is_required(f)]
        if required:
            raise UserError(f"{path}: record metadata lacks {required}")
        check_tensor_shapes(shapes, str(path))
        check_meta(raw, {k: v for k, (_, v) in shapes.items()}, str(path))
        optional = _optional_tensors(shapes, raw, str(path))
        if not same_regular_file(path, ident):  # replaced since it was checked (never open a FIFO)
            raise UserError(f"{path}: the file changed while it was read; try again")
        try:
            with safe_open(str(path), framework="np") as f:
                tensors = {k: f.get_tensor(k) for k in (*TENSOR_NAMES, *optional) if k in shapes}
        except UserError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise UserError(f"{path}: not a readable safetensors attention record ({e})") from None
        known = {f.name for f in fields(RecordMeta)}
        meta = RecordMeta(**{k: v for k, v in raw.items() if k in known})
        rec = cls(
            image_attention=tensors["image_attention"],
            input_ids=tensors["input_ids"],
            meta=meta,
            generated_ids=tensors.get("generated_ids"),
            path=path,
            first_attention=tensors.get("first_attention"),
            vision={k[len(VISION_PREFIX):]: t for k, t in tensors.items() if k.startswith(VISION_PREFIX)},
        )
        check_values(rec.image_attention, str(path))
        problems = rec._optional_problems()
        if problems:
            raise UserError(f"{path}: invalid attention record: " + "; ".join(problems))
        return rec


TENSOR_NAMES = ("image_attention", "input_ids", "generated_ids")


def _optional_tensors(shapes: dict[str, tuple[str, list[int]]], raw: dict, where: str) -> list[str]:
    """Names of the optional tensors to read, their dtype and shape checked against the required
    ones and the metadata before any is read (so a crafted file cannot make us read gigabytes)."""
    q, n_l, n_h, v = shapes["image_attention"][1]
    vm = raw.get("vision") if isinstance(raw.get("vision"), dict) else {}
    problems, names = [], []
    for k, (dtype, shape) in shapes.items():
        if k in TENSOR_NAMES:
            continue
        if k == "first_attention":
            want = [q, n_l, n_h]
        elif k.startswith(VISION_PREFIX) and k[len(VISION_PREFIX):] in VISION_AGGREGATES:
            rows, cols = vm.get("patch_rows"), vm.get("patch_cols")
            ok = all(isinstance(x, int) and 0 < x <= 4096 for x in (rows, cols))
            want = [v, rows * cols] if ok else None
        else:  # a tensor this version does not know (a newer tool's): not read
            continue
        if dtype != "F32" or shape != want:
            problems.append(f"{k} is {dtype} {shape}, expected F32 {want}")
        names.append(k)
    if problems:
        raise UserError(f"{where}: invalid attention record: " + "; ".join(problems[:4]))
    return names


def _is_required(f) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING  # type: ignore[misc]


def record_file(folder: str | os.PathLike, sample_id: str) -> Path:
    """A sample's record in a folder of records: `<folder>/<file_stem(sample_id)>.safetensors`."""
    return Path(folder) / f"{file_stem(sample_id)}.safetensors"


def record_path(output_dir: str | os.PathLike, sample_id: str) -> Path:
    """Where a sample's record lives: `<output_dir>/attention/<file_stem(sample_id)>.safetensors`
    (utils.data.file_stem: deterministic, collision-free, byte-limited)."""
    return record_file(Path(output_dir) / "attention", sample_id)


def safe_id(sample_id: str) -> str:
    """The file-name stem of a sample id (utils.data.file_stem; kept under its old name)."""
    return file_stem(sample_id)


def check_compatible(records: list[AttentionRecord]) -> None:
    """Records analysed together must come from one run: one model (by its weights when the records
    carry fingerprints, else by its id), one capture setting, one generation length."""
    if not records:
        return
    check_compatible_fingerprints(records)
    ref = records[0]
    keys = ("num_layers", "num_heads", "layers", "heads") if ref.meta.fingerprint else \
        ("model_id", "num_layers", "num_heads", "layers", "heads")
    for r in records[1:]:
        for key in keys:
            if getattr(r.meta, key) != getattr(ref.meta, key):
                raise UserError(
                    f"{r.path}: {key}={getattr(r.meta, key)!r} differs from {ref.path} ({getattr(ref.meta, key)!r}); "
                    "analyse records of one model and one capture setting together (use separate folders)"
                )


def _span(values: Sequence[int]) -> str:
    """Every value, runs written as spans: `0..31`, `[0..3, 7, 9..11]`, `[2, 5]` (nothing left out)."""
    v = sorted({int(x) for x in values})
    parts, i = [], 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[j + 1] == v[j] + 1:
            j += 1
        parts.append(f"{v[i]}..{v[j]}" if j - i >= 2 else ", ".join(map(str, v[i:j + 1])))
        i = j + 1
    text = ", ".join(parts)
    return text if len(parts) == 1 and ".." in text else f"[{text}]"
