"""docs/gpu.md and the target verdicts, rendered from a `make gpu-check` report (bench/gpu_check.py).

With no GPU report (`python -m bench.gpu_report` writes this), every measured value reads "not yet measured": the
page then still says what the check runs, what was changed for the GPU, and which check runs each CUDA branch.
"""

from __future__ import annotations

from pathlib import Path

# held-out MLM accuracy of `python -m pretrain --max-steps 800` (the default recipe: 760 small + 40 grown steps) on the
# 2-core CPU, measured at 21339da (2026-12-06): the GPU run of the same command should land near it
CPU_ACC_AT_800 = 0.355

NOT_MEASURED = "not yet measured"
# Dense bf16 tensor-core peaks from NVIDIA's datasheets, FLOP/s (no 2:4 sparsity). H200 has H100 SXM's compute.
# Dense bf16 tensor-core peaks (datasheets print twice these "with sparsity"); the first name found in the GPU's wins.
DATASHEET_BF16 = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
TARGETS = (("BERT-mini recipe vs transformers (tokens/s ratio)", "mini", "(b)", "ratio", 3.0),
           ("BERT-mini minibert vs transformers, equal hyperparameters", "mini", "(a)", "ratio", 1.5),
           ("BERT-base recipe, MFU vs the dense bf16 datasheet peak", "base", "(b)", "mfu", 0.45),
           ("BERT-mini recipe, MFU vs the dense bf16 datasheet peak", "mini", "(b)", "mfu", 0.20))

# Every CUDA branch in minibert/, pretrain/ and finetune/, and the gpu-check section that executes it.
CUDA_BRANCHES = (
    ("minibert/training/device.py: pick_device (cuda:N made the current device), autocast_dtype (bf16 if "
     "supported, else fp16), autocast on CUDA",
     "correctness (bf16 loss, fp16 GradScaler, fine-tuning runs), pretrain"),
    ("minibert/training/device.py: make_grad_scaler active for fp16", "correctness (fp16_grad_scaler, "
     "finetune_*_fp16)"),
    ("minibert/training/device.py: move_batch non_blocking copies from pinned memory", "pretrain, syncs"),
    ("minibert/training/mfu.py: measure_matmul_peak (8192² on a GPU) with torch.cuda.synchronize",
     "pretrain, throughput"),
    ("pretrain/budget.py: the --time-budget probe in the loop's precision, fused AdamW, CUDA RNG restored",
     "not run: gpu-check's pretrain section is step-based"),
    ("minibert/training/checkpoint.py: CUDA RNG states saved and restored", "correctness (resume_round_trip_fp32)"),
    ("minibert/input_checks.py: check_inputs on a CUDA tensor (one clear line, no device-side assert)",
     "correctness (out_of_range_token_id)"),
    ("minibert/model.py: sparse MLM head with positions found on the CPU (no boolean gather on the GPU)",
     "pretrain, syncs, correctness (resume)"),
    ("pretrain/batching.py: pin_memory when CUDA is available; Prefetcher thread", "pretrain, syncs, pipeline"),
    ("pretrain/train.py: fused AdamW, Prefetcher, device-side finite record", "pretrain, syncs"),
    ("finetune/train.py: fused AdamW, fp16 GradScaler, device-side loss, checks on the CPU batch",
     "correctness (finetune_cls/ner_bf16/fp16)"),
    ("minibert/training/distributed.py and pretrain/train.py: NCCL, one GPU per rank, DDP device_ids",
     "excluded: needs more than one GPU; DDP stays tested with gloo on the CPU (tests/test_ddp.py)"),
)


def datasheet_peak(gpu_name: str | None) -> float | None:
    for key, flops in DATASHEET_BF16:
        if gpu_name and key in gpu_name:
            return flops
    return None


def rows(report: dict, model: str) -> dict:
    """The throughput rows of one model ('mini' | 'base'), or {} if that section did not run."""
    section = report.get("sections", {}).get("throughput" if model == "mini" else "base", {})
    results = (section.get("result") or {}).get("results") or [{}]
    return results[0].get("variants", {})


def compile_seconds(report: dict) -> float:
    """Warm-up seconds of the torch.compile'd rows (compilation dominates them), both throughput sections."""
    return round(sum(row.get("warmup_s", 0) for model in ("mini", "base") for row in rows(report, model).values()
                     if row.get("compile")), 1)


def verdicts(report: dict) -> list[dict]:
    """The issue's four targets, each with its measured value or None where the run did not measure it."""
    peak = datasheet_peak(report["environment"].get("gpu"))
    checks = []
    for label, model, setting, measure, target in TARGETS:
        value = None
        for name, row in rows(report, model).items():
            if row["setting"] == setting and row["implementation"] == "minibert" and "15%" not in name:
                if measure == "ratio":
                    value = row["ratio_vs_transformers"]
                elif peak:
                    value = row["tokens_per_s"] * row["useful_flops_per_token"] / peak
        checks.append({"target": label, "goal": target, "value": value,
                       "met": None if value is None else value >= target})
    return checks


def shown(value, fmt: str = "{:.3g}") -> str:
    return NOT_MEASURED if value is None else fmt.format(value)


def render_markdown(report: dict | None) -> str:
    gpu = report is not None and report.get("mode") == "gpu"
    env = report["environment"] if gpu else {}
    sections = report["sections"] if gpu else {}
    lines = ["# The CUDA path on one GPU (`make gpu-check`)", "",
             "Generated by `python -m bench.gpu_check` (`make gpu-check`); raw numbers in `bench/gpu_results.json`. "
             "Do not edit by hand." if gpu else
             f"**Status: {NOT_MEASURED}.** No GPU run has been committed yet: run `make gpu-check` on a machine with "
             "one NVIDIA GPU (`make gpu-check SETUP=none PYTHON=python3` uses its preinstalled PyTorch) and commit "
             "`bench/gpu_results.json` and this page, which it rewrites.", ""]
    lines += ["## Running it", "",
              "`make gpu-check` (a virtualenv, as every target) or `make gpu-check SETUP=none PYTHON=python3` (the "
              "machine's own Python and PyTorch, no install, no network). It imports torch, numpy, safetensors, "
              "tokenizers, tqdm, matplotlib and transformers; google-crc32c is imported only to read TF checkpoints, "
              "which the check never does. Budget: 225 s inside `timeout 240`; a section that no longer fits is "
              "skipped and named, and the results are written after every section. `python -m bench.gpu_check --budget 600` "
              "(outside make's timeout) gives BERT-base room on a slower card.", ""]
    lines += ["## Machine", "",
              f"GPU {env.get('gpu', NOT_MEASURED)}, driver {env.get('driver', NOT_MEASURED)}, torch "
              f"{env.get('torch', NOT_MEASURED)}, CUDA {env.get('cuda', NOT_MEASURED)}, transformers "
              f"{env.get('transformers', NOT_MEASURED)}; run on {report['date'] if gpu else NOT_MEASURED}, "
              f"{report.get('elapsed_s', 0):.0f} s of a {report['budget_s']:.0f} s budget, of which torch.compile "
              f"(with the compiled rows' warm-up) {report.get('compile_s', 0):.0f} s" if gpu else
              f"GPU, driver, torch, CUDA: {NOT_MEASURED}.", ""]
    if gpu and report["skipped"]:
        lines += ["Skipped for lack of time: " + "; ".join(report["skipped"]) + ".", ""]
    lines += ["## Correctness on CUDA (fp32 checks with TF32 off)", "", "| check | limit | value | passed |",
              "|---|---|---|---|"]
    checks = (sections.get("correctness") or {}).get("result") or {}
    names = list(checks) or ["hf_parity_fp32", "gradients_vs_cpu_fp32", "bf16_loss_vs_fp32", "fp16_grad_scaler",
                             "out_of_range_token_id", "resume_round_trip_fp32", "finetune_cls_bf16",
                             "finetune_cls_fp16", "finetune_ner_bf16", "finetune_ner_fp16"]
    for name in names:
        c = checks.get(name)
        lines.append(f"| {name} | {c['limit']:g} | {c['value']:.3g} ({c['detail']}) | {c['passed']} |" if c
                     else f"| {name} | | {NOT_MEASURED} | |")
    lines += ["", "## Pretraining throughput: minibert vs transformers, alternating in one process", "",
              "Every row in bf16 autocast with SDPA attention and fused AdamW, batch 256 × 128, V = 30,522; tokens "
              "are non-padding tokens. minibert's rows use the sparse MLM head but `(a) dense`, which projects "
              "every position as transformers does. The recipe row packs rows, uses dropout 0 and "
              "torch.compile; its compile (+ warm-up) time is the `warm-up s` column, apart from the timed steps.", "",
              "| model | row | tokens/s | × transformers | MFU vs measured bf16 matmul | warm-up s |", "|---|---|---|---|---|---|"]
    for model in ("mini", "base"):
        measured = rows(report, model) if gpu else {}
        for name, r in measured.items():
            lines.append(f"| BERT-{model} | {name} | {r['tokens_per_s']:,.0f} | {r['ratio_vs_transformers']:.2f}× "
                         f"| {r['mfu']:.0%} | {r.get('warmup_s', 0):.1f} |")
        if not measured:
            lines.append(f"| BERT-{model} | all rows | {NOT_MEASURED} | | | |")
    lines += ["", "Targets (same GPU, same run):", ""]
    for v in (report.get("verdicts") if gpu else None) or verdicts({"environment": {}, "sections": {}}):
        value = shown(v["value"], "{:.0%}" if "MFU" in v["target"] else "{:.2f}×")
        lines.append(f"- {v['target']}: {value} (target ≥ {v['goal']:g}{'' if 'MFU' in v['target'] else '×'})"
                     + ("" if v["met"] is None else f": {'met' if v['met'] else 'NOT met'}"))
    syncs = (sections.get("syncs") or {}).get("result") or {}
    profile = (sections.get("profile") or {}).get("result") or {}
    pretrain = (sections.get("pretrain") or {}).get("result") or {}
    pipeline = (sections.get("pipeline") or {}).get("result") or {}
    lines += ["", "## Host syncs, profile, input pipeline, an end-to-end minute", "",
              f"- Host syncs per pretraining step (outside log/checkpoint steps): {shown(syncs.get('syncs_per_step'))}.",
              f"- Synchronising runtime calls in 5 profiled recipe steps: "
              f"{profile.get('sync_calls', NOT_MEASURED) if profile else NOT_MEASURED}.",
              f"- Input pipeline: {shown(pipeline.get('batches_per_s'), '{:.1f}')} batches/s of 256 × 128 against "
              f"{shown(pipeline.get('gpu_steps_per_s'), '{:.1f}')} GPU steps/s.",
              "- `python -m pretrain` on the GPU, 800 steps: held-out MLM accuracy " + (
                  f"{pretrain['eval_acc']:.3f} in {pretrain['seconds']:.0f} s" if pretrain.get("eval_acc") is not None
                  else NOT_MEASURED) + f" (the CPU's, 2-core, same command: {CPU_ACC_AT_800:.3f}).", ""]
    if profile:
        lines += ["Top kernels (torch.profiler):", "", "```", profile["top"].rstrip(), "```", ""]
    lines += ["## What the training step does for the GPU", "",
              "- No host sync inside a one-GPU step (under DDP, one: the all-reduce of the step's masked-token "
              "count, `minibert/training/accumulation.py`): ids and labels are validated on the CPU batch before "
              "the copy (the "
              "model's own range checks are off in the loops); the masked positions are found on the CPU "
              "(`prediction_positions`), so the sparse MLM head gathers with an index of known size instead of a "
              "boolean mask; loss, accuracy and an \"all finite\" record stay on the device and are read at log steps "
              "and before every checkpoint or export, so a non-finite run still stops before it writes bad weights.",
              "- Pinned batches, `non_blocking` copies, and a prefetching thread that builds, checks and pins the next "
              "batches (`pretrain/batching.py:Prefetcher`); fused AdamW in both loops.",
              "- One gradient-accumulation rule for both loops (`minibert/training/accumulation.py`).",
              f"- Measured effect of each change on a GPU: {NOT_MEASURED if not gpu else 'see the sections above'}.",
              "", "## CUDA branches and the gpu-check section that runs each", "", "| branch | run by |", "|---|---|"]
    lines += [f"| {branch} | {by} |" for branch, by in CUDA_BRANCHES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # write the "not yet measured" page
    from minibert.cli import OneLineParser  # imports torch: only when run, not when gpu_check imports this module
    from minibert.training.io import atomic_write_text

    parser = OneLineParser(prog="python -m bench.gpu_report", description="writes the gpu.md page of a machine "
                           "without a GPU run: every GPU number 'not yet measured' (make gpu-check fills them in)")
    parser.add_argument("target", nargs="?", type=Path, help="the page to write (default docs/gpu.md)",
                        default=Path(__file__).resolve().parent.parent / "docs" / "gpu.md")
    atomic_write_text(parser.parse_args().target, render_markdown(None))
