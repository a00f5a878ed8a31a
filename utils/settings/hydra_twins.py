"""Hydra's view of the settings: a mutable twin of each frozen settings dataclass.

OmegaConf merges command-line overrides into a structured config, which a frozen dataclass refuses,
and it knows no `Literal`. `hydra_schema(cls)` makes, once per class, a dataclass with the same
fields and defaults, `Literal[...]` read as the type of its values (str or int) and nested settings
classes as their twins. The declaration stays the only place a field is written.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, List, Literal, Optional, Tuple, Union

_TWIN_OF = "__settings_class__"  # on a twin: the frozen class it was made from


def declared_class(schema: Any) -> Any:
    """The frozen settings class a Hydra schema twin was made from (itself when it is not a twin)."""
    return getattr(schema, _TWIN_OF, schema)


def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's field annotations, resolved (`from __future__ import annotations` strings)."""
    return typing.get_type_hints(cls)


def _hydra_type(t: Any) -> Any:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Literal:
        return type(args[0])
    if origin is Union:
        rest = [a for a in args if a is not type(None)]
        return Optional[_hydra_type(rest[0])] if len(rest) == 1 else Any
    if origin in (list, List, tuple, Tuple):  # frozen settings hold tuples; Hydra composes lists
        return List[_hydra_type(args[0])] if args else List[Any]
    if dataclasses.is_dataclass(t):
        return hydra_schema(t)
    return t


def _as_list(v: Any) -> Any:
    return [_as_list(x) for x in v] if isinstance(v, tuple) else v


@functools.lru_cache(maxsize=None)
def hydra_schema(cls: type) -> type:
    """The mutable twin of a frozen settings dataclass, for Hydra's ConfigStore."""
    hints = field_types(cls)
    fields = []
    for f in dataclasses.fields(cls):
        t = _hydra_type(hints[f.name])
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            made = f.default_factory()  # type: ignore[misc]
            factory = hydra_schema(type(made)) if dataclasses.is_dataclass(made) else f.default_factory
            spec = dataclasses.field(default_factory=factory)  # type: ignore[arg-type]
        elif isinstance(f.default, tuple):
            spec = dataclasses.field(default_factory=functools.partial(_as_list, f.default))
        else:
            spec = dataclasses.field(default=f.default)
        fields.append((f.name, t, spec))
    twin = dataclasses.make_dataclass(cls.__name__, fields)
    twin.__doc__ = cls.__doc__
    setattr(twin, _TWIN_OF, cls)
    return twin
