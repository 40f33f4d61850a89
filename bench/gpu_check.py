"""`make gpu-check`: prove and measure minibert's CUDA path on one GPU, inside a hard budget of 4 minutes.

Sections, in order of priority. Each has a time estimate; one that no longer fits in the budget left is skipped and
listed as skipped, and results are written after every section, so a run cut short still leaves what it measured.

  environment  GPU name, driver, torch, CUDA and transformers versions
  correctness  bench/gpu_checks.py: HF parity fp32, gradients vs the CPU, bf16 loss, fp16 + GradScaler, an
               out-of-range id, the resume round trip, short fine-tuning runs (cls, ner) in bf16 and fp16
  throughput   bench/bench_mlm.py --device cuda on BERT-mini: minibert vs transformers, alternating in one process,
               every row bf16 + SDPA + fused AdamW, batch 256 × 128, V = 30,522; the recipe row torch.compile'd
  syncs        host syncs per pretraining step (torch.cuda.set_sync_debug_mode), from two runs of pretrain's loop
  profile      torch.profiler over recipe steps: the top kernels and the synchronising runtime calls
  pretrain     `python -m pretrain` on the embedded corpus for 800 steps (about a minute), accuracy vs the CPU's
  pipeline     batches/s of pretrain's data path alone, against the GPU's steps/s
  base         the throughput section again on BERT-base (last: compiling BERT-base takes the longest)

`--device cpu` is the smoke mode `make test` runs: tiny sizes, a 60-second budget, output written to --out only
(bench/gpu_results.json and docs/gpu.md hold GPU runs alone). Run: `python -m bench.gpu_check --help`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, for the resume check

import torch  # noqa: E402 (the variable above must be set before CUDA starts)

from minibert import BertConfig  # noqa: E402
from minibert.cli import OneLineParser  # noqa: E402
from minibert.training.io import atomic_write_text  # noqa: E402

from . import gpu_checks  # noqa: E402
from .gpu_report import CPU_ACC_AT_800, compile_seconds, render_markdown, verdicts  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


class Budget:
    """The wall-clock budget: run a section only if its estimate fits in what is left."""

    def __init__(self, seconds: float):
        self.start, self.seconds = time.monotonic(), seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)


def environment(device: torch.device) -> dict:
    import transformers

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    compute_capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version())
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip() or "unknown"
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = "unknown (nvidia-smi not found)"
    return info


def correctness(device: torch.device, out: Path, tiny: bool) -> dict:
    """Every check of bench/gpu_checks.py; fp32 ones with TF32 off."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # restored at the end
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    config = BertConfig.mini(30522 if not tiny else 200)
    if tiny:
        config = config.replace(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    dev = str(device)
    checks = {name: lambda f=f: f(config, dev) for name, f in (
        ("hf_parity_fp32", gpu_checks.hf_parity_fp32), ("gradients_vs_cpu_fp32", gpu_checks.gradients_vs_cpu),
        ("bf16_loss_vs_fp32", gpu_checks.bf16_loss), ("fp16_grad_scaler", gpu_checks.fp16_grad_scaler),
        ("out_of_range_token_id", gpu_checks.out_of_range_id))}
    # The smoke mode keeps to 60 s: three pretraining processes for the resume check would take most of it (on the
    # CPU, tests/test_resume.py runs that check), and one fine-tuning run shows the code path.
    if not tiny:
        checks["resume_round_trip_fp32"] = lambda: gpu_checks.resume_round_trip(dev, out / "resume", tiny)
    runs = [("cls", "bf16")] if tiny else [("cls", "bf16"), ("cls", "fp16"), ("ner", "bf16"), ("ner", "fp16")]
    for task, precision in runs:
        checks[f"finetune_{task}_{precision}"] = (
            lambda t=task, p=precision: gpu_checks.finetune_run(t, p, dev, out / "finetune", tiny))
    results = {}
    for name, check in checks.items():
        started = time.perf_counter()
        try:
            results[name] = check()
        except Exception as error:  # one broken check must not hide the others
            results[name] = gpu_checks.result(float("nan"), 0.0, False, f"{type(error).__name__}: {error}"[:300])
        results[name]["seconds"] = round(time.perf_counter() - started, 2)
        print(f"  {'PASS' if results[name]['passed'] else 'FAIL'} {name}: {results[name]['value']:.3g} "
              f"(limit {results[name]['limit']:g}) {results[name]['detail']}", flush=True)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return results


def throughput(device: torch.device, out: Path, tiny: bool, model: str) -> dict:
    """bench/bench_mlm.py's alternating comparison on `device`; returns its JSON report."""
    from . import bench_mlm

    path = out / f"bench_{model}.json"
    argv = ["--device", str(device), "--model", model, "--json", str(path), "--markdown", str(out / "unused.md")]
    argv += (["--tiny", "--seq-lens", "16", "--batch-size", "2", "--rounds", "2", "--warmup", "1", "--peak-size",
              "128"] if tiny else ["--seq-lens", "128", "--batch-size", "256", "--vocab-size", "30522", "--rounds",
                                   "10", "--warmup", "3", "--peak-size", "8192"])
    return bench_mlm.main(argv)


def pretrain_argv(out: Path, tiny: bool, steps: int, device: torch.device, small_data: bool = False) -> list[str]:
    """`python -m pretrain` arguments; tiny: a tiny model; small_data (or tiny): the small corpus, short rows."""
    argv = ["--device", str(device), "--max-steps", str(steps), "--out", str(out), "--overwrite"]
    if tiny or small_data:
        argv += ["--corpus", str(gpu_checks.small_corpus(out.parent)), "--cache-dir", str(out.parent / "cache"),
                 "--max-len", "32", "--batch-size", "8", "--eval-sequences", "16", "--matmul-peak-gflops", "1"]
    if tiny:
        argv += ["--model.hidden_size", "32", "--model.num_hidden_layers", "1", "--model.num_attention_heads", "2",
                 "--model.intermediate_size", "64"]
    return argv


def count_syncs(device: torch.device, out: Path, tiny: bool) -> dict:
    """Host syncs per step of pretrain's loop: (syncs in a 2N-step run − syncs in an N-step run) / N, so start-up,
    the final log, evaluation and checkpoint (the same in both runs) cancel out. The count depends on the step's
    structure, not its size, so the small corpus serves (BERT-mini on a GPU, tiny on the CPU, which has none)."""
    from pretrain.config import parse_config
    from pretrain.train import train

    counts, n = {}, 2 if tiny else 20
    for steps in (n, 2 * n):
        argv = pretrain_argv(out / f"syncs{steps}", tiny, steps, device, small_data=True) + [
            "--log-every", "1000", "--eval-every", "1000", "--checkpoint-every", "1000", "--eval-sequences", "16",
            "--matmul-peak-gflops", "1"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                train(parse_config(argv))
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        counts[steps] = sum("synchroniz" in str(w.message).lower() for w in caught)
    per_step = (counts[2 * n] - counts[n]) / n if device.type == "cuda" else None
    return {"syncs_in_run": counts, "syncs_per_step": per_step,
            "method": f"torch.cuda.set_sync_debug_mode('warn') warnings: {2 * n}-step run minus {n}-step run, / {n}"}


def profile(device: torch.device, tiny: bool) -> dict:
    """torch.profiler over a few steps of the recipe row (bf16, compiled on a GPU): top kernels, sync calls."""
    from torch.profiler import ProfilerActivity

    from . import bench_mlm

    config = BertConfig.mini(30522) if not tiny else BertConfig.mini(200).replace(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    variant = bench_mlm.variants(device.type)["minibert, make pretrain recipe"]
    B, T = (2, 16) if tiny else (256, 128)
    batches = bench_mlm.make_batches(config, B, T, variant.mask_rate, 2, seed=0)
    step = bench_mlm.make_train_step(bench_mlm.build_model(variant, config), batches, variant.padding_mask,
                                     "bf16", device, variant.compile)
    for _ in range(3):  # warm-up (and compile) outside the trace
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(5):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = events.table(sort_by=sort, row_limit=12)
    syncs = {e.key: e.count for e in events if "Synchronize" in e.key}
    print(table, flush=True)
    return {"steps": 5, "sorted_by": sort, "top": table, "sync_calls": syncs}


def pretrain_minute(device: torch.device, out: Path, tiny: bool, seconds: float) -> dict:
    """`python -m pretrain` for 800 steps (tiny: 5) in a subprocess; its held-out accuracy next to the CPU's."""
    steps = 5 if tiny else 800
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pretrain", *pretrain_argv(out, tiny, steps, device)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=seconds)
        code, tail = done.returncode, done.stderr.strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        code, tail = None, [f"stopped after {seconds:.0f} s"]
    results = json.loads((out / "results.json").read_text()) if code == 0 else {}
    return {"steps": steps, "seconds": round(time.perf_counter() - started, 1), "exit": code, "error": tail,
            "eval_acc": results.get("eval_acc"), "unigram_acc": results.get("unigram_acc"),
            "cpu_eval_acc_at_800": CPU_ACC_AT_800}


def input_pipeline(out: Path, tiny: bool, gpu_steps_per_s: float | None) -> dict:
    """Batches/s of the data path alone (rows, masking, pinning, micro-batch split, CPU checks): must beat the GPU."""
    from pretrain.batching import PretrainingBatches, split_micro_batches
    from pretrain.config import PretrainConfig
    from pretrain.data import prepare_corpus
    from pretrain.masking import DynamicMasking

    cfg = PretrainConfig()
    if tiny:
        corpus_path, cache_dir = gpu_checks.small_corpus(out), out / "cache"
    else:  # the embedded corpus the pretrain section generated and cached
        cache_dir = REPO_ROOT / cfg.cache_dir
        corpus_path = next(cache_dir.glob("default_corpus-*.tsv"), None)
        if corpus_path is None:
            raise RuntimeError(f"no cached embedded corpus in {cache_dir}: the pretrain section did not run (budget) "
                               f"or did not get as far as writing it; run `make pretrain` once, or pass --tiny")
    corpus = prepare_corpus(corpus_path, cfg.vocab, cache_dir=cache_dir)
    B, T = (8, 32) if tiny else (256, 128)
    batches = PretrainingBatches(corpus, list(range(corpus.num_docs)), T, B,
                                 DynamicMasking.from_tokenizer(corpus.tokenizer, cfg.mask_rate), pack=True)
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < (1.0 if tiny else 5.0):
        split_micro_batches(next(batches), 1)
        count += 1
    rate = count / (time.perf_counter() - started)
    return {"batch": [B, T], "batches_per_s": rate, "gpu_steps_per_s": gpu_steps_per_s,
            "keeps_up": None if gpu_steps_per_s is None else rate > gpu_steps_per_s}


def main(argv=None) -> dict:
    p = OneLineParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (the real run) or cpu (the smoke mode of make test)")
    p.add_argument("--budget", type=float, default=None, help="seconds; default 225 on a GPU, 60 on the CPU")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "gpu-check", help="scratch folder")
    p.add_argument("--json", type=Path, default=None, help="default bench/gpu_results.json (GPU), <out>/ (CPU)")
    p.add_argument("--markdown", type=Path, default=None, help="default docs/gpu.md (GPU), <out>/ (CPU)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu-check: --device cuda but torch sees no CUDA GPU; run on a GPU machine, or DEVICE=cpu "
                         "for the smoke mode")
    tiny = device.type == "cpu"
    budget = Budget(args.budget or (60 if tiny else 225))
    json_path = args.json or (args.out / "gpu_results.json" if tiny else REPO_ROOT / "bench" / "gpu_results.json")
    md_path = args.markdown or (args.out / "gpu.md" if tiny else REPO_ROOT / "docs" / "gpu.md")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "mode": "smoke" if tiny else "gpu",
              "budget_s": budget.seconds, "environment": environment(device), "sections": {}, "skipped": []}
    mini = {}
    # (name, estimated seconds on a GPU and in the smoke mode, function): the estimates decide what to skip
    sections = [
        ("correctness", (75, 15), lambda: correctness(device, args.out, tiny)),
        ("throughput", (50, 8), lambda: mini.update(throughput(device, args.out, tiny, "mini")) or mini),
        ("syncs", (20, 8), lambda: count_syncs(device, args.out, tiny)),
        ("profile", (30, 3), lambda: profile(device, tiny)),
        ("pretrain", (75, 12), lambda: pretrain_minute(device, args.out / "pretrain", tiny, min(90, budget.left()))),
        ("pipeline", (8, 2), lambda: input_pipeline(args.out, tiny, recipe_steps_per_s(mini))),
        ("base", (90, 8), lambda: throughput(device, args.out, tiny, "base")),
    ]
    for name, (gpu_estimate, smoke_estimate), run in sections:
        estimate = smoke_estimate if tiny else gpu_estimate
        if budget.left() < estimate:
            report["skipped"].append(f"{name} (needs ~{estimate} s, {max(budget.left(), 0):.0f} s left)")
            print(f"SKIPPED {name}: needs ~{estimate} s, {max(budget.left(), 0):.0f} s of the budget left", flush=True)
            continue
        print(f"== {name} ({budget.left():.0f} s left)", flush=True)
        started = time.perf_counter()
        try:
            report["sections"][name] = {"status": "done", "result": run()}
        except KeyboardInterrupt:  # the outer `timeout -s INT` fired: keep what was measured, say what was cut
            report["sections"][name] = {"status": "cut off by the timeout"}
            later = [n for n, _, _ in sections][[n for n, _, _ in sections].index(name) + 1:]
            report["skipped"] += [f"{name} (cut off by the timeout)"] + [f"{n} (after the timeout)" for n in later]
            print(f"TIMEOUT during {name}; skipped: {', '.join(report['skipped'])}", flush=True)
            break
        except Exception as error:  # report and go on: the next section may still work
            report["sections"][name] = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:400]}
            print(f"FAILED {name}: {report['sections'][name]['error']}", flush=True)
        report["sections"][name]["seconds"] = round(time.perf_counter() - started, 1)
        report["elapsed_s"] = round(time.monotonic() - budget.start, 1)
        report["verdicts"] = verdicts(report)
        atomic_write_text(json_path, json.dumps(report, indent=2, default=str) + "\n")  # partial results survive
    report["elapsed_s"] = round(time.monotonic() - budget.start, 1)
    report["verdicts"] = verdicts(report)
    report["compile_s"] = compile_seconds(report)  # torch.compile's time, reported apart from the timed steps
    atomic_write_text(json_path, json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(md_path, render_markdown(report))
    print(f"gpu-check: {report['elapsed_s']:.0f} s of {budget.seconds:.0f} (torch.compile and warm-up of the "
          f"compiled rows: {report['compile_s']:.0f} s); skipped: "
          f"{', '.join(report['skipped']) or 'nothing'}; wrote {json_path} and {md_path}", flush=True)
    return report


def recipe_steps_per_s(bench_report: dict) -> float | None:
    """Steps/s of the mini recipe row in the throughput section (None if it did not run)."""
    for block in bench_report.get("results", []):
        for row in block["variants"].values():
            if row["setting"] == "(b)" and row["implementation"] == "minibert":
                return 1 / row["step_s_median"]
    return None


if __name__ == "__main__":
    main()
