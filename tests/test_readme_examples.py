"""Every command of README.md and of each entry point's `--help` examples, as written and in order.

The commands come from the documents themselves, so the two cannot drift:

* README.md: every ```bash block, line by line, in page order. A block right below the comment
  `<!-- readme-test: skip (why) -->` is not run (the 7B model, data that is not bundled, the test suite
  itself); the reason is required. Install steps are dropped by one rule (`INSTALL`: `python3 -m
  venv`, `. .venv/bin/activate`, `pip install`, `apt-get`), the rest of a `&&` chain runs.
  ```python blocks run as scripts after the shell commands (the default run checks their imports).
* `--help`: the indented `python ...` lines under the `Examples` heading of each entry point.

The default run checks them without running a model (seconds): every script and bundled file named
exists, every key composes against the schema and passes the settings check, every `runs/...` file a
command reads was written by an earlier command's `output_dir=`, head indices fit the toy (4 x 4), and
nothing is written outside the git-ignored `runs/` and `outputs/`. `-m slow` runs them all end to end
in a scratch folder that looks like a fresh clone (links to the tracked files), and checks the files
they promise.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from inprocess import run_line

ROOT = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->")
INSTALL = re.compile(r"^(python3? -m venv\b|\. \S*activate$|source \S*activate$|pip3? install\b|(sudo )?apt(-get)? )")
ENTRIES = {"localization_heads_finder.py": "localization_config", "visualize_attention.py": "visualization_config",
           "cli_llava.py": "cli_config"}
FILE_KEYS = ("image_file", "data_file", "attention_file", "attention_dir", "heads_file", "query_file")
BUILDERS = ("python -m llava.planted ",)  # commands that build a model folder (--out DIR) instead of running an entry
TOY_LAYERS = TOY_HEADS = 4  # llava/toy/checkpoint: 4 layers x 4 heads


@dataclass(frozen=True)
class Command:
    line: str  # what runs (install steps dropped)
    where: str  # README.md:<line> or <script> --help


def _strip_install(line: str) -> str:
    return " && ".join(p for p in (s.strip() for s in line.split(" && ")) if p and not INSTALL.match(p))


def readme_blocks(text: str | None = None) -> list[tuple[str, int, list[str], str | None]]:
    """(language, first line number, lines, skip reason or None) for every fenced block of the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8") if text is None else text
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if not m:
            i += 1
            continue
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(before)
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        out.append((m.group(1), i + 2, lines[i + 1:j], skip.group("why").strip() if skip else None))
        i = j + 1
    return out


def readme_commands() -> list[Command]:
    cmds = []
    for lang, start, body, skip in readme_blocks():
        if lang != "bash" or skip:
            continue
        for n, raw in enumerate(body):
            line = _strip_install(raw.strip())
            if line:
                cmds.append(Command(line, f"README.md:{start + n}"))
    return cmds


def _env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    out = {}
    for script in ENTRIES:
        r = run_line(f"python {script} --help", ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        out[script] = r.stdout
    return out


def help_commands(script: str, text: str) -> list[Command]:
    """The `python ...` lines indented under the `Examples` heading of a --help page."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Examples"))
    cmds = []
    for ln in lines[start + 1:]:
        if not ln.startswith(" "):
            break
        if ln.strip().startswith("python "):
            cmds.append(Command(ln.strip(), f"{script} --help"))
    assert cmds, f"{script} --help has no examples"
    return cmds


# ---- the checks without a model ------------------------------------------------------------------
def _overrides(cmd: Command) -> tuple[str, list[str]]:
    words = shlex.split(cmd.line.split(" #", 1)[0])
    assert words[0] == "python" and words[1] in ENTRIES, f"{cmd.where}: not an entry point: {cmd.line}"
    return words[1], [w for w in words[2:] if not w.startswith("-")]


def check_chain(cmds: list[Command]) -> None:
    """Each command composes and passes the settings check; what it reads exists or was written before."""
    from helpers import make_cfg

    from utils.settings.reading import check_config

    written: list[str] = []  # folders (output_dir=) and files (echo ... > f) made by earlier commands
    for cmd in cmds:
        for part in cmd.line.split(" && "):
            if part.startswith(("mkdir ", "echo ")):
                target = part.split(">", 1)[1].strip() if ">" in part else None
                if target:
                    assert target.startswith("runs/"), f"{cmd.where}: writes {target} outside runs/"
                    written.append(target)
                continue
            if part.startswith(BUILDERS):  # python -m llava.planted --out DIR: a folder later commands read
                words = shlex.split(part)
                out = words[words.index("--out") + 1]
                assert out.startswith("runs/"), f"{cmd.where}: --out {out} is not under the git-ignored runs/"
                written.append(out)
                continue
            script, overrides = _overrides(Command(part, cmd.where))
            assert (ROOT / script).is_file()
            cfg = make_cfg(*overrides, config_name=ENTRIES[script])
            check_config(cfg)  # unknown keys, value ranges (what run_entry checks first)
            kv = dict(o.split("=", 1) for o in overrides)
            for key in FILE_KEYS:
                value = kv.get(key)
                if not value:
                    continue
                if value.startswith("runs/"):
                    assert any(value == w or value.startswith(w.rstrip("/") + "/") for w in written), \
                        f"{cmd.where}: {key}={value} is written by no earlier command"
                else:
                    assert (ROOT / value).exists(), f"{cmd.where}: {key}={value} does not exist"
            if cfg.model.name == "planted":  # config/model/planted.yaml reads runs/planted/checkpoint by default
                path = kv.get("model.name_or_path", "runs/planted/checkpoint")
                assert any(path.startswith(w.rstrip("/") + "/") for w in written), \
                    f"{cmd.where}: model=planted reads {path}, built by no earlier command"
            if cfg.model.name == "toy":
                for key, bound in (("layer", TOY_LAYERS), ("head", TOY_HEADS)):
                    v = cfg.get(key)
                    assert v is None or 0 <= v < bound, f"{cmd.where}: {key}={v} is not a toy index (0..{bound - 1})"
                tokens = cfg.get("tokens")
                for key, bound in (("layers", TOY_LAYERS), ("heads", TOY_HEADS)):
                    for v in (tokens.get(key) if tokens is not None else None) or []:
                        assert 0 <= v < bound, f"{cmd.where}: tokens.{key} holds {v}, not a toy index (0..{bound - 1})"
            out = kv.get("output_dir")
            if out is not None:
                assert out.startswith("runs/"), f"{cmd.where}: output_dir={out} is not under the git-ignored runs/"
                written.append(out)


def test_readme_blocks_parse():
    blocks = readme_blocks()
    assert any(lang == "bash" and not skip for lang, _, _, skip in blocks)
    for lang, start, body, skip in blocks:
        assert skip is None or len(skip) > 5, f"README.md:{start}: a skipped block says why"
    text = "x\n<!-- readme-test: skip (needs a GPU) -->\n```bash\npython a.py\n```\n```bash\npython b.py\n```\n"
    assert [(b[2], b[3]) for b in readme_blocks(text)] == [(["python a.py"], "needs a GPU"), (["python b.py"], None)]
    assert _strip_install("python3 -m venv .venv && . .venv/bin/activate && pip install -r r.txt && python x.py") == "python x.py"
    assert _strip_install("pip install -r requirements-dev.txt") == ""


def test_readme_commands_compose_and_chain():
    cmds = readme_commands()
    assert len(cmds) >= 15
    check_chain(cmds)


def test_readme_python_blocks_compile_and_import():
    """The ```python blocks: valid Python, and every `from X import a, b` names a module that has a, b
    (what `from lab import tokens` got wrong); they run end to end under -m slow."""
    import ast
    import importlib

    for lang, start, body, skip in readme_blocks():
        if lang != "python" or skip:
            continue
        tree = ast.parse("\n".join(body), filename=f"README.md:{start}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(mod, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                        f"README.md:{start + node.lineno - 1}: {node.module} has no {alias.name}"


def test_help_examples_compose_and_chain(helps):
    for script, text in helps.items():
        check_chain(help_commands(script, text))


def test_chain_check_catches_what_issue_24_found():
    """The README lines that failed as written (issue 24) fail the check."""
    bad = [Command("python visualize_attention.py mode=tokens attention_file=runs/chat/attention/toy_0000.safetensors", "a"),
           Command("python visualize_attention.py mode=single attention_file=examples/toy/images/toy_0000.png layer=3 head=5", "b"),
           Command("echo hi > question.txt", "c")]
    for cmd in bad:
        with pytest.raises(AssertionError):
            check_chain([cmd])


# ---- end to end (-m slow) ---------------------------------------------------------------------------
def _farm(tmp: Path) -> tuple[Path, dict]:
    """A scratch folder that looks like a fresh clone (links to the tracked top-level entries) and
    `python` on PATH (this interpreter)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in sorted({t.split("/", 1)[0] for t in tracked}):
        (tmp / name).symlink_to(ROOT / name)
    bin_dir = tmp / ".bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = dict(_env(), PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return tmp, env


def _run_all(cmds: list[Command], cwd: Path, done: set[str] | None = None) -> None:
    """Run each command in this process (tests/inprocess.py), in order; a line already run in this
    folder (`done`) is not run twice."""
    from inprocess import run_line

    for cmd in cmds:
        if done is not None and cmd.line in done:
            continue
        r = run_line(cmd.line, cwd)
        assert r.returncode == 0, f"{cmd.where} failed (exit {r.returncode}): {cmd.line}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, f"{cmd.where}: {r.stderr[-3000:]}"
        if done is not None:
            done.add(cmd.line)


def _new_top_level(cwd: Path) -> list[str]:
    """Entries the commands made in the clone's root that git would show as untracked."""
    tracked = {t.split("/", 1)[0] for t in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                                          check=True).stdout.split()}
    new = [p.name for p in cwd.iterdir() if p.name not in tracked and p.name != ".bin"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *(n + "/" if (cwd / n).is_dir() else n for n in new)],
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
    return [n for n in new if n + "/" not in ignored and n not in ignored]


PROMISED = ("pipeline/attention/toy_0000.safetensors", "toy/heads.json", "toy/index.html", "toy/metrics.json",
            "toy/ablation.json", "toy_release/metrics.json", "text/attention/toy_0000.safetensors",
            "chat/attention/toy_0000.safetensors", "views/figures/toy_0000_L1H0.png", "views/index.html",
            "views_small/index.html", "tokens/toy_0000_tokens.safetensors", "tokens/figures/toy_0000_tokens.png")


@pytest.mark.slow
def test_readme_and_help_commands_run_in_order(tmp_path, monkeypatch):
    """The README's commands in order, then each entry point's --help examples in order, in one
    fresh-clone folder and one process (the help chains' lines that the README already ran are not
    run again; each help chain composes and chains on its own in test_help_examples_compose_and_chain),
    then the README's python blocks."""
    for key, value in _env().items():
        if key != "PYTHONPATH":
            monkeypatch.setenv(key, value)
    cwd, env = _farm(tmp_path)
    done: set[str] = set()
    _run_all(readme_commands(), cwd, done)
    runs = cwd / "runs"
    for f in PROMISED:
        assert (runs / f).is_file(), f"runs/{f} missing after the README's commands"
    assert list(cwd.glob("outputs/localization_heads/*/index.html")), "the quick start wrote no index.html"
    assert _new_top_level(cwd) == []
    helps = {}
    for script in ENTRIES:
        r = run_line(f"python {script} --help", cwd)
        assert r.returncode == 0, r.stderr[-2000:]
        helps[script] = r.stdout
    for script in ENTRIES:
        _run_all(help_commands(script, helps[script]), cwd, done)
        assert _new_top_level(cwd) == [], f"{script} --help examples left files outside runs/"
    for n, (lang, start, body, skip) in enumerate(readme_blocks()):
        if lang == "python" and not skip:
            script = cwd / f"readme_block_{n}.py"
            script.write_text("\n".join(body) + "\n", encoding="utf-8")
            r = subprocess.run(["python", script.name], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"README.md:{start} (python block) failed\n{r.stderr[-3000:]}"
