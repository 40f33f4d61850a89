"""Run the lecture path: every ```python block of docs/lecture/NN_*.md, in order, printing what it prints.

    python docs/lecture/run.py                 # all lectures, full sizes (`make lecture`, a few minutes on a CPU)
    python docs/lecture/run.py --fast          # tiny sizes, what `make test` runs (tests/test_lecture.py)
    python docs/lecture/run.py 03_mlm_pretraining.md

The markdown files are the only source: the blocks of one lecture share one namespace, top to bottom, as in a
notebook, and see two names from here: FAST (True with --fast) and WORK_DIR (a scratch folder for files a lecture
writes, under runs/lecture/). A failing block stops the run with the lecture file and block number.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

LECTURE_DIR = Path(__file__).resolve().parent
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.M | re.S)


def lecture_files() -> list[Path]:
    return sorted(LECTURE_DIR.glob("[0-9][0-9]_*.md"))


def code_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def run_lecture(path: Path, fast: bool, work_dir: Path) -> float:
    """Execute one lecture's blocks in a fresh namespace; returns the seconds it took."""
    started = time.perf_counter()
    namespace = {"__name__": f"lecture_{path.stem}", "FAST": fast, "WORK_DIR": work_dir / path.stem}
    for number, code in enumerate(code_blocks(path), start=1):
        print(f"\n-- {path.name}, block {number}")
        exec(compile(code, f"{path.name} (block {number})", "exec"), namespace)  # noqa: S102 - the lecture's code
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lectures", nargs="*", help="lecture files (default: all, in order)")
    parser.add_argument("--fast", action="store_true", help="tiny sizes: checks that every block still runs")
    parser.add_argument("--work-dir", type=Path, default=Path("runs") / "lecture", help="scratch folder")
    args = parser.parse_args(argv)
    paths = [LECTURE_DIR / Path(name).name for name in args.lectures] or lecture_files()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such lecture {missing}; choose from {[p.name for p in lecture_files()]}", file=sys.stderr)
        return 2
    for path in paths:
        seconds = run_lecture(path, args.fast, args.work_dir)
        print(f"\n== {path.name} done in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
