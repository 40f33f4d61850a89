"""One error boundary and one exit-code table for every command-line tool (pretrain, finetune, weights_convert).

Each CLI's `main(argv) -> int` hands its body to `run_cli`, the ONE place where errors are caught and printed:

    error: <what went wrong, naming the user's input: file and line, flag, or JSON field>; <the fix>

never a Python traceback (pass `--debug` to see one). Exit codes (README.md, "Exit codes"):

    0    success, with valid outputs
    1    the run failed while running (e.g. the loss diverged, the disk filled up, out of memory); the cause is named
    2    bad input or usage (a flag, a config value, a file that is missing, unreadable or malformed)
    130  interrupted (Ctrl-C / SIGINT); a pretraining run continues with --resume
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable

import torch

from .training.io import TEMP_PATTERN
from .validation import parse_text

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

# An OSError with one of these numbers is the machine failing the run, not the user's input being wrong.
RUNTIME_ERRNOS = {errno.ENOSPC: "the disk is full; free some space (or pick another --out) and run again",
                  errno.EDQUOT: "the disk quota is exceeded; free some space and run again",
                  errno.EIO: "an input/output error from the disk; check the device and run again"}
INPUT_ERRNOS = {errno.EROFS: "the file system is read-only; pick a writable --out",
                errno.EACCES: "permission denied; pick a path you may read/write",
                errno.EPERM: "operation not permitted; pick a path you may read/write",
                errno.ENOTDIR: "a path component is a file, not a folder; pick another path",
                errno.EISDIR: "it is a folder where a file is expected; pass a file",
                errno.ENOENT: "no such file or folder; check the path",
                errno.EEXIST: "it exists as a file where a folder is needed; pick another path"}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line (`error: argument --lr: ...; see --help`), not the usage wall, and
    no abbreviations: `--epoch 1` is a typo to report, not a silent `--epochs 1`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        print(f"error: {message}; see {self.prog} --help", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


class RunFailed(RuntimeError):
    """A run that started well and failed while running (exit 1); the message names the cause and the fix."""


def named_path(filename) -> str:
    """The path the user named: a failed atomic write reports its hidden temp sibling (.<name>.pid<N>.<x>.tmp)."""
    if not isinstance(filename, (str, os.PathLike)):  # bytes or a file descriptor: say it as it is
        return str(filename)
    path = Path(filename)
    found = TEMP_PATTERN.match(path.name)
    return str(path.parent / found.group(1)) if found else str(path)


def describe_os_error(error: OSError) -> tuple[str, int]:
    """One line for an OSError (`<strerror>: <file>; <fix>`) and its exit code (1 machine, 2 user input)."""
    where = f" {named_path(error.filename)}" if error.filename else ""
    what = error.strerror or str(error)
    if error.errno in RUNTIME_ERRNOS:
        return f"cannot write{where}: {what}; {RUNTIME_ERRNOS[error.errno]}", EXIT_FAILED
    fix = INPUT_ERRNOS.get(error.errno, "check the path")
    return f"{where.strip() or 'a file'}: {what}; {fix}", EXIT_BAD_INPUT


def run_cli(body: Callable[[list[str]], int | None], argv: list[str] | None, resume_hint: str = "") -> int:
    """Runs `body(argv)` and turns any exception into one `error:` line and the documented exit code.

    Args:
        body: the CLI's work; parses argv itself (argparse's usage errors exit 2 as usual).
        argv: the arguments (None: sys.argv[1:]). `--debug` is removed here and shows tracebacks.
        resume_hint: said on Ctrl-C, e.g. "continue with --resume".
    Returns:
        the exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        code = body(argv)
        return EXIT_OK if code is None else code
    except SystemExit as stop:  # argparse: --help (0) and usage errors (2), already printed
        return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
    except BaseException as error:  # everything else: one line and its exit code
        message, code = describe_failure(error, resume_hint)
        details = "".join(traceback.format_exception(error)) if debug else ""  # text: it holds no frames
    # Printed only once the except clause has dropped the exception: its frames (and a progress bar in them) are
    # freed then, so the bar finishes its line and `error:` starts a line of its own.
    print(f"{details}error: {message}", file=sys.stderr)
    return code


def describe_failure(error: BaseException, resume_hint: str = "") -> tuple[str, int]:
    """The one line and the exit code for an exception that ended a command (see the module docstring)."""
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted{'; ' + resume_hint if resume_hint else ''}", EXIT_INTERRUPTED
    if isinstance(error, RunFailed):
        return str(error), EXIT_FAILED
    if isinstance(error, OSError):  # before ValueError: FileNotFoundError etc. get their fix from the errno
        return describe_os_error(error) if error.strerror else (str(error), EXIT_BAD_INPUT)
    if isinstance(error, ValueError):  # bad input (ConfigError, DataError, CheckpointError...): names input and fix
        return str(error), EXIT_BAD_INPUT
    if is_out_of_memory(error):
        return out_of_memory_line(error), EXIT_FAILED
    # a bug: still one line, with a way to get the details
    return (f"unexpected {type(error).__name__}: {error}; rerun with --debug and report the traceback", EXIT_FAILED)


def is_out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, a GPU's torch.OutOfMemoryError, or a plain RuntimeError whose words say it: torch's CPU
    allocator ("can't allocate memory", "not enough memory") and CUDA libraries ("CUDA error: out of memory")."""
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (isinstance(error, RuntimeError) and any(
        words in str(error) for words in ("can't allocate memory", "not enough memory", "out of memory")))


def out_of_memory_line(error: BaseException) -> str:
    """Out of memory is the run being too big for the machine, not a bug: say how to run fewer rows at once, with
    gradient accumulation first, the fix that keeps the recipe (a small GPU is the usual case)."""
    where = "GPU" if isinstance(error, torch.OutOfMemoryError) or "CUDA" in str(error) else "CPU"
    asked = re.search(r"[Tt]ried to allocate ([\d.]+ ?\w+)", str(error))
    size = f" (it asked for {asked.group(1)} more)" if asked else ""
    return (f"out of {where} memory{size}; run fewer rows at once: raise --gradient-accumulation (梯度累积 keeps "
            f"the effective batch; pretrain's --batch-size is the total, a fine-tune's is per micro-batch, so lower "
            f"that by the same factor), or shorten the rows (--max-len, --max-length); evaluation and predictions: "
            f"lower --eval-batch-size (with --load: --device cpu)")


def cli_type(field_rule):
    """argparse `type=` for a config field: its rule (minibert/validation.py) casts the string, so a flag is parsed
    exactly like `--set` and JSON ('none' means None for optional fields)."""
    def cast(text: str):
        try:
            return parse_text(field_rule, text)
        except ValueError as error:  # argparse shows an ArgumentTypeError's own words
            raise argparse.ArgumentTypeError(str(error)) from None
    cast.__name__ = field_rule.kind.__name__  # argparse names it in "invalid float value: 'x'"
    return cast
