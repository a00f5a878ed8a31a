"""What identifies a loaded model in the records it makes (`VLM.fingerprint`).

The weights part is a hash over every state-dict tensor's name, dtype and shape plus up to
`SAMPLE` evenly spaced elements of its values, taken from the model as loaded (after any dtype cast
or conversion transformers applied, whichever revision or folder it came from). Fine-tuning or
swapping a checkpoint changes nearly every element, so the sample changes; the cost is one small
gather per tensor (well under a second for a 7B model on a GPU), paid once per load. A change
confined to elements between the samples (one edited row of an embedding) would go unnoticed.
The processor part hashes the image processor's settings, the tokenizer's class and size and the
chat template; the prompt settings (template, system prompt, image aspect) are kept as they are.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

SAMPLE = 1024


def weights_digest(model: torch.nn.Module, sample: int = SAMPLE) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.device.type == "meta" or t.numel() == 0:
            continue
        flat = t.detach().reshape(-1)
        n = flat.numel()
        if n > sample:
            idx = torch.arange(sample, dtype=torch.int64) * (n - 1) // (sample - 1)
            flat = flat[idx.to(flat.device)]
        flat = flat.to(torch.float32) if flat.is_floating_point() else flat.to(torch.int64)
        h.update(flat.cpu().numpy().tobytes())
    return h.hexdigest()


def processor_digest(processor: Any) -> str:
    ip = getattr(processor, "image_processor", None)
    tok = getattr(processor, "tokenizer", None)
    parts = {
        "image_processor": ip.to_dict() if hasattr(ip, "to_dict") else repr(type(ip)),
        "tokenizer": [type(tok).__name__, len(tok) if tok is not None else 0],
        "chat_template": getattr(processor, "chat_template", None),
    }
    text = json.dumps(parts, sort_keys=True, default=lambda o: type(o).__name__)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def model_fingerprint(vlm: Any) -> dict[str, Any]:
    """The model part of a record's fingerprint (see lab/records/provenance.py for the rest)."""
    return {
        "model_type": vlm.model_type,
        "weights": weights_digest(vlm.model),
        "dtype": str(getattr(vlm.model, "dtype", "")).replace("torch.", ""),
        "processor": processor_digest(vlm.processor),
        "prompt_template": vlm.prompt_template,
        "system_prompt": vlm.system_prompt,
        "image_aspect": vlm.image_aspect,
    }
