"""Free text on the command line (the README's exact lines, query_file=) and the entry points' --help."""

from __future__ import annotations

from types import SimpleNamespace

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_cfg
from inprocess import run_line, run_script

from lab.sessions.chat import HELP
from lab.records.record import AttentionRecord
from utils.cli import read_query_file, resolve_query
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TEXT = "what's the shape of the blue one, près du bord?"  # toy_0000 has a blue square


def _readme_block(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    part = text.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", part, re.S)
    assert block, f"no bash block after {heading!r}"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """A folder that looks like the repository root (links), with `python` on PATH, so README lines run
    exactly as written without writing into the repository."""
    d = tmp_path_factory.mktemp("readme_cwd")
    for name in ("cli_llava.py", "localization_heads_finder.py", "visualize_attention.py", "config", "examples",
                 "lab", "llava", "utils"):
        (d / name).symlink_to(ROOT / name)
    bin_dir = d / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # keeps the venv (a symlink would not)
    (bin_dir / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1",
               MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    return d, env


README_QUERIES = ["what shape is the blue one, près du bord?", TEXT, None, TEXT]


def test_the_readme_quoting_lines_reach_the_config_as_written(farm):
    """Each README line, exactly as written plus Hydra's `--cfg job` (print the composed config, run nothing)."""
    import yaml

    cwd, _ = farm
    lines = _readme_block("### Free text on the command line")
    assert len(lines) == len(README_QUERIES)
    for line, want in zip(lines, README_QUERIES):
        r = run_line(line if want is None else line + " --cfg job", cwd)
        assert r.returncode == 0, f"{line}\n{r.stderr[-2000:]}"
        if want is not None:
            cfg = yaml.safe_load(r.stdout)
            assert cfg["query"] == want or (cfg["query"] is None and read_query_file(cwd / cfg["query_file"]) == want)


@pytest.mark.slow
def test_the_readme_quoting_lines_run_as_written(farm):
    """The same lines, run: the model answers and its record holds the text exactly."""
    cwd, _ = farm
    record = cwd / "runs" / "text" / "attention" / "toy_0000.safetensors"  # output_dir=runs/text, named after the image
    for i, (line, want) in enumerate(zip(_readme_block("### Free text on the command line"), README_QUERIES)):
        record.unlink(missing_ok=True)
        r = run_line(line, cwd)  # bash reads the words, this process runs python (tests/inprocess.py)
        assert r.returncode == 0, f"README line {i + 1} failed: {line}\n{r.stderr[-2000:]}"
        if want is None:
            continue
        rec = AttentionRecord.load(record)
        assert rec.meta.query == want and want in rec.meta.prompt and rec.meta.generated_text


@pytest.mark.parametrize("arg, needle", [("query=près du bord", "LexerNoViableAltException"),
                                         ("query=what's left", "LexerNoViableAltException"),
                                         ("query=left, right", "Ambiguous value")])
def test_unquoted_text_fails_as_the_readme_says(farm, arg, needle):
    """A real process: Hydra's own report of a parse error (under a tracer, e.g. coverage.py, Hydra
    raises instead of reporting, so this cannot run in the test's process)."""
    cwd, env = farm
    r = subprocess.run([sys.executable, "cli_llava.py", "image_file=examples/toy/images/toy_0000.png", arg],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and needle in r.stderr


def test_query_file_is_read_literally(tmp_path):
    p = tmp_path / "q.txt"
    tricky = "say \"hi\" and 'bye', 50% of $HOME ${x} \\n é 字\nsecond line"
    p.write_bytes(("\ufeff  " + tricky + "\n\n").encode("utf-8"))
    assert read_query_file(p) == tricky
    assert resolve_query(SimpleNamespace(**{"query": None, "query_file": str(p)})) == tricky
    assert resolve_query(SimpleNamespace(**{"query": "plain", "query_file": None})) == "plain"
    with pytest.raises(UserError, match="not both"):
        resolve_query(SimpleNamespace(**{"query": "x", "query_file": str(p)}))
    (tmp_path / "latin1.txt").write_bytes("près".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.txt is not UTF-8 text \(byte 0xe8 at offset 2\)"):
        read_query_file(tmp_path / "latin1.txt")
    (tmp_path / "blank.txt").write_text(" \n\t\n")
    with pytest.raises(UserError, match="blank.txt is empty"):
        read_query_file(tmp_path / "blank.txt")
    with pytest.raises(UserError, match="query_file not found: .*nope.txt"):
        read_query_file(tmp_path / "nope.txt")


def test_collect_and_pipeline_take_query_file(tmp_path, toy_vlm):
    from lab.stages import StageContext, run_stage

    q = tmp_path / "q.txt"
    q.write_text(TEXT + "\n", encoding="utf-8")
    img = ROOT / "examples" / "toy" / "images" / "toy_0000.png"
    for stage in ("collect", "pipeline"):
        cfg = make_cfg(f"stage={stage}", f"image_file={img}", f"query_file={q}", f"output_dir={tmp_path / stage}",
                       "max_new_tokens=2")
        res = run_stage(cfg, StageContext(loader=lambda: toy_vlm, output_dir=tmp_path / stage))
        assert AttentionRecord.load(res["record"]).meta.query == TEXT
    cfg = make_cfg("stage=collect", f"image_file={img}", f"output_dir={tmp_path}")
    with pytest.raises(UserError, match=r"stage=collect needs query=\.\.\. \(or query_file="):
        run_stage(cfg, StageContext(loader=lambda: toy_vlm, output_dir=tmp_path))


def _help(script: str) -> str:
    r = run_script(ROOT / script, "--help", cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_help_of_every_entry_point_says_what_it_does():
    finder = _help("localization_heads_finder.py")
    for word in ("Stages:", "query_file=", "report.map_budget_mb", "index.html", "Free text"):
        assert word in finder
    vis = _help("visualize_attention.py")
    for word in ("Modes:", "single", "batch", "attention_file", "layer=", "heads_file", "index.html",
                 "Keys:", "Examples (", "mode: single"):
        assert word in vis, word
    cli = _help("cli_llava.py")
    for word in ("cli_mode=true", "query_file", "Chat commands", "Keys:", "model: ", "max_new_tokens: 64"):
        assert word in cli, word
    for line in HELP.splitlines()[1:]:  # every chat command, described as the chat's own /help does
        cmd = line.split()[0]
        assert re.search(rf"^\s+{re.escape(cmd)}\s", cli, re.M), cmd
    for text in (finder, cli):
        assert "'query=\"what shape is the blue one, près du bord?\"'" in text
        assert "\"query=\\\"what's the shape of the blue one, près du bord?\\\"\"" in text
    assert "powered by Hydra" not in vis + cli  # not Hydra's generic page any more


def test_printed_overrides_read_back_exactly():
    """utils.console.override_word: bash, then Hydra's override parser, give the value back (issue 29 item 7)."""
    import subprocess

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from utils.console import override_word, printable

    parser = OverridesParser.create()
    for v in ["runs/x/a_b~a76d.safetensors", "runs/my sample~1.safetensors", "it's", 'say "hi"', "a\\", "001",
              "plain/path.safetensors", "$HOME", "a,b"]:
        w = override_word("k", v)
        out = subprocess.run(["bash", "-c", "printf '%s\\0' " + w], capture_output=True).stdout.decode()
        (word,) = out.split("\0")[:-1]
        assert parser.parse_override(word).value() == v, w
    assert printable("g\x1b]0;pwned\x07") == "g\\x1b]0;pwned\\x07"


def test_heads_deduped():
    from lab.sessions.chat import parse_heads

    assert parse_heads("1:1,1:1,2:0", 4, 4) == [(1, 1), (2, 0)]
