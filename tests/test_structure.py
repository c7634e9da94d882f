"""The plan of the house (docs/architecture.md): the import contracts of pyproject.toml hold, no
function hides an import of the project's own code, and functions stay readable."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

MODULES = sorted((ROOT / "pipeline").rglob("*.py"))


def functions():
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(ROOT), node


def test_each_component_imports_only_the_core_and_itself_and_nothing_imports_in_a_circle():
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_no_function_imports_the_project_s_own_code_but_the_cli_s_commands():
    """The CLI imports a command's component when the command runs, so that `alerts` does not
    start pyspark; everywhere else an import inside a function could hide a cycle from the linter's
    reader of the code and from its reader."""
    hidden = []
    for path, node in functions():
        if path.as_posix() == "pipeline/cli.py":
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("pipeline")):
                hidden.append(f"{path}:{inner.lineno} in {node.name}")
            elif isinstance(inner, ast.Import) and any(a.name.startswith("pipeline") for a in inner.names):
                hidden.append(f"{path}:{inner.lineno} in {node.name}")
    assert not hidden, hidden


def test_every_function_fits_a_screen_and_takes_at_most_seven_parameters():
    long, wide = [], []
    for path, node in functions():
        if node.end_lineno - node.lineno >= 45:
            long.append(f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
        args = node.args
        count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
        if count > 7:
            wide.append(f"{path}:{node.lineno} {node.name} ({count} parameters)")
    assert not long, long
    assert not wide, wide
