"""Value checks of the settings: each returns None for a good value, else why it is not (the
compose-time check, utils/settings/reading.py, prefixes the key and the value). The schemas in
utils/settings/declarations.py attach them to their fields (`setting(..., check=...)`); choices come from the
`Literal` declarations of utils/settings/choices.py instead."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

Check = Callable[[Any], "str | None"]


def int_at_least(lo: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            return f"must be an integer >= {lo}"
        return None
    return check


def int_in(lo: int, hi: int) -> Callable[[Any], str | None]:
    """An integer in [lo, hi] (the upper bound keeps a typo such as 1e9 draws from running for hours)."""
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return f"must be an integer in [{lo}, {hi}]"
        return None
    return check


SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit unsigned


def optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else check(v)


def one_of(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}"


def number(lo: float, hi: float = math.inf, lo_open: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
            (v > lo if lo_open else v >= lo) and v <= hi
        if ok:
            return None
        left = "(" if lo_open else "["
        right = "]" if math.isfinite(hi) else ")"
        return f"must be a finite number in {left}{lo}, {hi if math.isfinite(hi) else 'inf'}{right}"
    return check


def int_list(lo: int = 0, nonempty: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= lo for x in v):
            return f"must be a list of integers >= {lo}"
        if nonempty and not v:
            return "must name at least one index (leave it unset for all)"
        if len(set(v)) != len(v):
            return "must not repeat an entry"
        return None
    return check


def pairs(v: Any) -> str | None:
    if not isinstance(v, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in p)
            for p in v):
        return "must be a list of [layer, head] pairs of integers >= 0"
    return None


def box(v: Any) -> str | None:
    if isinstance(v, (list, tuple)) and len(v) == 4 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v) and v[2] > 0 and v[3] > 0:
        return None
    return "must be [x, y, w, h] in pixels with w, h > 0"


def shard(v: Any) -> str | None:
    if v is None:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", str(v))
    if not m or not int(m.group(2)) >= 1 or not int(m.group(1)) < int(m.group(2)):
        return "must look like i/n with 0 <= i < n, e.g. shard=0/4"
    return None


def device(v: Any) -> str | None:
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(v)) else "must be auto, cpu, mps, cuda or cuda:N"


def positions(v: Any) -> str | None:
    if v is None or (isinstance(v, (list, tuple)) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
        return None
    return "must be a non-empty list of integers"
