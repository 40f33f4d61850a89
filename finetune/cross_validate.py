"""`python -m finetune.cross_validate`: seeds × folds of the comparison rows, reported as mean ± sd.

With few labels (`--train-fraction 0.1`: about 40 Tianchi documents for 14 classes) one dev split says little: the
spread between splits and seeds is as large as the differences we want to see. So this driver runs the same
fine-tune on every (seed, fold) and reports each row (pretrained encoder, random init, TF-IDF + LR) as mean ± sd.

    python -m finetune.cross_validate --folds 5 --seeds 3 -- --task cls --init runs/pretrain/final \\
        --train-fraction 0.1 --compare-random --compare-tfidf --representation mean --lr 3e-4 --epochs 4 \\
        --max-length 64 --truncate windows

Everything after `--` is a `python -m finetune` command line. The folds are a stratified split (by label) of the
--train file (default: the task's embedded training data); a --dev or --predict is refused (neither would be
read). Seed s (s = --seed, --seed+1, ...) fixes the fold split, the --train-fraction subset, the model's head init
and the batch order, so every row of one (seed, fold) trains on the same examples. Results:
<out>/cross_validation.json (each row's mean ± sd, and the encoder minus each other row, paired run by run: the
mean difference and in how many runs the encoder is ahead) and <out>/cross_validation.png (the same, drawn); each
run's split is in <out>/seed<s>/fold<k>/data/, its outputs in <out>/seed<s>/fold<k>/run/ and its rows in
<out>/seed<s>/fold<k>/result.json, written last, when every row of that run is done.

A grid of 15 fine-tunes takes an hour or more on a CPU. Stopped part-way (Ctrl-C, a closed laptop)? Run the same
command again: each (seed, fold) that has its result.json is read back, not trained again, and the grid goes on
from the first one without. A result.json written by a DIFFERENT command (other flags) is an error that names
the differing flags, and one written on another split of the data (another --folds, an edited --train file; each
result.json records a digest of its split) is an error too: neither is silently mixed into the mean.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from minibert.cli import OneLineParser, run_cli
from minibert.training.io import atomic_write_text
from minibert.training.logs import pyplot, save_figure

from .__main__ import resolve_defaults, run
from .config import FinetuneConfig, parse_config
from .data import FORMATS, DataError, read_lines
from .tasks import DEFAULT_FORMAT, read_examples


# every flag's default, as a result.json records flags (JSON: lists, not tuples)
FLAG_DEFAULTS = json.loads(json.dumps(FinetuneConfig().to_dict()))


def stratified_folds(labels: list, folds: int, seed: int) -> np.ndarray:
    """fold[i] in [0, folds) for each example: the classes, one after the other in a seeded order, each class's
    examples shuffled, are dealt round-robin over the folds as ONE deck. So every class is spread evenly (at most
    ceil(n_c / folds) of it in a fold) AND the folds differ in size by at most 1; dealing each class from fold 0
    would pile every class's remainder (and every one-example class) onto the first folds, and leave the last ones
    empty on a small file."""
    rng = np.random.default_rng([seed, 11])
    classes = sorted(set(map(repr, labels)))  # sorted first: the file's order of classes must not matter
    deck = np.concatenate([rng.permutation(np.flatnonzero([repr(x) == label for x in labels]))
                           for label in rng.permutation(classes)])  # [N] example indices, class by class
    fold = np.zeros(len(labels), np.int64)
    fold[deck] = np.arange(len(deck)) % folds
    return fold


def split_digest(train_lines: list[str], dev_lines: list[str]) -> str:
    """What a (seed, fold) trained and was scored on, in a few bytes: a result read back must come from the same
    split, not just the same flags (another --folds, an edited --train file or another fold rule gives another)."""
    return hashlib.sha256("\n".join(train_lines + ["\0"] + dev_lines).encode("utf-8")).hexdigest()[:16]


def finished_run(folder: Path, run_config: dict, split: str) -> dict | None:
    """An earlier, complete run of the same command on the same split in `folder`: its result.json ({config, split,
    metric, rows}), or None."""
    record = folder / "result.json"
    if not record.is_file():
        return None
    earlier = json.loads(record.read_text())
    if earlier.get("split") != split:  # absent: written before splits were recorded, on folds dealt another way
        raise ValueError(f"{record}: a finished run on another split of the data (another --folds, an edited --train "
                         f"file, or a grid from before 2026-12-06, when folds were dealt differently); pass another "
                         f"--out, or delete {folder.parent.parent} to start the grid again")
    then = {**FLAG_DEFAULTS, **earlier["config"]}  # a flag added since that run: its default, which it ran with
    changed = ", ".join(f"--{key.replace('_', '-')} {then.get(key)!r} there, {value!r} now"
                        for key, value in sorted(run_config.items()) if then.get(key) != value)
    if changed:
        raise ValueError(f"{record}: a finished run of another command ({changed}); pass another --out, or delete "
                         f"{folder.parent.parent} to start the grid again")
    return earlier


def cross_validate(finetune_argv: list[str], folds: int, seeds: int) -> dict:
    """Runs `python -m finetune <finetune_argv>` on every (seed, fold); returns {"rows": {name: {mean, sd, runs}}}."""
    parsed = parse_config(finetune_argv)
    if parsed.dev_fraction is not None:
        raise ValueError(f"cross_validate: --dev-fraction {parsed.dev_fraction} would hold out a second dev set; the "
                         f"folds are the dev sets here, so drop it")
    for flag, value, why in (("--dev", parsed.dev, "the folds of --train are the dev sets, so it would not be read"),
                             ("--load", parsed.load, "a grid trains one model per (seed, fold) and --load would "
                              "skip training; start from weights with --init"),
                             ("--evaluate", parsed.evaluate, "a grid scores each fold's dev set; evaluate the model "
                              "you pick: python -m finetune --load <out>/seed<s>/fold<k>/run/best --evaluate"),
                             ("--predict", parsed.predict, "a grid trains one model per (seed, fold); predict with "
                              "the one you pick: python -m finetune --load <out>/seed<s>/fold<k>/run/best --predict")):
        if value is not None:  # replaced or dropped below, it would do nothing without a word
            raise ValueError(f"cross_validate: {flag} {value}: {why}; drop it")
    if parsed.train is not None:  # the folds are the dev sets: --train alone is complete
        parsed = parsed.replace(dev=parsed.train)
    cfg, _ = resolve_defaults(parsed)
    if cfg.task == "ner":
        raise ValueError("cross_validate: --task ner is not supported (entity data has no class label to stratify "
                         "by); use cls or pair")
    format_name = cfg.format or DEFAULT_FORMAT[cfg.task]
    examples = read_examples(cfg, format_name, cfg.train)  # first: its errors name the file and the line
    raw = read_lines(Path(cfg.train))
    header = [raw[0]] if (cfg.header if cfg.header is not None else FORMATS[format_name]["header"]) else []
    if len(examples) < 2 * folds:
        raise DataError(f"{cfg.train}: {len(examples)} examples cannot make {folds} folds; lower --folds")
    out = Path(cfg.out_dir)
    runs: dict[str, list[float]] = {}
    trained, started = 0, time.monotonic()  # for the time-left estimate: runs trained in THIS call, and their time
    for seed in range(cfg.seed, cfg.seed + seeds):
        fold_of = stratified_folds([e.label for e in examples], folds, seed)
        for fold in range(folds):
            folder = out / f"seed{seed}" / f"fold{fold}"  # data/ holds the split, run/ the fine-tune's outputs
            run_cfg = cfg.replace(train=str(folder / "data" / "train.tsv"), dev=str(folder / "data" / "dev.tsv"),
                                  seed=seed, out=str(folder / "run"), data=None, predict=None, progress=False,
                                  overwrite=True)  # a run without result.json is unfinished: it runs again
            # what must match for an earlier result to count: every flag but the paths, which are this folder's
            # wherever the command runs from, and --overwrite, set here (as result.json reads back: lists, not tuples)
            run_config = {key: value for key, value in json.loads(json.dumps(run_cfg.to_dict())).items()
                          if key not in ("train", "dev", "out", "overwrite")}
            done = (seed - cfg.seed) * folds + fold  # runs before this one
            split = {name: header + [raw[e.line - 1] for e, kept in zip(examples, keep) if kept]
                     for name, keep in (("train.tsv", fold_of != fold), ("dev.tsv", fold_of == fold))}
            digest = split_digest(split["train.tsv"], split["dev.tsv"])
            record = finished_run(folder, run_config, digest)
            if record is not None:
                print(f"=== seed {seed}, fold {fold + 1} of {folds}: finished earlier, read from "
                      f"{folder / 'result.json'} ===", flush=True)
            else:
                for name, lines in split.items():
                    atomic_write_text(folder / "data" / name, "\n".join(lines) + "\n")
                minutes = (time.monotonic() - started) / 60
                left = f", about {minutes / trained * (seeds * folds - done):.0f} min left" if trained else ""
                print(f"=== seed {seed}, fold {fold + 1} of {folds} (run {done + 1} of {seeds * folds}; "
                      f"{minutes:.0f} min so far{left}) ===", flush=True)
                summary = run(run_cfg)
                rows = json.loads((folder / "run" / "compare.json").read_text())["rows"] \
                    if cfg.compare_random or cfg.compare_tfidf \
                    else {f"pretrained encoder ({cfg.init})": summary["best"][summary["metric"]]}
                record = {"config": run_config, "split": digest, "metric": summary["metric"], "rows": rows}
                atomic_write_text(folder / "result.json", json.dumps(record, indent=2) + "\n")
                trained += 1
            for name, value in record["rows"].items():
                runs.setdefault(name, []).append(value)
    result = {"metric": record["metric"], "folds": folds, "seeds": seeds, "train_fraction": cfg.train_fraction,
              "rows": {name: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                              "runs": v} for name, v in runs.items()},
              "paired": paired_differences(runs)}
    atomic_write_text(out / "cross_validation.json", json.dumps(result, indent=2) + "\n")
    print(f"\ndev {result['metric']}, {seeds} seed(s) x {folds} folds (mean ± sd over {seeds * folds} runs):")
    width = max(map(len, result["rows"]))
    for name, row in result["rows"].items():
        print(f"  {name:<{width}}  {row['mean']:.4f} ± {row['sd']:.4f}")
    encoder = next(iter(runs))
    for name, diff in result["paired"].items():
        print(f"  {encoder} minus {name}: {diff['mean']:+.4f} ± {diff['sd']:.4f}, ahead in {diff['ahead']} of "
              f"{len(diff['runs'])} runs")
    labels = [f"s{seed} f{fold + 1}" for seed in range(cfg.seed, cfg.seed + seeds) for fold in range(folds)]
    plot_runs(runs, result["paired"], labels, result["metric"], out / "cross_validation.png")
    print(f"  (each run, and the paired differences: {out / 'cross_validation.png'})")
    return result


def paired_differences(runs: dict[str, list[float]]) -> dict:
    """The first row (the encoder) minus each other row, run by run: {name: {mean, sd, ahead, runs}}.

    The rows of one (seed, fold) share their training examples and dev fold, so their difference cancels how
    easy that fold happened to be: a gap smaller than either row's sd can still be ahead in nearly every run."""
    encoder, *others = runs
    paired = {}
    for name in others:
        diff = np.asarray(runs[encoder]) - np.asarray(runs[name])  # [seeds·folds]
        paired[name] = {"mean": float(diff.mean()), "sd": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
                        "ahead": int((diff > 0).sum()), "runs": diff.tolist()}
    return paired


def plot_runs(runs: dict[str, list[float]], paired: dict, labels: list[str], metric: str, png: Path) -> None:
    """Left: every run of every row (a marker a run, the mean dashed); right: the paired differences (the same
    colour as the row subtracted) with the zero line, so "ahead in 8 of 10" is something one sees."""
    plt = pyplot()
    x = np.arange(len(labels))
    panels = 2 if paired else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 5), dpi=120, squeeze=False)
    left = axes[0][0]
    for (name, values), colour in zip(runs.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        left.plot(x, values, "o", color=colour, label=f"{name}: {np.mean(values):.3f}")
        left.axhline(np.mean(values), color=colour, linestyle="--", linewidth=1)
    left.set_ylabel(f"dev {metric}")
    left.set_title("each (seed, fold)")
    if paired:
        right = axes[0][1]
        for (name, diff), colour in zip(paired.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"][1:]):
            right.plot(x, diff["runs"], "o", color=colour,
                       label=f"minus {name}: {diff['mean']:+.3f}, ahead in {diff['ahead']} of {len(x)}")
            right.axhline(diff["mean"], color=colour, linestyle="--", linewidth=1)
        right.axhline(0, color="black", linewidth=1)
        right.set_ylabel(f"difference in dev {metric}")
        right.set_title(f"{next(iter(runs))}, minus each row")
    for ax in axes[0]:
        ax.set_xticks(x, labels, rotation=90 if len(x) > 8 else 0, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: never over a run
    save_figure(fig, png)


def _main(argv: list[str]) -> int:
    ours, finetune_argv = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = OneLineParser(prog="python -m finetune.cross_validate",
                           usage="python -m finetune.cross_validate [--folds N] [--seeds N] -- FINETUNE FLAGS",
                           description="seeds x folds of python -m finetune, as mean ± sd. Every flag of python -m "
                                       "finetune, --out and --train included, goes after the --.")
    parser.add_argument("--folds", type=int, default=5, help="stratified folds of the --train file (default 5)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds --seed, --seed+1, ... (default 3)")
    args = parser.parse_args(ours)
    if args.folds < 2 or args.seeds < 1:
        raise ValueError(f"--folds {args.folds} --seeds {args.seeds}: need folds >= 2 and seeds >= 1")
    cross_validate(finetune_argv, args.folds, args.seeds)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes as python -m finetune: 0 done, 1 failed while running, 2 bad input, 130 interrupted."""
    return run_cli(_main, argv, resume_hint="run the same command again: finished (seed, fold) runs are kept")


if __name__ == "__main__":
    sys.exit(main())
