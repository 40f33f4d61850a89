"""`python -m pretrain.compare RUN [RUN ...]`: several pretraining runs side by side, one table and one plot.

    python -m pretrain.compare runs/mask15 runs/mask30 --labels "mask 0.15" "mask 0.3" --out runs/mask.png

Each RUN is a `python -m pretrain --out` folder; its metrics.jsonl holds the held-out evaluations (and the step at
which the model grew). The table gives, per run: its steps, the final held-out MLM accuracy against the bigram
yardstick of its own held-out split, its perplexity, and the step at which it LEFT THE UNIGRAM PLATEAU, defined as
the first evaluation halfway from the unigram to the bigram accuracy (docs/pretrain.md, "The unigram plateau"):
a lever that shortens the plateau moves that step, whatever the run's length. The plot draws held-out accuracy
against the step, the yardsticks as dashed lines, and each growth as a dotted mark.

Runs on different corpora or splits may be compared, but then each has its own yardsticks; the table says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minibert.cli import OneLineParser, run_cli
from minibert.training.logs import MetricsLog, pyplot, save_figure


def plateau_exit(evaluations: list[dict]) -> int | None:
    """The first evaluated step whose held-out accuracy is at least halfway from the unigram to the bigram
    yardstick (None if the run never got there). Halfway, not "above the unigram": a plateaued model wobbles a
    point or two around the unigram accuracy, and halfway to the bigram is beyond any such wobble."""
    for record in evaluations:
        if record["eval_acc"] >= (record["unigram_acc"] + record["bigram_acc"]) / 2:
            return record["step"]
    return None


def read_run(folder: Path) -> tuple[list[dict], list[int]]:
    """(held-out evaluations in step order, the steps at which the model grew) of one run folder."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{folder}: no metrics.jsonl (is it a `python -m pretrain --out` folder?); pass the folder "
                         f"a pretraining run wrote, e.g. runs/pretrain")
    records = MetricsLog(path).read()
    evaluations = [r for r in records if "eval_acc" in r and "bigram_acc" in r]
    if not evaluations:
        raise ValueError(f"{path}: no held-out evaluation yet (the first comes at step 0 of a run); wait for one, "
                         f"or pass another run")
    return sorted(evaluations, key=lambda r: r["step"]), [r["step"] for r in records if "grew_to" in r]


def compare(folders: list[Path], labels: list[str], out: Path) -> list[dict]:
    """Prints the table, writes the plot to `out`. Returns one row per run (label, steps, acc, bigram, ...)."""
    runs = [read_run(folder) for folder in folders]  # every folder checked before anything is drawn
    rows, plt = [], pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for (evaluations, growths), label in zip(runs, labels):
        last = evaluations[-1]
        row = {"label": label, "steps": last["step"], "acc": last["eval_acc"], "bigram": last["bigram_acc"],
               "unigram": last["unigram_acc"], "ppl": last["eval_ppl"], "left_plateau": plateau_exit(evaluations)}
        rows.append(row)
        line, = ax.plot([r["step"] for r in evaluations], [r["eval_acc"] for r in evaluations], label=label)
        for step in growths:
            ax.axvline(step, color=line.get_color(), linestyle=(0, (1, 2)), linewidth=1)
    for name in ("bigram", "unigram"):  # one line per distinct yardstick (runs on one split share theirs)
        for value in sorted({row[name] for row in rows}):
            ax.axhline(value, color="gray", linestyle="--" if name == "bigram" else ":", linewidth=1,
                       label=f"{name} {value:.3f}")
    ax.set_xlabel("step (dotted: the model grew)")
    ax.set_ylabel("held-out MLM accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out)

    width = max(len(row["label"]) for row in rows)
    print(f"{'run':<{width}} | steps  | held-out acc | bigram | x bigram | perplexity | left the plateau at step")
    for row in rows:
        left = "never" if row["left_plateau"] is None else f"{row['left_plateau']:,}"
        print(f"{row['label']:<{width}} | {row['steps']:>6,} | {row['acc']:12.3f} | {row['bigram']:.3f}  | "
              f"{row['acc'] / row['bigram']:7.2f}x | {row['ppl']:10.1f} | {left}")
    if len({(row["bigram"], row["unigram"]) for row in rows}) > 1:
        print("note: the runs' yardsticks differ (another corpus, --seed or --heldout-fraction): compare each run "
              "with its own bigram, not the accuracies with each other")
    print(f"plot: {out}")
    return rows


def _main(argv: list[str]) -> int:
    parser = OneLineParser(prog="python -m pretrain.compare", description=__doc__.split("\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="pretraining run folders (--out of python -m pretrain)")
    parser.add_argument("--labels", nargs="+", help="one name per run for the table and legend (default: folder names)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare.png"), help="the plot (default: %(default)s)")
    args = parser.parse_args(argv)
    labels = args.labels or [folder.name for folder in args.runs]
    if len(labels) != len(args.runs):
        raise ValueError(f"--labels: got {len(labels)} for {len(args.runs)} runs; give one label per run, or none")
    compare(args.runs, labels, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input (a folder without a run)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
