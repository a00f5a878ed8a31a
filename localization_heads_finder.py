"""Find and study the localization heads of a vision-language model.

    python localization_heads_finder.py stage=collect|analyze|select|visualize|evaluate|ablate|pipeline|batch ...

Configuration: config/localization_config.yaml (typed by utils/config.py); `--help` lists options.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from utils.cli import run_entry
from utils.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="localization_config")
def main(cfg: DictConfig) -> None:
    from lab.stages import run_stage

    run_entry(cfg, run_stage)


if __name__ == "__main__":
    main()
