"""The lecture path (docs/lecture/) cannot rot: every ```python block of every lecture runs here in fast mode
(tiny sizes; `make lecture` runs the full sizes), and every lecture keeps its bilingual text and its exercises
with answers a click away."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO_ROOT

LECTURES = sorted((REPO_ROOT / "docs" / "lecture").glob("[0-9][0-9]_*.md"))


def test_there_are_lectures_and_each_is_bilingual_with_exercises():
    assert len(LECTURES) >= 4
    for path in LECTURES:
        text = path.read_text(encoding="utf-8")
        exercises = text.split("### 练习 · Exercises")
        assert len(exercises) == 2, f"{path.name}: one '### 练习 · Exercises' section at the end"
        answers = exercises[1].count("<details><summary>答案 · Answer</summary>")
        assert 2 <= answers <= 3 and answers == exercises[1].count("</details>"), f"{path.name}: 2-3 answers"
        assert re.search(r"[\u4e00-\u9fff]", text) and "```python" in text, path.name
        assert len(text.splitlines()) <= 300, f"{path.name}: keep a lecture under ~300 lines"


def test_every_code_block_runs_in_fast_mode(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "docs/lecture/run.py", "--fast", "--work-dir", str(tmp_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for path in LECTURES:
        assert f"== {path.name} done" in result.stdout, f"{path.name} did not finish"
    assert "max |loop - module|" in result.stdout  # lecture 1: the per-head loop equals the fused module
