"""Views of saved attention records: `mode=single attention_file=... [layer=.. head=..]` or `mode=batch`.

Configuration: config/visualization_config.yaml (typed by utils/config.py); `--help` lists options.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from utils.cli import run_entry
from utils.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="visualization_config")
def main(cfg: DictConfig) -> None:
    from lab.views import run_view

    run_entry(cfg, run_view)


if __name__ == "__main__":
    main()
