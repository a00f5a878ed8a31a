"""Checks an entry point makes on its command line before Hydra starts (Hydra's log handler writes
into `output_dir` as soon as it sets up, and fails there with a traceback).

`check_output_dir_arg(argv, schema)`:
* a plain `key=value` whose key the entry's schema lacks -> the project's "unknown key ... (did you
  mean ...?)" line, exit 2 (Hydra would advise `+key=value` first);
* an `output_dir=` that cannot be a writable folder (an existing regular file, a file on the way to
  it, a read-only location, new or existing) -> one line, exit 2;
* a config group picked with a file it lacks (`model=llava15-7b`, any folder of config/) -> "unknown
  model llava15-7b ... (did you mean model=llava15_7b?)" and its choices, exit 2 (Hydra would answer
  "Could not find 'model/llava15-7b'" with its search path and exit 1);
* a multirun (`-m`) whose jobs differ but would share one fixed `output_dir=` (each job would
  replace the last one's results) is refused before any job runs: put the swept keys into the
  folder's name (`output_dir='runs/k${top_k}'`, resolved per job) or drop `output_dir=` (Hydra's
  `multirun/<entry>/<time>/<n>_...` folders, one per job).
"""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from utils.folder_undo import remember_output_dir

from utils.errors import UserError

_KEYS = ("output_dir=", "+output_dir=", "++output_dir=")
# swept keys whose jobs may share one folder: the folder itself, and shards (made to share it, utils/runlock.py)
SHARED_OK = {"output_dir", "shard"}


def _raw_output_dir(argv: list[str]) -> str | None:
    value = None
    for a in argv:
        for k in _KEYS:
            if a.startswith(k):
                value = a[len(k):]
    return value


def output_dir_arg(argv: list[str]) -> str | None:
    """The value of the last `output_dir=` override on the command line (None: not given, or one
    Hydra must resolve first: an interpolation, or a multirun's sweep of folders)."""
    value = _raw_output_dir(argv)
    if value is None or "${" in value or (_is_multirun(argv) and "," in value):
        return None
    v = value.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        v = v[1:-1]
    return v or None


def check_writable_folder(path: str | os.PathLike) -> Path:
    """Make sure `path` is (or can become) a folder this process can write to: creates it (as the
    run would) and writes then removes a probe file. Raises UserError with one line otherwise."""
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise UserError(f"output_dir={p} is an existing file, not a folder; give a folder (new or existing)")
    for parent in p.parents:  # a regular file on the way cannot hold a folder
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"output_dir={p}: {parent} is a file, not a folder; give another output_dir=")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"output_dir={p} cannot be written ({e.strerror or e}, errno {e.errno}); "
                        "give a writable folder") from None
    return p


def _is_multirun(argv: list[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in argv)


def multirun_problem(argv: list[str]) -> str | None:
    """Why a multirun's jobs would overwrite each other in one `output_dir=` (None: they do not).

    Jobs share a folder when some key other than `output_dir` or `shard` is swept (Hydra's sweep syntax: `a,b`,
    `range(...)`, `choice(...)`, `glob(...)`) and `output_dir=` does not name it (`${key}`, resolved
    per job)."""
    value = _raw_output_dir(argv)
    if not _is_multirun(argv) or value is None:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except Exception:  # noqa: BLE001 - a malformed override: Hydra reports it in its own words
        return None
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    others = [k for k in swept if k.lstrip("+") not in SHARED_OK and "${" + k.lstrip("+") + "}" not in value]
    if not others:
        return None
    key = others[0].lstrip("+")
    return (f"-m sweeps {', '.join(others)} but jobs that differ in it would share output_dir={value}, each replacing the "
            f"last one's results; name the folder per job (output_dir='{value}/{key}_${{{key}}}') "
            "or drop output_dir= (then each job gets its own multirun/... folder)")


def _config_root() -> Path:
    from utils.settings.declarations import REPO_ROOT

    return REPO_ROOT / "config"


def config_groups() -> tuple[str, ...]:
    """The config group names (folders of config/, nested ones as `a/b`: `model`, `method`), which
    `key=value` may pick."""
    root = _config_root()
    return tuple(sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()))


def group_choices(group: str) -> list[str]:
    """The options of a config group: the names of the yaml files in `config/<group>/`."""
    return sorted(p.stem for p in (_config_root() / group).glob("*.yaml"))


def _picked(o: Any) -> list[str]:
    """The option names an override picks (`model=a`, a sweep `model=a,b`); [] when Hydra must say."""
    try:
        if o.is_sweep_override():
            return [str(v) for v in o.sweep_string_iterator()]
        v = o.value()
    except Exception:  # noqa: BLE001 - a range/glob sweep or an interpolation: Hydra's to resolve
        return []
    return [] if v is None or not isinstance(v, (str, int, float)) else [str(v)]


def unknown_group_choices(argv: list[str]) -> list[str]:
    """Command-line picks of a config group (`model=...`, `method=...`, any folder of config/) that name
    no file of it, each with the closest option and the list of options. Hydra would answer
    "Could not find 'model/llava15-7b'" with its search path and exit 1.

    Args:
        argv: command-line words (flags are ignored; `~group` deletions and Hydra's own groups are
            left to Hydra).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    words = [w for w in argv if not w.startswith("-") and "=" in w]
    try:
        parsed = OverridesParser.create().parse_overrides(words)
    except Exception:  # noqa: BLE001 - malformed: Hydra reports it in its own words
        return []
    groups, out = set(config_groups()), []
    for o in parsed:
        group = o.key_or_group
        if o.is_delete() or group not in groups:
            continue
        options = group_choices(group)
        for name in _picked(o):
            if name not in options:
                close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
                hint = f" (did you mean {group}={close[0]}?)" if close else ""
                out.append(f"unknown {group} {name}: config/{group}/ has no {name}.yaml{hint}; "
                           f"{group}= takes {', '.join(options)}")
    return out


def check_output_dir_arg(argv: list[str] | None = None, schema: type | None = None) -> None:
    """Entry points call this before `main()`: an unusable `output_dir=` -> `error: ...`, exit 2.
    `--help`, `--cfg`, `--info` and shell completion never create anything.

    Args:
        argv: the command line (default: sys.argv[1:]).
        schema: the entry point's settings class (utils/settings/declarations.py): a plain `key=value` whose key it
            lacks is refused here, in the project's words ("unknown key topk (did you mean top_k?)"),
            before Hydra answers with its advice to add `+topk=...` (utils.settings.reading.check_override_keys).
    """
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "--hydra-help") or a.startswith(("--shell-completion", "-sc")) for a in argv):
        return
    try:
        if schema is not None:
            from utils.settings.reading import check_override_keys

            check_override_keys(argv, schema, config_groups())
        bad_groups = unknown_group_choices(argv)
        if bad_groups:
            raise UserError("; ".join(bad_groups))
        if any(a in ("--info", "-i") or a.startswith(("--cfg", "-c")) for a in argv):
            return
        problem = multirun_problem(argv)
        if problem:
            raise UserError(problem)
        value = output_dir_arg(argv)
        remember_output_dir(None if value is None or _is_multirun(argv) else value)
        if value is not None:
            check_writable_folder(value)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(UserError.exit_code)
