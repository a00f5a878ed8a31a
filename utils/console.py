"""Untrusted text (a row's id, group, image path, query, a model's answer) made safe for a terminal
and a log file: control characters shown escaped, never sent raw.

An ESC sequence in a row's `group` would otherwise retitle or clear the terminal it is printed on,
a carriage return would overwrite the line, a bidi override would reorder it. `printable` is the
one function; `EscapeControlFilter` applies it to every log record of a handler.
"""

from __future__ import annotations

import logging
import re
import shlex
from typing import Any


def _escaped(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def printable(text: Any, keep: str = "") -> str:
    """`str(text)` with every character that is not printable (C0/C1 controls such as ESC, CR, BEL,
    DEL; bidi overrides; line and paragraph separators) written as its Python escape (`\\x1b`).

    Args:
        text: anything; its `str()` is shown.
        keep: characters to pass through unchanged (e.g. "\\n" for a message of several lines).
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() or ch in keep else _escaped(ch) for ch in s)


class EscapeControlFilter(logging.Filter):
    """A handler filter: the record's message with control characters escaped (new lines kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = printable(message, keep="\n\t")
        if safe != message:
            record.msg, record.args = safe, None
        return True


def escape_log_handlers() -> None:
    """Put `EscapeControlFilter` on every handler of the loggers configured so far (once each)."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for handler in {id(h): h for lg in loggers for h in lg.handlers}.values():
        if not any(isinstance(f, EscapeControlFilter) for f in handler.filters):
            handler.addFilter(EscapeControlFilter())


_PLAIN = re.compile(r"[A-Za-z0-9_./+@%:-]+")  # safe unquoted for bash and for Hydra's override grammar
_TYPED = re.compile(r"[-+]?[0-9._eE+-]*|(?i:true|false|null|none|inf|nan|[-+]inf)")  # Hydra would read a number / bool


def hydra_quoted(value: Any) -> str:
    """`value` as a quoted string of Hydra's override grammar: double quotes (single ones when it
    holds a double quote), the quote escaped and the backslashes before it doubled, `${` escaped
    so OmegaConf does not read an interpolation."""
    s = str(value).replace("${", "\\${")
    q = '"' if '"' not in s else "'"
    s = re.sub(rf"(\\*){q}", lambda m: m.group(1) * 2 + "\\" + q, s)
    s = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, s)
    return f"{q}{s}{q}"


def override_word(key: str, value: Any) -> str:
    """`key=value` as one shell word that bash and then Hydra read back as exactly `value` (a
    string): plain when it is plain, else Hydra-quoted inside shell quotes."""
    s = str(value)
    if _PLAIN.fullmatch(s) and not _TYPED.fullmatch(s):
        return f"{key}={s}"
    word = f"{key}={hydra_quoted(s)}"
    return f"'{word}'" if "'" not in word else shlex.quote(word)


def command_line(script: str, *words: str, **overrides: Any) -> str:
    """`python <script> <words> key=value ...`, every override quoted by `override_word`, so the
    printed line runs as printed (pasted into bash)."""
    return " ".join(["python", script, *words, *(override_word(k, v) for k, v in overrides.items())])
