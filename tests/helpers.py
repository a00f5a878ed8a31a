"""Helpers shared by test files (conftest holds the fixtures)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from utils.settings.declarations import register_configs

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def make_cfg(*overrides: str, config_name: str = "localization_config"):
    """Compose an entry point's config in process, as Hydra would from the command line."""
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))
