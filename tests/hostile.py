"""Shared helpers of the hostile-input suite (tests/test_hostile_*.py): run a CLI's main(argv) in-process and check
that the outcome is one of the only two allowed ones:

    exit 0 with valid outputs, or
    ONE `error:` line (no traceback) with the documented exit code, naming the input.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from pretrain.corpus import generate_corpus

TINY = ["--set", "hidden_size=32", "--set", "num_hidden_layers=2", "--set", "num_attention_heads=4",
        "--set", "intermediate_size=64", "--max-len", "32", "--batch-size", "8", "--max-steps", "2",
        "--eval-every", "2", "--checkpoint-every", "1", "--eval-sequences", "8", "--matmul-peak-gflops", "1",
        "--num-threads", "1"]  # one thread: on a busy 2-core machine, faster than torch's default


def cli_main(cli: str):
    """The main(argv) -> int of `python -m pretrain`, `python -m finetune` or `weights_convert.py`."""
    if cli == "pretrain":
        from pretrain.__main__ import main
    elif cli == "finetune":
        from finetune.__main__ import main
    else:
        from weights_convert import main
    return main


def run_cli(cli: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the CLI's main(argv), in-process; torch's thread count is restored after."""
    threads = torch.get_num_threads()
    try:
        code = cli_main(cli)([str(a) for a in argv])
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return code, out, err


def assert_outcome(code: int, err: str, expected: int, words=()) -> str:
    """The exit code is the documented one; a failure is exactly one `error:` line naming `words`. Returns it."""
    assert "Traceback" not in err, err[-2000:]
    assert code == expected, f"exit {code}, expected {expected}: {err[-1500:]}"
    if code == 0:
        return ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-1500:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def make_corpus(folder: Path, seed: int = 5, docs: int = 40) -> Path:
    corpus = folder / f"corpus-{seed}.tsv"
    if not corpus.exists():
        generate_corpus(corpus, num_docs=docs, seed=seed)
    return corpus


def pretrain_argv(folder: Path, out: str, corpus: Path | None = None, *extra) -> list[str]:
    corpus = corpus or make_corpus(folder)
    return ["--corpus", corpus, "--cache-dir", folder / "cache", "--out", folder / out, *TINY, *extra]


def copy_run(run: Path, folder: Path) -> Path:
    """A private copy of the shared finished run (tests that damage it must not damage the others')."""
    target = folder / "run-copy"
    shutil.copytree(run, target)
    return target
