"""Settings checked when the config is composed, before any stage runs or any model loads.

* Keys: every key of the composed config must be a field of its schema (utils/settings/declarations.py). Hydra
  rejects a misspelled `key=value` in struct mode with the advice to add `+key=value`, and accepts
  that; the entry points check plain overrides before Hydra composes (`check_override_keys`, from
  utils/preflight.py: "unknown key topk (did you mean top_k?)" at the first try), and we compare the
  composed config against the dataclasses, so `+top_kk=3` is an error too.
* Values: every field's check, derived from its declaration (`rules`: the field's `setting(check=)`
  or its `Literal` choice); each problem names the key and the allowed values, all in one line.
* Then the config is built, once, into the frozen settings object (`settings_from_config`).
* Side settings: `max_image_pixels` is handed to the image loader.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from typing import Any, Callable, Literal, Union

from omegaconf import DictConfig, OmegaConf

from utils.settings.choices import describe, is_choice, options
from utils.errors import UserError
from utils.settings.hydra_twins import declared_class, field_types


def _choice_check(choice: Any, optional: bool) -> Callable[[Any], str | None]:
    return lambda v: None if (optional and v is None) or is_choice(v, choice) else describe(choice)


def _subset_check(choice: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, (list, tuple)) and all(is_choice(x, choice) for x in v) and len(set(v)) == len(v):
            return None
        return f"must be a list of distinct values from {', '.join(map(str, options(choice)))}"
    return check


def _derived_check(f: dataclasses.Field, t: Any) -> Callable[[Any], str | None] | None:
    """A field's check: its own (`setting(check=...)`), else one derived from its `Literal` choice."""
    if f.metadata.get("check"):
        return f.metadata["check"]
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Literal:
        return _choice_check(t, optional=False)
    if origin is Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and typing.get_origin(rest[0]) is Literal:
            return _choice_check(rest[0], optional=True)
    if origin in (list, tuple) and args and typing.get_origin(args[0]) is Literal:
        return _subset_check(args[0])
    return None


@functools.lru_cache(maxsize=None)
def _own_rules(cls: type) -> tuple[tuple[str, Callable[[Any], str | None]], ...]:
    hints = field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not dataclasses.is_dataclass(hints[f.name]) and (check := _derived_check(f, hints[f.name])) is not None:
            out.append((f.name, check))
    return tuple(out)


def value_problems(cls: type, values: Any, prefix: str = "") -> list[str]:
    """`key=value why` for every field of `cls` (not its groups) in `values` that fails its declared check."""
    out = []
    for name, check in _own_rules(cls):
        if name in values:
            why = check(values[name])
            if why:
                out.append(f"{prefix}{name}={_show(values[name])} {why}")
    return out


def own_problems(obj: Any, prefix: str = "") -> list[str]:
    """`value_problems` of a settings object's own fields."""
    return value_problems(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, prefix)


def frozen_value(v: Any) -> Any:
    """Lists (nested too) as tuples: what a frozen settings object holds."""
    return tuple(frozen_value(x) for x in v) if isinstance(v, (list, tuple)) else v


def rules(schema: type, prefix: str = "") -> dict[str, Callable[[Any], str | None]]:
    """Dotted key -> check, for every field of a settings class (and its nested groups) that has one."""
    cls = declared_class(schema)
    out: dict[str, Callable[[Any], str | None]] = {}
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out.update(rules(t, f"{prefix}{f.name}."))
        elif (check := _derived_check(f, t)) is not None:
            out[prefix + f.name] = check
    return out


def _unknown(prefix: str, key: str, fields: Any) -> str:
    """`prefix.key`, with the closest declared field as a hint (`topk (did you mean top_k?)`)."""
    close = difflib.get_close_matches(key, [str(f) for f in fields], n=1)
    return f"{prefix}{key}" + (f" (did you mean {prefix}{close[0]}?)" if close else "")


def _unknown_keys(node: Any, schema: Any, prefix: str = "") -> list[str]:
    """Keys of a composed config that its dataclass schema does not declare (recursively)."""
    if not (isinstance(node, DictConfig) and dataclasses.is_dataclass(schema)):
        return []
    fields = {f.name: f for f in dataclasses.fields(schema)}
    out = []
    for key in node.keys():
        key = str(key)
        if key not in fields:
            out.append(_unknown(prefix, key, fields))
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            out.extend(_unknown_keys(child, OmegaConf.get_type(child), f"{prefix}{key}."))
    return out


def _settings_class(t: Any) -> Any:
    """The settings class of a field type (`X` or `Optional[X]`), else None."""
    if typing.get_origin(t) is Union:
        rest = [a for a in typing.get_args(t) if a is not type(None)]
        t = rest[0] if len(rest) == 1 else None
    return declared_class(t) if dataclasses.is_dataclass(t) else None


def unknown_override_keys(overrides: list[str], schema: type, groups: tuple[str, ...] = ()) -> list[str]:
    """Plain `key=value` command-line overrides whose key `schema` does not declare, each with the
    closest declared key as a hint. Hydra refuses them with its own advice ("To append to your config
    use +topk=5"), which sends a typo on to a second error; this is the project's message at once.

    Args:
        overrides: command-line words (flags such as `-m` are ignored).
        schema: the entry point's settings class (utils/settings/declarations.py), e.g. `FinderConfig`.
        groups: config group names (`model`, `method`: `method=paper` picks a file, it is no field).
    `+key` / `++key` / `~key`, `hydra.*`, group paths (`hydra/launcher=...`) and words Hydra cannot
    parse are left to Hydra and to `check_config`.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    words = [w for w in overrides if not w.startswith("-") and ("=" in w or w.startswith("~"))]  # not `--cfg job`'s job
    try:
        parsed = OverridesParser.create().parse_overrides(words)
    except Exception:  # noqa: BLE001 - malformed: Hydra reports it in its own words
        return []
    out = []
    for o in parsed:
        key = o.key_or_group
        if o.is_add() or o.is_force_add() or o.is_delete() or "/" in key or "@" in key or key in groups \
                or key.split(".")[0] == "hydra":
            continue
        cls, prefix = declared_class(schema), ""
        for part in key.split("."):
            hints = field_types(cls)
            if part not in hints:
                out.append(_unknown(prefix, part, hints))
                break
            cls, prefix = _settings_class(hints[part]), f"{prefix}{part}."
            if cls is None:  # a value (or a mapping / Any): Hydra checks the rest
                break
    return out


def override_value_problems(overrides: list[str], schema: type) -> list[str]:
    """`key=value why` for plain command-line overrides whose value fails the key's declared check
    (`top_k=2.5`, `grounding.sigma=1e9`), before Hydra composes: Hydra's own type error is four lines,
    exit 1, after it has set up `output_dir`. Sweeps, interpolations and text values (Hydra converts
    `'3'`) are left to Hydra and `check_config`, except text on an integer key that is no integer.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    words = [w for w in overrides if not w.startswith("-") and "=" in w]
    try:
        parsed = OverridesParser.create().parse_overrides(words)
    except Exception:  # noqa: BLE001 - malformed: Hydra reports it in its own words
        return []
    checks, out = rules(schema), []
    for o in parsed:
        key = o.key_or_group
        if o.is_add() or o.is_force_add() or o.is_delete() or o.is_sweep_override() or key not in checks:
            continue
        v = o.value()
        if isinstance(v, str):
            if "${" in v or not _is_int_key(schema, key):
                continue
            try:
                v = int(v)
            except ValueError:
                pass
        why = checks[key](v)
        if why:
            out.append(f"{key}={_show(v)} {why}")
    return out


def _is_int_key(schema: type, key: str) -> bool:
    """Whether the dotted key's field is an int (or Optional[int])."""
    cls: Any = declared_class(schema)
    *groups, name = key.split(".")
    for part in groups:
        cls = _settings_class(field_types(cls)[part])
    t = field_types(cls)[name]
    return t is int or (typing.get_origin(t) is Union and int in typing.get_args(t))


def check_override_keys(overrides: list[str], schema: type, groups: tuple[str, ...] = ()) -> None:
    """`unknown_override_keys` as one UserError (the wording of `check_config`'s unknown keys), then
    `override_value_problems` (every bad value named in one line)."""
    bad = unknown_override_keys(overrides, schema, groups)
    if bad:
        name = declared_class(schema).__name__
        raise UserError("; ".join(f"unknown key {k}: not in the {name} schema (utils/settings/declarations.py)" for k in bad))
    problems = override_value_problems(overrides, schema)
    if problems:
        raise UserError("; ".join(problems))


def _value(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        node = node[part]
    return True, OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def check_config(cfg: DictConfig) -> None:
    """Unknown keys and out-of-range values, all named in one UserError; then apply side settings."""
    schema = OmegaConf.get_type(cfg)
    problems = [f"unknown key {k}: not in the {getattr(schema, '__name__', 'config')} schema (utils/settings/declarations.py); "
                "remove the + override" for k in _unknown_keys(cfg, schema)]
    for key, check in (rules(schema) if dataclasses.is_dataclass(schema) else {}).items():
        present, v = _value(cfg, key)
        if present:
            why = check(v)
            if why:
                problems.append(f"{key}={_show(v)} {why}")
    present, end = _value(cfg, "end_index")
    _, start = _value(cfg, "start_index")
    if present and end is not None and isinstance(start, int) and isinstance(end, int) and end < start:
        problems.append(f"end_index={end} is below start_index={start}")
    if problems:
        raise UserError("; ".join(problems))
    present, cap = _value(cfg, "max_image_pixels")
    if present:
        from utils.images import set_max_image_pixels

        set_max_image_pixels(int(cap))


def _show(v: Any) -> str:
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def from_plain(cls: type, data: Any, *, strict: bool = True, where: str = "") -> Any:
    """A frozen settings object from plain containers (a resolved config or a run_config.json entry),
    its values checked with the declared rules (one UserError naming every bad key).

    Args:
        cls: the settings class (utils/settings/declarations.py), e.g. `FinderConfig` or `SelectionConfig`.
        data: a mapping of its fields; absent fields take the declared defaults.
        strict: an unknown key is an error (False: ignored, e.g. keys a later version added).
        where: what the data is, for the message (e.g. "run_config.json stage=select: selection.").
    """
    data = dict(data or {})
    hints = field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(map(str, data)) - names)
    if extra and strict:
        raise UserError(f"{where}unknown key {extra[0]}: not in the {cls.__name__} settings (utils/settings/declarations.py)")
    kwargs, problems = {}, []
    for name in sorted(names & set(data)):
        t, v = hints[name], data[name]
        if dataclasses.is_dataclass(t):
            if v is not None and not isinstance(v, dict):
                problems.append(f"{where}{name}={_show(v)} must be a group of settings")
                continue
            kwargs[name] = from_plain(t, v, strict=strict, where=f"{where}{name}.")
        else:
            kwargs[name] = frozen_value(v)
    problems += value_problems(cls, kwargs, where)
    if problems:
        raise UserError("; ".join(problems))
    return cls(**kwargs)


def settings_from_config(cfg: Any) -> Any:
    """The one reading of a composed config: checked (`check_config`), then built into the frozen
    settings object of its schema (e.g. `FinderConfig`), which is what every stage, view and the chat
    get. An object that is already built is returned as it is."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return cfg
    check_config(cfg)
    cls = declared_class(OmegaConf.get_type(cfg))
    return from_plain(cls, OmegaConf.to_container(cfg, resolve=True))
