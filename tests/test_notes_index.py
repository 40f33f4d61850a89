"""Keeps docs/notes.md (the concept index and the bug museum) true.

For every row of the two tables:
  * every `file.py:symbol` pointer names a file that exists and a top-level def/class/assignment in it
    (or `Class.member`), found by parsing the file, so a rename breaks this test instead of the notes;
  * every `tests/file.py::test_name` exists, and all of them pass when run (one pytest subprocess);
  * every `python -m minibert.explain NAME` names a real demo, and every demo has a row;
  * every concept row has a one-line Chinese explanation ("中文：") and a "Try this:" exercise;
  * every question of the course's Q&A log table names rows that exist, or says why it is out of scope.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from minibert.explain import CONCEPTS

NOTES = REPO_ROOT / "docs" / "notes.md"
CODE = re.compile(r"^(?P<file>[\w./-]+\.py):(?P<symbol>[A-Za-z_][\w.]*)$")
TEST = re.compile(r"^(?P<file>tests/[\w/]+\.py)::(?P<name>test_\w+)$")
COMMAND = "python -m minibert.explain "


def table_rows(section: str) -> list[list[str]]:
    """The body rows of the first table under the `## section` heading, as lists of cell strings."""
    text = NOTES.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/notes.md has no '## {section}' section"
    lines = [line for line in match.group(1).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]  # skip header + ---


def pointers(cells: list[str]) -> dict[str, list]:
    """Classify the `backticked` spans of a row into code pointers, test node ids and explain commands."""
    found = {"code": [], "tests": [], "commands": []}
    for span in re.findall(r"`([^`]+)`", " | ".join(cells)):
        if span.startswith(COMMAND):
            found["commands"].append(span[len(COMMAND):].strip())
        elif TEST.match(span):
            found["tests"].append(span)
        elif CODE.match(span):
            found["code"].append(span)
    return found


CONCEPT_ROWS = table_rows("Concept index")
QUESTION_ROWS = table_rows("Course questions")
MUSEUM_ROWS = table_rows("The bug museum")
ALL_ROWS = CONCEPT_ROWS + MUSEUM_ROWS


@lru_cache(maxsize=None)
def defined_names(path: Path) -> dict[str, set[str]]:
    """{top-level name: names defined in its body (for classes)} from the file's syntax tree."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = set()
        elif isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    members.update(t.id for t in item.targets if isinstance(t, ast.Name))
            names[node.name] = members
        elif isinstance(node, ast.Assign):
            names.update({t.id: set() for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = set()
    return names


def test_the_tables_are_there_and_complete():
    assert len(CONCEPT_ROWS) >= 20 and len(MUSEUM_ROWS) >= 8
    for row in CONCEPT_ROWS:
        p = pointers(row)
        name = row[0]
        assert len(row) == 5, f"concept row {name!r} must have 5 cells (concept | words | code | test | command)"
        assert p["code"] and p["tests"], f"concept row {name!r} needs a `file.py:symbol` and a `tests/...::test_`"
        assert len(p["commands"]) == 1, f"concept row {name!r} needs exactly one `{COMMAND}NAME` command"
        assert 100 <= len(row[1]) <= 1600, f"concept row {name!r}: explanation of {len(row[1])} characters"
        assert re.match(r"中文：[^<]*[\u4e00-\u9fff][^<]*<br>", row[1]), f"concept row {name!r}: no '中文：…<br>' line"
        assert "**Try this:**" in row[1], f"concept row {name!r}: no '**Try this:**' exercise"
    for row in MUSEUM_ROWS:
        p = pointers(row)
        assert len(row) == 4 and p["tests"] and p["code"], f"bug-museum row {row[0]!r} needs a story, test and code"


@pytest.mark.parametrize("pointer", sorted({c for row in ALL_ROWS for c in pointers(row)["code"]}))
def test_code_pointer_exists(pointer):
    m = CODE.match(pointer)
    path = REPO_ROOT / m["file"]
    assert path.is_file(), f"{pointer}: file {m['file']} does not exist"
    names = defined_names(path)
    head, _, member = m["symbol"].partition(".")
    assert head in names, f"{pointer}: no top-level def/class/assignment {head!r} in {m['file']}"
    if member:
        assert member in names[head], f"{pointer}: {head} has no member {member!r}"


def test_every_course_question_names_a_row_or_is_out_of_scope():
    known = {c.name for c in CONCEPTS}
    assert len(QUESTION_ROWS) >= 20
    for lines, question, answer in QUESTION_ROWS:
        named = re.findall(r"row `(\w+)`", answer)
        assert named or answer.startswith("out of scope: "), f"question at log lines {lines} has no answer"
        assert set(named) <= known, f"question at log lines {lines} names unknown rows {set(named) - known}"


def test_every_command_is_a_known_demo_and_every_demo_has_a_row():
    commands = [c for row in CONCEPT_ROWS for c in pointers(row)["commands"]]
    known = {c.name for c in CONCEPTS}
    assert set(commands) <= known, f"unknown demos in docs/notes.md: {sorted(set(commands) - known)}"
    assert known <= set(commands), f"demos without a row in docs/notes.md: {sorted(known - set(commands))}"
    assert len(commands) == len(set(commands)), "a demo is listed in two rows"


def test_named_tests_exist_and_pass():
    node_ids = sorted({t for row in ALL_ROWS for t in pointers(row)["tests"]})
    for node in node_ids:
        m = TEST.match(node)
        path = REPO_ROOT / m["file"]
        assert path.is_file() and m["name"] in defined_names(path), f"{node}: no such test"
    assert "tests/test_notes_index.py" not in {TEST.match(n)["file"] for n in node_ids}  # no recursion
    # Run them all in one subprocess: exit code 0 means every named test was collected and none failed.
    # One thread: these are tiny models, where thread hand-offs cost more than they save (2x faster here).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *node_ids],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, f"tests named in docs/notes.md fail or are missing:\n{result.stdout[-3000:]}"
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    skipped = re.search(r"(\d+) skipped", summary)  # only tests that need ../shared or a test extra may skip
    assert passed + (int(skipped.group(1)) if skipped else 0) >= len(node_ids), summary  # each ran (or its cases)


@pytest.mark.parametrize("page", ["README.md", "reading_order.md", "notes.md"])
def test_relative_links_in_docs_point_to_files_that_exist(page):
    text = (REPO_ROOT / "docs" / page).read_text(encoding="utf-8")
    links = [link.split("#")[0] for link in re.findall(r"\]\(([^)]+)\)", text) if "://" not in link]
    missing = [link for link in links if link and not (REPO_ROOT / "docs" / link).exists()]
    assert not missing, f"docs/{page} links to files that do not exist: {missing}"
