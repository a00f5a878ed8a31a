"""The house's layers hold: import-linter's contracts (pyproject.toml) pass, a planted violation of
each kind fails them, and no module of lab/, llava/, utils/ grows past ~600 lines."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600

needs_linter = pytest.mark.skipif(importlib.util.find_spec("importlinter") is None,
                                  reason="import-linter not installed (pip install -r requirements-dev.txt)")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def _copy_tree(dst: Path) -> Path:
    for name in ("lab", "llava", "utils"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "checkpoint"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


@needs_linter
def test_contracts_kept():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


@needs_linter
@pytest.mark.parametrize("module, line, contract", [
    ("lab/records/record.py", "import llava.model", "lab never imports the model layer"),
    ("lab/analysis/grounding.py", "import transformers", "lab never imports the model layer"),
    ("utils/io.py", "import lab.records.record", "utils imports neither"),
    ("llava/families/layouts.py", "import lab.records.record", "Rooms"),
    ("lab/criteria/image_sum.py", "import lab.records.record", "Inside lab"),
    ("lab/capture/station.py", "import omegaconf", "Settings reach lab typed"),
    ("lab/criteria/entropy.py", "import torch", "Pure floors"),
    ("lab/criteria/image_sum.py", "import lab.analysis.per_sample", "No import cycles"),
])
def test_a_planted_violation_breaks_its_contract(tmp_path, module, line, contract):
    tree = _copy_tree(tmp_path)
    p = tree / module
    p.write_text(p.read_text() + f"\n\ndef _planted():\n    {line}\n")  # a function-level import counts too
    res = _lint(tree)
    assert res.returncode != 0, res.stdout[-2000:]
    broken = [ln for ln in res.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(contract in ln for ln in broken), broken


def test_no_module_over_the_size_limit():
    big = {str(p.relative_to(ROOT)): n for room in ("lab", "llava", "utils") for p in (ROOT / room).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_every_path_the_architecture_names_exists():
    """docs/architecture.md is the map of the house: each repository path it names (`lab/...`,
    `tests/...`, ...) is there."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rooms = "llava|lab|utils|tests|benchmarks|config|examples|docs|\\.ci"
    named = set(re.findall(rf"(?<![\w./])((?:{rooms})/[\w./-]*\w/?)", text))
    assert len(named) > 50, sorted(named)  # the pattern still finds the map's paths
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_the_model_lab_drives_has_every_member_of_the_protocol(tiny_vlm):
    """utils/contracts/vlm.py is the one written form of what lab calls on a model: llava's VLM has it all."""
    from utils.contracts.vlm import VisionLanguageModel

    assert isinstance(tiny_vlm, VisionLanguageModel)
    members = [m for m in vars(VisionLanguageModel) if not m.startswith("_")]
    missing = [m for m in members + list(VisionLanguageModel.__annotations__) if not hasattr(tiny_vlm, m)]
    assert not missing and len(members) >= 8, (missing, members)


def test_every_dotted_name_the_architecture_gives_exists():
    """Each `package.module[.attribute]` docs/architecture.md gives in backticks is importable / there."""
    import importlib
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    names = set(re.findall(r"`((?:lab|llava|utils)(?:\.\w+)+)", text))
    assert len(names) > 10, sorted(names)
    missing = []
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr, None)
            if obj is None:
                missing.append(name)
            break
        else:
            missing.append(name)
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


MAX_PARAMS, MAX_CODE_LINES = 12, 60  # issue 30.4: short functions, a settings object instead of many knobs


def _function_sizes(path: Path):
    """(name, line, parameters, code lines) of every function in a file; code lines leave out the
    docstring, blank lines and comment lines."""
    import ast

    text = path.read_text()
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = node.args
        n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
        n -= bool(a.args and a.args[0].arg in ("self", "cls"))
        body = node.body
        doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)
        start = (body[0].end_lineno + 1) if doc else body[0].lineno
        code = [ln for ln in lines[start - 1: node.end_lineno] if ln.strip() and not ln.strip().startswith("#")]
        yield node.name, node.lineno, n, len(code)


def test_no_function_takes_too_many_parameters_or_lines():
    too_big = [f"{p.relative_to(ROOT)}:{line} {name}: {n} parameters, {code} code lines"
               for pkg in ("lab", "llava", "utils") for p in sorted((ROOT / pkg).rglob("*.py"))
               for name, line, n, code in _function_sizes(p) if n > MAX_PARAMS or code > MAX_CODE_LINES]
    assert not too_big, f"over {MAX_PARAMS} parameters or {MAX_CODE_LINES} code lines:\n" + "\n".join(too_big)


def test_no_package_and_its_own_module_import_each_other():
    """A registry that imports its plug-ins which import the registry (issue 30.5): registration one way."""
    import grimp

    graph = grimp.build_graph("lab", "llava", "utils")
    cycles = []
    for module in sorted(graph.modules):
        parent = module.rpartition(".")[0]
        if parent and graph.direct_import_exists(importer=parent, imported=module) and \
                graph.direct_import_exists(importer=module, imported=parent):
            cycles.append(f"{parent} <-> {module}")
    assert not cycles, cycles
