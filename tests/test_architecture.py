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
