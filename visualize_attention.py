"""Views of saved records: `mode=single attention_file=... [layer=.. head=..]` or `mode=batch`.

Configuration: config/visualization_config.yaml (typed by utils/settings/declarations.py); `--help` lists options.
Views read records only (lab/sessions/views.py); the model is loaded by no view.
"""

from __future__ import annotations

from utils.interrupt import quiet_sigint, run_quietly_interruptible

if __name__ == "__main__":
    quiet_sigint()  # Ctrl-C during the imports below: one line, exit 130

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from utils.cli import output_dir, run_entry  # noqa: E402
from utils.settings.declarations import VisualizeConfig, register_configs  # noqa: E402
from utils.preflight import check_output_dir_arg  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="visualization_config")
def main(cfg: DictConfig) -> None:
    from lab.stages import StageContext
    from lab.sessions.views import run_view
    from llava.loader import model_loader

    run_entry(lambda s: run_view(s, StageContext(model_loader(s.model), output_dir(s))), cfg)


if __name__ == "__main__":
    check_output_dir_arg(schema=VisualizeConfig)  # keys and output_dir=, before Hydra starts (utils/preflight.py)
    run_quietly_interruptible(main)  # Ctrl-C: one line, exit 130 (utils/interrupt.py)
