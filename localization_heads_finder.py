"""Find and study the localization heads of a vision-language model.

    python localization_heads_finder.py stage=collect|analyze|select|visualize|evaluate|ablate|pipeline|batch ...

Configuration: config/localization_config.yaml (typed by utils/config.py); `--help` lists options.
The stages are lab/stages/ (one module each); this file only wires the model loader to them.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from utils.cli import output_dir, run_entry
from utils.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="localization_config")
def main(cfg: DictConfig) -> None:
    from lab.stages import StageContext, run_stage
    from llava.loader import model_loader

    from llava.sam import sam_loader

    run_entry(lambda: run_stage(cfg, StageContext(model_loader(cfg.model), output_dir(cfg),
                                                  sam_loader=sam_loader(cfg.grounding.sam))), cfg)


if __name__ == "__main__":
    main()
