"""What made a record: its fingerprint, and how two fingerprints differ.

A record's metadata carries `fingerprint`:

    version          FINGERPRINT_VERSION
    model            the VLM's own `fingerprint` (model type, a hash over samples of every weight
                     tensor, dtype, processor settings hash, prompt template, system prompt, image aspect)
    strategy         the capture / intervention settings (lab.stations.Strategy, all fields)
    max_new_tokens   the generation length asked for
    query            blake2b of the row's query text
    image            "file:v1:<blake2b of the image file's bytes>" (the loader version is part of
                     it), or "pixels:v1:<blake2b of the RGB pixels>" for an image given in memory

`RUN_KEYS` are the same for every record of one run; a folder whose records differ there mixes
runs (`check_compatible` refuses it). `SAMPLE_KEYS` change per row; a resumed row whose query or
image changed is collected again. Records written before fingerprints existed have none: resume
collects them again, and select / evaluate accept a folder only if all or none of its records
carry one.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

from utils.errors import UserError
from utils.files import file_digest
from utils.contracts.vlm import VisionLanguageModel

FINGERPRINT_VERSION = 1
IMAGE_LOADER_VERSION = "v1"  # bump when utils/images.py changes what pixels a file gives
RUN_KEYS = ("version", "model", "strategy", "max_new_tokens")
SAMPLE_KEYS = ("query", "image")


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def model_part(vlm: VisionLanguageModel) -> dict[str, Any]:
    """The VLM's `fingerprint` (llava.model.VLM), or what a duck-typed model without one offers."""
    fp = getattr(vlm, "fingerprint", None)
    if isinstance(fp, dict):
        return dict(fp)
    return {"model_type": getattr(vlm, "model_type", None), "weights": None,
            "prompt_template": getattr(vlm, "prompt_template", None), "image_aspect": getattr(vlm, "image_aspect", None)}


def strategy_part(strategy: Any) -> dict[str, Any]:
    d = asdict(strategy)
    d.pop("capture", None)  # capture off records nothing to fingerprint
    d.pop("positions", None)  # Strategy folds the settings' `positions` into query_positions
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(d.items())}


def run_fingerprint(model: dict[str, Any] | None, strategy: Any, max_new_tokens: int) -> dict[str, Any]:
    """The part shared by every record of one run (`model` None: not known yet, before the model loads)."""
    out: dict[str, Any] = {"version": FINGERPRINT_VERSION, "strategy": strategy_part(strategy),
                           "max_new_tokens": int(max_new_tokens)}
    if model is not None:
        out["model"] = model
    return out


def image_id(image: Any = None, image_path: str | None = None) -> str:
    """The image's identity: its file's bytes when `image_path` is a readable regular file, else its pixels."""
    if image_path:
        try:
            return f"file:{IMAGE_LOADER_VERSION}:{file_digest(image_path, 'image')}"
        except UserError:
            pass
    if image is None:
        return "unknown"
    rgb = image.convert("RGB")
    return f"pixels:{IMAGE_LOADER_VERSION}:{_hash(repr(rgb.size).encode() + rgb.tobytes())}"


def sample_fingerprint(query: str, image: str) -> dict[str, Any]:
    return {"query": _hash(str(query).encode("utf-8", "surrogatepass")), "image": image}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


_FIRST = ["version", "model.weights", "model.model_type", "model.dtype"]  # named first when several fields differ


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def difference(old: dict[str, Any] | None, new: dict[str, Any], keys: tuple[str, ...],
               labels: tuple[str, str] = ("there", "now")) -> str | None:
    """None when `old` and `new` agree on `keys`, else the first differing field, e.g.
    "strategy.maskout: [[1, 0]] there, [] now" (`old` is the record's, `new` this run's)."""
    if not old:
        return "no fingerprint (written before records carried one)"
    a = _flat({k: old.get(k) for k in keys})
    b = _flat({k: new.get(k) for k in keys})
    for key in sorted(set(a) | set(b), key=lambda k: (k not in _FIRST, _FIRST.index(k) if k in _FIRST else 0, k)):
        if a.get(key) != b.get(key):
            return f"{key}: {_show(a.get(key))} {labels[0]}, {_show(b.get(key))} {labels[1]}"
    return None


def check_compatible_fingerprints(records: list[Any]) -> None:
    """Records analysed together: all carry a fingerprint or none does, and their run parts agree.
    UserError naming two files and the differing field."""
    with_fp = [r for r in records if r.meta.fingerprint]
    if not with_fp or len(with_fp) == len(records):
        ref = with_fp[0] if with_fp else None
        for r in with_fp[1:]:
            diff = difference(ref.meta.fingerprint, r.meta.fingerprint, RUN_KEYS, ("in the first", "in the second"))
            if diff:
                raise UserError(f"{ref.path} and {r.path} were made by different runs ({diff}); "
                                "analyse records of one model and one capture setting together (use separate folders)")
        return
    without = next(r for r in records if not r.meta.fingerprint)
    raise UserError(f"{without.path} has no fingerprint (made by an older version of the tool) but {with_fp[0].path} has one; "
                    "collect the old records again (stage=batch with overwrite=true) or keep them in a separate folder")
