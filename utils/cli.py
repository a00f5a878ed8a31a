"""Shared entry-point plumbing: output folder, model loader wiring, user errors -> one line + exit 2."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from utils.errors import UserError

log = logging.getLogger("lhf")


def output_dir(cfg) -> Path:
    """`output_dir=` if given, else Hydra's run directory (outputs/<entry>/<date_time>)."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir).expanduser().resolve()
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_entry(cfg, dispatch: Callable[[Any, Any], dict]) -> dict | None:
    """Run a stage with a lazily loaded model; a UserError prints one line and exits with status 2."""
    from lab.stages import StageContext

    try:
        out = output_dir(cfg)

        def loader():
            from llava.model import load_from_config

            log.info("loading model %s", cfg.model.name_or_path)
            model_cfg = cfg.model
            local_rank = os.environ.get("LOCAL_RANK")
            if local_rank is not None and model_cfg.device == "auto" and not model_cfg.device_map:
                import torch  # one GPU per rank under torchrun / accelerate launch

                if torch.cuda.is_available():
                    model_cfg = OmegaConf.merge(model_cfg, {"device": f"cuda:{local_rank}"})
            return load_from_config(model_cfg)

        ctx = StageContext(loader=loader, output_dir=out)
        return dispatch(cfg, ctx)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(UserError.exit_code)
