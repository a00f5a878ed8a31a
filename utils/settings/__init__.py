"""The settings, declared once and read once.

choices.py (every mode as a `Literal`) -> declarations.py (one frozen dataclass per settings group,
each field with its check) -> checks.py (the value checks fields carry) -> hydra_twins.py (the mutable
twins Hydra composes against) -> reading.py (compose-time rules, `settings_from_config` at the edge,
`from_plain` for run_config.json).
"""
