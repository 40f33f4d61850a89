"""`python -m finetune`: fine-tune, evaluate, save the best model, predict; see docs/finetune.md.

    python -m finetune --task cls --compare-random          # embedded data, runs/pretrain/final
    python -m finetune --task cls --format sst2 --init runs/minilm --train ../shared/data/sst2/train.tsv \\
        --dev ../shared/data/sst2/dev.tsv --epochs 1
    python -m finetune --task ner --head globalpointer      # embedded NER data, random init
    python -m finetune --load runs/finetune/cls/best --predict test_a.csv
    python -m finetune --load runs/cola/best --evaluate ../shared/data/cola/raw/out_of_domain_dev.tsv

`--init auto` (the default) means: runs/pretrain/final for cls and pair (cls refuses to run without it; pair
falls back to random init); random init for ner (the embedded NER data is Chinese characters, which the
ID-corpus encoder has never seen).
Errors print one line (`--debug` adds the traceback); exit codes 0 done, 1 failed while running, 2 bad input,
130 interrupted (minibert/cli.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from minibert.cli import run_cli
from minibert.config import BERT_INITIALIZER_RANGE
from minibert.training.io import atomic_write_text

from .checkpoints import CheckpointMissing
from .config import FinetuneConfig, flags_set, parse_config
from .baseline import CLASS_WEIGHTS, tfidf_baseline
from .predict import evaluate_file, predict_file
from .prepare import prepare
from .toy_data import default_data
from .train import train

PRETRAINED = Path("runs/pretrain/final")


# What --load uses; every other flag is set by the loaded model's finetune.json (refused if given, see _main).
LOAD_FLAGS = ("load", "predict", "evaluate", "device", "num_threads", "progress", "out")


def resolve_defaults(cfg: FinetuneConfig) -> tuple[FinetuneConfig, list[str]]:
    """Fill in the embedded default data and the `auto` init. Returns (config, notes to print)."""
    notes, given_init = [], cfg.init
    if cfg.evaluate is not None:  # a training run scores its --dev; only --load reads --evaluate
        raise ValueError(f"--evaluate {cfg.evaluate} scores a saved model: pass --load <out>/best with it (after "
                         f"this run: --load {Path(cfg.out_dir) / 'best'}); a training run scores its --dev")
    if cfg.compare_tfidf and (cfg.task == "ner" or cfg.multi_label):  # refused now, not after the training
        raise ValueError(f"--compare-tfidf: the TF-IDF + logistic-regression row scores single-label cls and pair "
                         f"only; drop it for {'--task ner' if cfg.task == 'ner' else '--multi-label'}")
    if cfg.data is not None:
        suffix = "json" if cfg.task == "ner" else "tsv"
        folder, dev_file = Path(cfg.data), Path(cfg.data) / f"dev.{suffix}"
        if not folder.is_dir():
            raise ValueError(f"--data {cfg.data}: {'is a file, not a' if folder.exists() else 'no such'} folder; "
                             f"pass a folder holding train.{suffix} and dev.{suffix}, or the files as --train and "
                             f"--dev")
        if cfg.dev is None and cfg.dev_fraction is None and not dev_file.exists():
            raise ValueError(f"--data {cfg.data}: the folder has no dev.{suffix}; add one, or pass --dev-fraction 0.1 "
                             f"to hold out 10% of its train.{suffix}")
        held_out = cfg.dev_fraction is not None and not dev_file.exists()  # the folder's train file, split
        cfg = cfg.replace(train=cfg.train or str(folder / f"train.{suffix}"),
                          dev=cfg.dev or (None if held_out else str(dev_file)))
    if cfg.dev_fraction is not None and (cfg.train is None or cfg.dev is not None):
        fix = (f"{'--data' if cfg.data else '--dev'} already gives a dev file: drop one of them" if cfg.dev
               else "pass --train FILE (the embedded data has its own dev file)")
        raise ValueError(f"--dev-fraction {cfg.dev_fraction}: holds out part of --train as dev; {fix}")
    if (cfg.train is None) != (cfg.dev is None) and cfg.dev_fraction is None:  # never paired with the toy data
        given, missing = ("--train", "--dev") if cfg.dev is None else ("--dev", "--train")
        raise ValueError(f"{given} {cfg.train or cfg.dev} without {missing}: pass {missing} FILE too (dev is the "
                         f"held-out labelled file that picks the best epoch)"
                         + (", or --dev-fraction 0.1 to hold out 10% of --train, or let `python -m "
                            "finetune.cross_validate` split it into folds" if cfg.dev is None else "")
                         + "; the embedded data is used only when neither is given")
    if cfg.train is None:
        train_path, dev_path = default_data(cfg.task)
        cfg = cfg.replace(train=cfg.train or str(train_path), dev=cfg.dev or str(dev_path))
        notes.append(f"data: embedded default {cfg.task} data ({cfg.train}, {cfg.dev})")
    if cfg.init == "auto":
        if cfg.task == "ner":
            cfg = cfg.replace(init="random")
        elif (PRETRAINED / "model.safetensors").is_file():
            cfg = cfg.replace(init=str(PRETRAINED))
        elif cfg.task == "pair":
            cfg = cfg.replace(init="random")
            notes.append(f"note: {PRETRAINED} not found, so pair starts from random init; run `make pretrain` "
                         f"first to fine-tune the pretrained encoder")
        else:
            raise CheckpointMissing(f"no pretrained encoder at {PRETRAINED}: run `make pretrain` first, or give "
                                    f"one with INIT=<folder> (--init), or use --init random")
    if cfg.compare_random and cfg.init == "random":  # the same seed twice: two identical rows
        why = ("--init random" if given_init == "random" else "--task ner's default --init" if cfg.task == "ner"
               else f"no pretrained encoder at {PRETRAINED}, so --init auto fell back to it")
        raise ValueError(f"--compare-random: this run already starts from random init ({why}), so both rows would "
                         f"train the same model; pass a pretrained --init folder (e.g. {PRETRAINED} after `make "
                         f"pretrain`), or drop --compare-random")
    return cfg, notes


def check_out(cfg: FinetuneConfig) -> None:
    """Refuse to replace the run already in --out unless --overwrite: training deletes its log and predictions at
    once and replaces best/ at the first dev evaluation, and that model may have taken an hour."""
    out = Path(cfg.out_dir)
    if cfg.init not in (None, "auto", "random") and out.resolve() == Path(cfg.init).resolve():
        raise ValueError(f"--out {out} is the --init model folder: the fine-tune would write best/ and its logs "
                         f"into the pretrained model; pass another --out")
    pretraining = [out / name for name in ("results.json", "checkpoint.pt") if (out / name).is_file()]
    if pretraining:  # even with --overwrite: its vocab.txt and metrics.jsonl would be replaced, the rest left stale
        raise ValueError(f"--out {out} holds a pretraining run ({pretraining[0]}); a fine-tune would replace its "
                         f"vocab.txt and metrics.jsonl: pass another --out (to start from it: --init {out / 'final'})")
    kept = [out / name for name in ("metrics.json", "best/model.safetensors", "predictions.csv", "predictions.json")
            if (out / name).is_file()]  # what training would delete or replace
    if cfg.overwrite or not kept:
        return
    try:  # the finished run's own numbers, so the user sees what they would lose
        earlier = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        held = (f"a finished fine-tune (dev {earlier['metric']} {earlier['best'][earlier['metric']]:.4f}, best epoch "
                f"{earlier['best_epoch']}, {out / 'metrics.json'})")
    except (OSError, ValueError, KeyError, TypeError):  # interrupted before metrics.json, or only predictions
        held = (f"the model of an earlier fine-tune ({out / 'best'})" if (out / "best").is_dir()
                else f"the predictions of an earlier --load --predict ({kept[0]})")
    make = f" (make finetune TASK={cfg.task} ARGS=--overwrite)" if cfg.out is None else ""
    raise ValueError(f"--out {out} holds {held}; pass --overwrite to replace it{make}, or another --out to keep it")


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune (and optionally compare with random init at equal steps, and predict). Returns the summary."""
    cfg, notes = resolve_defaults(cfg)
    check_out(cfg)
    prepared = prepare(cfg)
    for note in notes + prepared.notes:
        print(note)
    summary = train(cfg, prepared)
    summary["train_examples"] = len(prepared.train_examples)
    best = summary["best"]
    print(f"dev {summary['metric']} = {best[summary['metric']]:.4f} (best epoch {summary['best_epoch']}, "
          f"{summary['steps']} steps); model in {Path(cfg.out_dir) / 'best'}")
    if cfg.compare_random:
        # Random init's strongest recipe: the same, but without --mlm-weight. Its MLM head would be fresh, with no
        # pretraining to keep, and measured it only costs random init (docs/results.md, "The auxiliary MLM loss").
        # The encoder's shape, at BERT's init std: the 0.03 in a `make pretrain` config.json is that recipe's way
        # off the MLM plateau, not part of the shape, and at full labels it cost random init 0.024 (one seed;
        # docs/results.md, "Fine-tuning from an init-0.03 encoder").
        random_cfg = cfg.replace(init="random", vocab=str(prepared.vocab_path), out=cfg.out_dir + "-random",
                                 model_config=str(Path(cfg.out_dir) / "best" / "config.json"),
                                 initializer_range=BERT_INITIALIZER_RANGE,
                                 max_steps=summary["steps"], schedule_steps=summary["schedule_steps"],
                                 patience=0, predict=None, compare_random=False,
                                 mlm_weight=0.0, overwrite=True)  # <out>-random belongs to <out>, checked above
        print(f"--- the same fine-tune from random init, {summary['steps']} steps ---")
        random_summary = train(random_cfg, prepare(random_cfg))
        metric = summary["metric"]
        comparison = {"metric": metric, "steps": summary["steps"], "pretrained_init": cfg.init,
                      "pretrained": best[metric], "random": random_summary["best"][metric]}
        summary["compare_random"] = comparison
    if cfg.compare_tfidf:
        # the strongest simple baseline: its class weighting is chosen by CV, not copied from the encoder's flag
        weightings = sorted(CLASS_WEIGHTS, key=lambda w: w != cfg.class_weight)  # the encoder's first: no-CV default
        summary["tfidf"] = tfidf_baseline(prepared.train_examples, prepared.dev_examples, prepared.spec.num_labels,
                                          cfg.seed, tuple(weightings))
    if cfg.compare_random or cfg.compare_tfidf:
        print_comparison(cfg, summary)
    if cfg.predict:
        print(f"predictions: {predict_file(Path(cfg.out_dir) / 'best', cfg.predict, device=cfg.device)}")
    return summary


def print_comparison(cfg: FinetuneConfig, summary: dict) -> None:
    """The rows that say what pretraining bought, on the same split and training examples; saved as compare.json."""
    metric, steps = summary["metric"], summary["steps"]
    # Row names carry no per-run numbers (the step count goes in the header line): finetune.cross_validate
    # averages each row by its name over seeds and folds, whose step counts differ.
    rows = {f"pretrained encoder ({cfg.init})": summary["best"][metric]}
    if "compare_random" in summary:
        recipe = "same recipe and steps" + (", no auxiliary MLM" if cfg.mlm_weight else "")
        rows[f"random init, {recipe}"] = summary["compare_random"]["random"]
    if "tfidf" in summary:
        rows["TF-IDF + logistic regression (tuned by CV on train), full documents"] = summary["tfidf"][metric]
    subset = f", train fraction {cfg.train_fraction} (stratified, seed {cfg.seed})" if cfg.train_fraction else ""
    subset += ", the encoders with balanced class weights" if cfg.class_weight == "balanced" else ""
    print(f"dev {metric} on the same split ({summary['train_examples']:,} training examples{subset}; "
          f"{steps:,} steps for each model):")
    width = max(map(len, rows))
    for name, value in rows.items():
        print(f"  {name:<{width}}  {value:.4f}")
    chosen = summary["tfidf"]["chosen"] if "tfidf" in summary else None
    if chosen:
        how = f"{chosen['folds']}-fold CV macro-F1 {chosen['cv_macro_f1']:.4f}" if chosen["folds"] else \
            "too few labels for CV: the defaults"
        low, high = chosen["ngram_range"]
        grams = f"{low}-grams" if low == high else f"{low}-{high}-grams"
        weights = "balanced class weights" if chosen["class_weight"] == "balanced" else "no class weights"
        print(f"  (TF-IDF chose {grams}, C={chosen['C']:g}, {weights}; {how})")
    atomic_write_text(Path(cfg.out_dir) / "compare.json", json.dumps(
        {"metric": metric, "steps": steps, "train_examples": summary["train_examples"],
         "train_fraction": cfg.train_fraction, "class_weight": cfg.class_weight, "rows": rows,
         "tfidf_chosen": chosen}, indent=2) + "\n")


def _main(argv: list[str]) -> int:
    cfg = parse_config(argv)
    if cfg.load:
        if not (cfg.predict or cfg.evaluate):
            raise ValueError("--load skips training: also pass --predict FILE and/or --evaluate FILE")
        ignored = flags_set(cfg, [name for name in cfg.to_dict() if name not in LOAD_FLAGS])
        if ignored:  # the model's own finetune.json decides its inputs: a flag given here would do nothing
            raise ValueError(f"--load {cfg.load}: {', '.join(ignored)} would be ignored (the model reads its inputs "
                             f"with the settings saved in its finetune.json); drop them")
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if cfg.evaluate:
            metrics = evaluate_file(cfg.load, cfg.evaluate, device=cfg.device, progress=cfg.progress)
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            print(f"{cfg.evaluate}: {json.dumps(shown)}")
        if cfg.predict:
            written = predict_file(cfg.load, cfg.predict, output_folder=cfg.out, device=cfg.device,
                                   progress=cfg.progress)
            print(f"predictions: {written}")
        return 0
    run(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 failed while running, 2 bad input, 130 interrupted (see minibert/cli.py)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
