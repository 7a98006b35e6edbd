"""The lint gate under plain pytest (issue 12): the import layering (import-linter's contracts in setup.cfg), ruff
(pyproject.toml), and no import-order tricks in the packages.

`make test` runs `make lint` first; these tests run the same checks with the venv's own binaries, so that
`pytest` alone cannot pass on a tree that breaks the layering.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "rewards", "agents", "experiments")
BIN = Path(sys.executable).parent  # the venv's scripts, installed by `make install` from the dev extra


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    exe = BIN / name
    if not exe.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable} (install the dev extra: make install)")
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def test_import_contracts_are_kept() -> None:
    """experiments > agents > rewards > envs; in agents, evolution > decision | infra > protocol; no cycles."""
    proc = run_tool("lint-imports", "--no-logo", "--no-cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def test_ruff_passes() -> None:
    proc = run_tool("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# `isort: skip`, `isort:skip_file`, `isort: off`, `noqa: I001` or a file-wide `ruff: noqa`: an import order held
# in place by hand is an order something depends on, i.e. a cycle or a side effect
TRICK = re.compile(r"isort\s*:\s*(skip|off|dont-add-imports)|noqa\s*:[\w\s,]*\bI001\b|ruff\s*:\s*noqa", re.IGNORECASE)


@pytest.mark.parametrize("path", modules(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_order_tricks(path: Path) -> None:
    hits = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
            for i, line in enumerate(path.read_text().splitlines(), 1) if TRICK.search(line)]
    assert not hits, "import order pinned by hand:\n" + "\n".join(hits)


def test_the_trick_pattern_matches_what_it_should() -> None:
    for line in ("import a  # isort: skip", "# isort:skip_file", "# isort: off", "import b  # noqa: E402, I001",
                 "# ruff: noqa"):
        assert TRICK.search(line), line
    for line in ("import a", "import b  # noqa: F401  (registers the ids)", "x = 1  # noqa: E731"):
        assert not TRICK.search(line), line


def first_party_imports_in_functions(path: Path) -> list[str]:
    found = []
    for fn in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["."]  # a relative import is first-party
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                      if n == "." or n.split(".")[0] in PACKAGES]
    return found


def test_no_function_level_imports_of_the_project_below_experiments() -> None:
    """A function-level import of the project's own code only postpones an import: with the layering and no cycles,
    its only use would be to dodge one. (Lazy imports of optional heavy libraries, e.g. transformers, stay.)"""
    found = [hit for path in modules("envs", "rewards", "agents") for hit in first_party_imports_in_functions(path)]
    assert not found, "function-level imports of envs/rewards/agents modules:\n" + "\n".join(found)
