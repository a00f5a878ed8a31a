"""Find and study the localization heads of a vision-language model.

    python localization_heads_finder.py stage=collect|analyze|select|visualize|evaluate|ablate|pipeline|batch ...

Configuration: config/localization_config.yaml (typed by utils/settings/declarations.py); `--help` lists options.
The stages are lab/stages/ (one module each); this file only wires the model loader to them.
"""

from __future__ import annotations

from utils.interrupt import quiet_sigint, run_quietly_interruptible

if __name__ == "__main__":
    quiet_sigint()  # Ctrl-C during the imports below: one line, exit 130

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from utils.cli import output_dir, run_entry  # noqa: E402
from utils.settings.declarations import FinderConfig, register_configs  # noqa: E402
from utils.preflight import check_output_dir_arg  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="localization_config")
def main(cfg: DictConfig) -> None:
    from lab.stages import StageContext, run_stage
    from llava.loader import model_loader

    from llava.sam import sam_loader

    run_entry(lambda s: run_stage(s, StageContext(model_loader(s.model), output_dir(s),
                                                  sam_loader=sam_loader(s.grounding.sam))), cfg)


if __name__ == "__main__":
    check_output_dir_arg(schema=FinderConfig)  # keys and output_dir=, before Hydra starts (utils/preflight.py)
    run_quietly_interruptible(main)  # Ctrl-C: one line, exit 130 (utils/interrupt.py)
