"""Checks an attention record passes before any stage uses it (lab/records/record.py calls them).

Records can come from anyone, so nothing in a file is trusted:

* the file must be a regular file (a FIFO, also behind a symlink, is refused instead of blocking);
* the safetensors header is read by us first (at most `MAX_HEADER_BYTES`), and the metadata is
  checked field by field -- types, and sizes capped by what the tensors imply: `image_size` within
  the image loader's pixel limit, matching the layout, and spanned by some grid box on at least a
  quarter of a side (every family's grid spans a whole side); strings at most a few KB per token of the
  prompt / answer; `query_tokens` no more than query rows; `layers` / `heads` as long as the tensor's
  axes and inside the model's size; grid cells pointing at real image tokens, grid boxes near the image;
* the attention values must be finite, non-negative, sum to at most 1 per row (they are part of a
  softmax row) and not all zero.

Every problem is collected and raised as one UserError naming the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
from typing import Any

import numpy as np

from utils.errors import UserError
from utils.images import max_image_pixels
from utils.files import open_regular
from utils.contracts.layout import ImageLayout

FORMAT = "attention_record"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 32 << 20  # a real record's header is a few hundred KB even for anyres all_input captures
MAX_NAME_CHARS = 4096
MAX_TOKEN_CHARS = 1024
MAX_MODEL_SIZE = 4096  # layers or heads
ROW_SUM_TOLERANCE = 1e-3
MIN_GRID_SPAN = 0.25  # some grid box spans >= this share of the image's width or height (pad, crop, anyres, resize)
TENSORS = {"image_attention": ("F32", 4), "input_ids": ("I64", 1), "generated_ids": ("I64", 1)}


def text_cap(n_tokens: int) -> int:
    """Longest string a record may carry for text of `n_tokens` tokens (generous: 1 KB per token)."""
    return 4096 + 1024 * int(n_tokens)


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, tuple[str, list[int]]], tuple[int, int]]:
    """(metadata dict, {tensor name: (dtype, shape)}, (st_dev, st_ino)) from a safetensors file,
    read with bounded memory from a regular file only; UserError naming the file otherwise."""
    fd = open_regular(path, "attention record")
    try:
        st = os.fstat(fd)
        size, ident = st.st_size, (st.st_dev, st.st_ino)
        head = os.pread(fd, 8, 0)
        if len(head) < 8:
            raise UserError(f"{path}: not a safetensors attention record (file of {size} bytes)")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise UserError(f"{path}: not a readable attention record (header of {n} bytes in a file of {size} bytes; "
                            f"at most {MAX_HEADER_BYTES} allowed)")
        raw = os.pread(fd, n, 8)
    finally:
        os.close(fd)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path}: not a readable safetensors attention record ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: not a readable safetensors attention record (header is not an object)")
    meta = header.get("__metadata__") or {}
    shapes = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        if not (isinstance(v, dict) and isinstance(v.get("dtype"), str) and isinstance(v.get("shape"), list)
                and all(_is_int(x) and x >= 0 for x in v["shape"])):
            raise UserError(f"{path}: not a readable safetensors attention record (tensor {k[:40]!r} is malformed)")
        shapes[k] = (v["dtype"], list(v["shape"]))
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not a readable safetensors attention record (metadata is not an object)")
    return meta, shapes, ident


def same_regular_file(path: str | os.PathLike, ident: tuple[int, int]) -> bool:
    """Whether `path` is still the regular file `ident` (st_dev, st_ino) that was checked."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == ident


def check_tensor_shapes(shapes: dict[str, tuple[str, list[int]]], where: str) -> None:
    problems = []
    for name, (dtype, ndim) in TENSORS.items():
        if name not in shapes:
            if name != "generated_ids":
                problems.append(f"record has no '{name}' tensor")
            continue
        got_dtype, shape = shapes[name]
        if got_dtype != dtype or len(shape) != ndim:
            problems.append(f"'{name}' is {got_dtype} with {len(shape)} dims, expected {dtype} with {ndim}")
    if not problems and 0 in shapes["image_attention"][1]:
        problems.append(f"image_attention of shape {tuple(shapes['image_attention'][1])} holds no attention")
    if problems:
        raise UserError(f"{where}: invalid attention record: " + "; ".join(problems))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class _Problems(list):
    def text(self, key: str, value: Any, cap: int) -> None:
        if not isinstance(value, str):
            self.append(f"{key} must be a string, got {type(value).__name__}")
        elif len(value) > cap:
            self.append(f"{key} is {len(value)} characters long, more than the {cap} its tensors allow")

    def ints(self, key: str, value: Any, length: int | None, lo: int, hi: int, unique: bool = False) -> None:
        if not isinstance(value, list) or not all(_is_int(x) for x in value):
            self.append(f"{key} must be a list of integers, got {type(value).__name__}")
            return
        if length is not None and len(value) != length:
            self.append(f"{key} has {len(value)} entries but the tensor has {length}")
        bad = [x for x in value if not lo <= x < hi]
        if bad:
            self.append(f"{key} holds {bad[0]}, outside [{lo}, {hi})")
        if unique and len(set(value)) != len(value):
            self.append(f"{key} repeats an entry")

    def strings(self, key: str, value: Any, max_len: int) -> None:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.append(f"{key} must be a list of strings, got {type(value).__name__}")
        elif len(value) > max_len:
            self.append(f"{key} has {len(value)} entries, more than the {max_len} the tensors allow")
        elif any(len(x) > MAX_TOKEN_CHARS for x in value):
            self.append(f"{key} holds a string longer than {MAX_TOKEN_CHARS} characters")


def check_meta(raw: Any, shapes: dict[str, list[int]], where: str) -> None:
    """Types and sizes of record metadata against the tensor shapes {name: shape}; UserError listing
    every problem. Fields this version does not know are ignored (newer tools may add some)."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: record metadata must be a JSON object, got {type(raw).__name__}")
    q, n_l, n_h, v = shapes["image_attention"]
    s = shapes["input_ids"][0]
    t = shapes["generated_ids"][0] if "generated_ids" in shapes else 0
    p = _Problems()
    if raw.get("format") != FORMAT:
        p.append(f"format is {str(raw.get('format'))[:40]!r}, expected {FORMAT!r}")
    fv = raw.get("format_version")
    if not _is_int(fv):
        p.append(f"format_version must be an integer, got {fv!r:.40}")
    elif fv > FORMAT_VERSION:
        p.append(f"format_version {fv} is newer than this tool reads ({FORMAT_VERSION}); upgrade the tool")
    for key, optional in (("sample_id", False), ("model_id", False), ("model_type", False), ("image_aspect", False),
                          ("query_mode", False), ("prompt_template", True), ("dtype", True), ("tool_version", True)):
        if not optional or key in raw:
            p.text(key, raw.get(key), MAX_NAME_CHARS if key in ("sample_id", "model_id") else 256)
    for key, lim in (("num_layers", n_l), ("num_heads", n_h)):
        val = raw.get(key)
        if not _is_int(val) or not lim <= val <= MAX_MODEL_SIZE:
            p.append(f"{key} must be an integer in [{lim}, {MAX_MODEL_SIZE}], got {val!r:.40}")
    num_l = raw["num_layers"] if _is_int(raw.get("num_layers")) else MAX_MODEL_SIZE
    num_h = raw["num_heads"] if _is_int(raw.get("num_heads")) else MAX_MODEL_SIZE
    p.ints("layers", raw.get("layers"), n_l, 0, num_l, unique=True)
    p.ints("heads", raw.get("heads"), n_h, 0, num_h, unique=True)
    p.text("prompt", raw.get("prompt"), text_cap(s))
    p.text("query", raw.get("query"), text_cap(s))
    p.ints("query_positions", raw.get("query_positions"), q, 0, s + t)
    p.strings("query_tokens", raw.get("query_tokens"), q)
    if "generated_text" in raw:
        p.text("generated_text", raw["generated_text"], text_cap(t))
    if "generated_tokens" in raw:
        p.strings("generated_tokens", raw["generated_tokens"], t)
    ip = raw.get("image_path")
    if ip is not None:
        p.text("image_path", ip, MAX_NAME_CHARS)
    for key in ("interventions", "extra", "fingerprint", "vision"):
        if key in raw and not isinstance(raw[key], dict):
            p.append(f"{key} must be an object, got {type(raw[key]).__name__}")
    _check_extra(raw.get("extra"), p)
    size = _check_image_size(raw.get("image_size"), p)
    _check_layout(raw.get("layout"), size, v, s, p)
    if p:
        raise UserError(f"{where}: invalid attention record: " + "; ".join(p[:6]) + (f"; ... {len(p) - 6} more" if len(p) > 6 else ""))


def _check_extra(extra: Any, p: _Problems) -> None:
    if not isinstance(extra, dict):
        return
    bbox = extra.get("bbox")
    if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(x) for x in bbox)
                                 and bbox[2] > 0 and bbox[3] > 0):
        p.append(f"extra.bbox must be [x, y, w, h] with w, h > 0, got {bbox!r:.60}")
    for key in ("group", "answer"):
        val = extra.get(key)
        if val is not None and not (isinstance(val, str) and len(val) <= MAX_NAME_CHARS):
            p.append(f"extra.{key} must be a string of at most {MAX_NAME_CHARS} characters")
    if "row_line" in extra and not _is_int(extra["row_line"]):
        p.append("extra.row_line must be an integer")


def _check_image_size(size: Any, p: _Problems) -> tuple[int, int] | None:
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(x) and x >= 1 for x in size)):
        p.append(f"image_size must be [width, height] of positive integers, got {size!r:.60}")
        return None
    w, h = size
    if w * h > max_image_pixels():
        p.append(f"image_size {w}x{h} is above the image limit max_image_pixels={max_image_pixels()}")
        return None
    return w, h


def _check_layout(d: Any, size: tuple[int, int] | None, v: int, s: int, p: _Problems) -> None:
    if not isinstance(d, dict):
        p.append(f"layout must be an object, got {type(d).__name__}")
        return
    try:
        lay = ImageLayout.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        p.append(f"layout is malformed ({type(e).__name__}: {str(e)[:80]})")
        return
    if lay.num_tokens != v:
        p.append(f"{v} image tokens in the tensor but the layout has {lay.num_tokens}")
    if size is not None and tuple(lay.image_size) != size:
        p.append(f"layout image_size {lay.image_size} differs from image_size {list(size)}")
    if any(not 0 <= x < s for x in lay.token_positions):
        p.append(f"layout token_positions point outside the {s} prompt tokens")
    if any(not 0 <= x < max(v, 1) for x in lay.separator_index):
        p.append("layout separator_index points outside the image tokens")
    if lay.default_grid and lay.default_grid not in [g.name for g in lay.grids]:
        p.append(f"layout default_grid {lay.default_grid[:40]!r} names no grid")
    m = max(size) if size else max(lay.image_size)
    w, h = (size or lay.image_size)
    spans = [max((g.box[2] - g.box[0]) / max(w, 1), (g.box[3] - g.box[1]) / max(h, 1))
             for g in lay.grids if len(g.box) == 4 and all(math.isfinite(c) for c in g.box)]
    if spans and max(spans) < MIN_GRID_SPAN:  # every family's grid spans a whole side (crop: >= crop/resize)
        p.append(f"image_size {w}x{h} is far larger than its grids cover (widest box spans {max(spans):.3g} of a side)")
    for g in lay.grids:
        if not isinstance(g.name, str) or len(g.name) > 256:
            p.append(f"grid names must be short strings, got {type(g.name).__name__}")
            continue
        if len(g.box) != 4:
            p.append(f"grid {g.name[:40]!r} box must be [x0, y0, x1, y1], got {len(g.box)} numbers")
            continue
        x0, y0, x1, y1 = g.box
        if g.rows < 1 or g.cols < 1 or g.rows * g.cols > 64 * max(v, 1):
            p.append(f"grid {g.name[:40]!r} is {g.rows}x{g.cols} cells for {v} image tokens")
        elif any(i < -1 for i in g.token_index):
            p.append(f"grid {g.name[:40]!r} holds a token index below -1")
        if not (all(math.isfinite(c) for c in g.box) and x1 > x0 and y1 > y0
                and -2 * m <= x0 and x1 <= 3 * m and -2 * m <= y0 and y1 <= 3 * m):
            p.append(f"grid {g.name[:40]!r} box {g.box} does not fit a {lay.image_size[0]}x{lay.image_size[1]} image")


def check_values(att: np.ndarray, where: str) -> None:
    """Attention weights: finite, >= 0, each (query, layer, head) row summing to <= 1, not all zero."""
    problems = []
    finite = np.isfinite(att)
    if not finite.all():
        problems.append(f"{int(np.isnan(att).sum())} NaN and {int(np.isinf(att).sum())} infinite value(s)")
    a = np.where(finite, att, 0.0)
    if (a < 0).any():
        problems.append(f"{int((a < 0).sum())} negative value(s) (min {float(a.min()):.3g})")
    if a.size:
        sums = a.sum(axis=-1, dtype=np.float64)
        if sums.max() > 1.0 + ROW_SUM_TOLERANCE:
            problems.append(f"a row sums to {float(sums.max()):.4g} > 1 (attention over image tokens is part of a softmax row)")
        if not a.any():
            problems.append("every attention weight is 0")
    if problems:
        raise UserError(f"{where}: invalid attention values: " + "; ".join(problems) + "; re-collect this record")
