"""The README and docs/ say what the code does: every command the README lists runs, every page
is linked, and the code keeps the shape the development guide promises."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from helpers import ROOT

README = (ROOT / "README.md").read_text()
CLI_ROWS = re.findall(r"^\| `energy-monitor ([^`]+)` \|", README, flags=re.M)
MAKE_TARGETS = sorted({t for row in re.findall(r"^\| (`make [^|]+)\|", README, flags=re.M)
                       for t in re.findall(r"`make ([\w-]+)`", row)})


def subcommand(row: str) -> list[str]:
    words = []
    for word in row.split():
        if not re.fullmatch(r"[a-z]+", word):
            break
        words.append(word)
    return words


def test_the_readme_lists_commands_and_targets():
    assert len(CLI_ROWS) >= 10 and len(MAKE_TARGETS) >= 10, (CLI_ROWS, MAKE_TARGETS)


@pytest.mark.parametrize("row", CLI_ROWS, ids=lambda row: " ".join(subcommand(row)))
def test_each_readme_command_runs_and_knows_its_options(row):
    words = subcommand(row)
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *words, "--help"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for option in re.findall(r"--[a-z][a-z-]*", row):
        assert option in result.stdout, f"`energy-monitor {' '.join(words)}` has no {option}"


@pytest.mark.parametrize("target", MAKE_TARGETS)
def test_each_readme_make_target_exists(target):
    result = subprocess.run(["make", "-n", target], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_every_docs_page_is_linked_from_the_readme_and_every_record_from_their_index():
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    assert pages and [p for p in pages if f"]({p})" not in README] == []
    assert "](docs/decisions/README.md)" in README or "](docs/decisions/)" in README
    index = (ROOT / "docs" / "decisions" / "README.md").read_text()
    records = sorted(p.name for p in (ROOT / "docs" / "decisions").glob("0*.md"))
    assert records and [r for r in records if f"]({r})" not in index] == []


def test_nothing_cites_a_contract_outside_the_repository():
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "pipeline").rglob("*.py")]:
        assert "../shared" not in path.read_text(), path


def test_no_function_in_the_pipeline_is_longer_than_45_lines():
    long = []
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 45:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
