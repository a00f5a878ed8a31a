"""A toy world with ground truth (scenes of coloured shapes) and a tiny LLaVA trained in it.

See docs/toy.md. The trained checkpoint ships in `llava/toy/checkpoint/`.
"""

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"
