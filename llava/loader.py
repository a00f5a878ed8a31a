"""The model loader the entry points hand to the stages: importing this module loads nothing heavy,
so stages that only read records (analyze, select, views) never import torch's model code or
transformers."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable


def model_loader(cfg) -> Callable[[], Any]:
    """A callable that loads the model of the `model` settings (`utils.settings.declarations.ModelConfig`) when a stage first needs it.
    Under torchrun / accelerate launch with `device=auto`, each rank takes its own GPU."""

    def load() -> Any:
        import torch

        from llava.model import load_from_config

        device = cfg.device
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is not None and device == "auto" and not cfg.device_map and torch.cuda.is_available():
            device = f"cuda:{local_rank}"
        logging.getLogger("lhf").info("loading model %s", cfg.name_or_path)
        return load_from_config(cfg, device=device)

    return load
