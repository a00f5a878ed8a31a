"""Views of saved records: `mode=single attention_file=... [layer=.. head=..]` or `mode=batch`.

Configuration: config/visualization_config.yaml (typed by utils/config.py); `--help` lists options.
Views read records only (lab/views.py); the model is loaded by no view.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from utils.cli import output_dir, run_entry
from utils.config import register_configs
from utils.preflight import check_output_dir_arg

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="visualization_config")
def main(cfg: DictConfig) -> None:
    from lab.stages import StageContext
    from lab.views import run_view
    from llava.loader import model_loader

    run_entry(lambda: run_view(cfg, StageContext(model_loader(cfg.model), output_dir(cfg))), cfg)


if __name__ == "__main__":
    check_output_dir_arg()  # before Hydra sets up its log file there (utils/preflight.py)
    main()
