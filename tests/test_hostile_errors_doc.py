"""docs/errors.md stays true: every command of its "Bad input" table gives the documented exit code and message,
and every test its "Problems found while running" table names exists. Plus the divergence case (exit 1)."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import REPO_ROOT
from hostile import assert_outcome, pretrain_argv, run_cli

DOC = (REPO_ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
COMMANDS = re.findall(r"^\| `(python [^`]+)` \| (\d+) \| `([^`]+)` \|$", DOC, re.M)
CLIS = {"python -m pretrain": "pretrain", "python -m finetune": "finetune", "python weights_convert.py": "convert"}


def test_the_table_is_parsed():
    assert len(COMMANDS) >= 12


@pytest.mark.parametrize("command, code, start", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_documented_error(command, code, start, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prefix = next(p for p in CLIS if command.startswith(p + " "))
    argv = command[len(prefix):].split()
    line = assert_outcome(*run_cli(CLIS[prefix], argv, capsys)[::2], int(code))
    assert line.startswith(start), (line, start)


def test_every_checking_test_exists():
    names = set(re.findall(r"\| `(test_\w+)` \|$", DOC, re.M))
    assert len(names) >= 5
    sources = "".join(p.read_text(encoding="utf-8") for p in (REPO_ROOT / "tests").glob("test_*.py"))
    for name in names:
        assert f"def {name}(" in sources, name


def test_divergence_names_the_flags(capsys, tmp_path, monkeypatch):
    """A NaN gradient stops the run before the optimizer step (exit 1), naming the flags that can cause it and
    saying honestly that no checkpoint exists yet."""
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, limit: torch.tensor(float("nan")))
    line = assert_outcome(*run_cli("pretrain", pretrain_argv(tmp_path, "run"), capsys)[::2], 1,
                          ["diverged at step 1", "--lr", "--grad-clip", "--warmup-fraction", "no checkpoint"])
    assert "checkpoint.pt" not in line
