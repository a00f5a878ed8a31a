"""Ask a vision-language model about an image and see where its heads look.

    python cli_llava.py query="what shape is the yellow one?" image_file=examples/toy/images/toy_0000.png output_dir=runs/chat
    python cli_llava.py cli_mode=true [image_file=photo.png] [heads_file=runs/toy/heads.json]

One query: the answer is streamed, the attention record is saved to
`<output_dir>/attention/<id>.safetensors` and an overlay of the heads (from `heads_file=`, else
the record's own top heads by spatial entropy) to `<output_dir>/figures/<id>_heads.png`.
Chat (`cli_mode=true`) reads stdin lines: plain text is a user turn (history kept), and
`/image PATH`, `/save`, `/heads L:H,L:H`, `/reset`, `/help`, `exit` are commands (lab/sessions/chat.py).
Records carry every generated token's attention and, when the model supports it (`vision=`), the
vision tower's token->patch matrices: `visualize_attention.py mode=tokens` draws them per token.
Configuration: config/cli_config.yaml (typed by utils/settings/declarations.py, ChatConfig).
"""

from __future__ import annotations

from utils.interrupt import quiet_sigint, run_quietly_interruptible

if __name__ == "__main__":
    quiet_sigint()  # Ctrl-C during the imports below: one line, exit 130

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from utils.cli import output_dir, run_entry  # noqa: E402
from utils.settings.declarations import ChatConfig, register_configs  # noqa: E402
from utils.preflight import check_output_dir_arg  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="cli_config")
def main(cfg: DictConfig) -> None:
    from lab.sessions.chat import run_cli
    from lab.stages import StageContext
    from llava.loader import model_loader

    run_entry(lambda s: run_cli(s, StageContext(model_loader(s.model), output_dir(s))), cfg)


if __name__ == "__main__":
    check_output_dir_arg(schema=ChatConfig)  # keys and output_dir=, before Hydra starts (utils/preflight.py)
    run_quietly_interruptible(main)  # Ctrl-C: one line, exit 130 (utils/interrupt.py)
