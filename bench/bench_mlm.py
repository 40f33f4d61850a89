"""`make bench`: MLM training speed of minibert against the `transformers` BertForMaskedLM a user would otherwise pick.

What is timed: one training step = forward + MLM loss + backward + AdamW step, fp32 on the CPU, BERT-mini
(H256 L4 A4 I1024), batch 32, sequence length 128 and 256, in ONE process. The implementations are ALTERNATED
step by step (the order rotates every round), so a burst of load from another process hits all of them alike,
and each is summarised by the MEDIAN step time, which ignores the odd slow step. The optimizer is the same on
both sides: torch's fused AdamW, the default of transformers' Trainer since torch 2.8, so only model code differs.

Two comparisons (the rows of VARIANTS):
  (a) equal hyperparameters: dropout 0.1 everywhere, 15% of positions masked, a tokenizer-style attention_mask
      passed on both sides. transformers projects every position onto the vocabulary (its default, what a user
      gets); minibert projects only the masked ones (sparse MLM, model.sparse_mlm_logits).
  (b) minibert's recommended pretraining recipe against transformers' defaults: attention dropout 0 (MosaicBERT,
      Portes et al. 2023; Cramming, Geiping & Goldstein 2022), packed sequences so there is no padding and no
      attention_mask, and a 30% mask rate (Wettig et al. 2023, "Should You Mask 15% in MLM?").

模型算力利用率 MFU = useful FLOPs/s ÷ an fp32 matmul peak measured in this same run (minibert/training/mfu.py).
Useful FLOPs use ONE formula for both sides, with the vocabulary projection counted at the masked positions
only, so the full-vocabulary logits transformers computes at unmasked positions count as waste.

Dimension legend: B batch size, T sequence length, V vocabulary size, M masked positions in a batch.
Run: `python -m bench.bench_mlm` (writes bench/results.json and docs/bench.md); `--help` lists the knobs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from minibert import BertConfig, BertForMaskedLM
from minibert.training.io import atomic_write_text
from minibert.training.mfu import measure_matmul_peak, training_flops_per_token

REPO_ROOT = Path(__file__).resolve().parent.parent
# The embedded default corpus has 7,003 content IDs; with the 5 specials its vocabulary has 7,008 entries.
DEFAULT_VOCAB_SIZE = 7008
CLS_ID, SEP_ID, MASK_ID, FIRST_REAL_ID = 2, 3, 4, 5  # minibert's whitespace-vocab specials ([PAD]=0, [UNK]=1)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Variant:
    """One row of the table: which implementation, with which training hyperparameters."""
    setting: str  # "(a)", "(b)" or "reference"
    implementation: str  # "transformers" or "minibert"
    hidden_dropout: float
    attention_dropout: float
    mask_rate: float  # fraction of positions that get an MLM label
    padding_mask: bool  # True: pass attention_mask as a tokenizer would; False: packed, attention_mask=None


VARIANTS = {
    "transformers defaults": Variant("reference", "transformers", 0.1, 0.1, 0.15, padding_mask=True),
    "minibert, equal hyperparameters": Variant("(a)", "minibert", 0.1, 0.1, 0.15, padding_mask=True),
    "minibert, pretraining recipe": Variant("(b)", "minibert", 0.1, 0.0, 0.30, padding_mask=False),
}
REFERENCE = "transformers defaults"
TARGETS = {"(a)": {"ratio": 1.6}, "(b)": {"ratio": 2.5, "mfu": 0.55}}  # issue 4, "Speed: make bench"


def build_model(variant: Variant, config: BertConfig) -> torch.nn.Module:
    """The model for one variant, in training mode. Both sides start from the same config fields."""
    config = config.replace(hidden_dropout_prob=variant.hidden_dropout,
                            attention_probs_dropout_prob=variant.attention_dropout)
    if variant.implementation == "transformers":
        import transformers  # bench/test-only dependency, never imported by minibert itself

        # minibert's config uses HF's field names, so the same dict builds the HF model.
        model = transformers.BertForMaskedLM(transformers.BertConfig(**config.to_dict()))
    else:
        model = BertForMaskedLM(config)
    return model.train()


def make_batches(config: BertConfig, batch_size: int, seq_len: int, mask_rate: float, count: int,
                 seed: int) -> list[dict]:
    """`count` MLM batches: [CLS] random real IDs [SEP], with `mask_rate` of the non-special positions masked.

    Speed does not depend on which IDs appear, so the IDs are uniform; every masked position becomes [MASK]
    (the 80/10/10 rule changes no cost). Labels hold the original ID at masked positions and -100 elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(FIRST_REAL_ID, config.vocab_size, (batch_size, seq_len), generator=generator)  # [B,T]
        ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
        masked = torch.rand(batch_size, seq_len, generator=generator) < mask_rate  # [B,T]
        masked[:, 0] = masked[:, -1] = False  # specials are never predicted
        labels = torch.where(masked, ids, IGNORE_INDEX)  # [B,T]
        batches.append({"input_ids": ids.masked_fill(masked, MASK_ID), "labels": labels})
    return batches


def make_train_step(model: torch.nn.Module, batches: list[dict], padding_mask: bool):
    """A closure that runs one training step on the next batch (cycling) and returns nothing."""
    # Deduplicate: transformers' tied decoder weight is reachable from two modules.
    params = list({id(p): p for p in model.parameters()}.values())
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=True)
    # A tokenizer returns attention_mask = 1 everywhere for a batch without padding; packed batches pass None.
    masks = [torch.ones_like(b["input_ids"]) if padding_mask else None for b in batches]  # [B,T] or None
    position = [0]

    def step() -> None:
        i = position[0] % len(batches)
        position[0] += 1
        loss = model(input_ids=batches[i]["input_ids"], attention_mask=masks[i], labels=batches[i]["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_alternating(steps: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per step for each named step function, run round-robin; the order rotates every round."""
    names = list(steps)
    for _ in range(warmup):  # first steps pay for memory allocation and thread-pool start-up
        for name in names:
            steps[name]()
    seconds = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            steps[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def onednn_matmul_peak(size: int, repeats: int = 5) -> float | None:
    """FLOP/s of the best of `repeats` fp32 [size,size] GEMMs run by oneDNN, or None where torch lacks oneDNN.

    Why a second peak: torch's fp32 CPU matmul calls MKL, and MKL takes its AVX2 code path on AMD CPUs, about
    half of what AVX-512 hardware can do. oneDNN picks its kernels by the instruction set, not the vendor, so it
    shows the hardware's real fp32 GEMM peak. torch exposes oneDNN's fp32 GEMM only through a private op
    (inference-style, no autograd), so the model cannot use it for training; we only use it as a yardstick."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        a = torch.randn(size, size).to_mkldnn()  # [size,size] in oneDNN's layout
        w = torch.randn(size, size).to_mkldnn()
        torch._C._nn.mkldnn_linear(a, w, None)  # warm-up: kernel selection, thread pool
    except (AttributeError, RuntimeError):
        return None
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch._C._nn.mkldnn_linear(a, w, None)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def measure_peaks(size: int) -> dict[str, float]:
    """Both fp32 matmul peaks, in FLOP/s: torch's own matmul, and oneDNN's where available."""
    peaks = {"torch_matmul": measure_matmul_peak(torch.device("cpu"), torch.float32, size=size)}
    onednn = onednn_matmul_peak(size)
    if onednn is not None:
        peaks["onednn"] = onednn
    return peaks


def bench_seq_len(config: BertConfig, seq_len: int, args) -> dict:
    """Time every variant at one sequence length; returns the measured rows and the matmul peaks."""
    steps, fractions = {}, {}
    for i, (name, variant) in enumerate(VARIANTS.items()):
        torch.manual_seed(args.seed + i)
        batches = make_batches(config, args.batch_size, seq_len, variant.mask_rate, args.num_batches, args.seed)
        fractions[name] = statistics.fmean((b["labels"] != IGNORE_INDEX).float().mean().item() for b in batches)
        steps[name] = make_train_step(build_model(variant, config), batches, variant.padding_mask)
    peaks = [measure_peaks(args.peak_size)]
    load_before = os.getloadavg()[0]
    seconds = time_alternating(steps, args.rounds, args.warmup)
    load_after = os.getloadavg()[0]
    peaks.append(measure_peaks(args.peak_size))
    # The best each GEMM showed, before or after the timed steps: a conservative denominator on a noisy machine.
    torch_peak = max(p["torch_matmul"] for p in peaks)
    hardware_peak = max(max(p.values()) for p in peaks)

    tokens = args.batch_size * seq_len
    rows = {}
    for name, variant in VARIANTS.items():
        median = statistics.median(seconds[name])
        flops_per_token = training_flops_per_token(config, seq_len, fractions[name])
        useful_flops_per_s = tokens / median * flops_per_token
        rows[name] = {**asdict(variant), "tokens_per_s": tokens / median, "step_s_median": median,
                      "step_s_min": min(seconds[name]), "step_s_max": max(seconds[name]),
                      "step_s_all": seconds[name], "masked_fraction": fractions[name],
                      "useful_flops_per_token": flops_per_token,
                      "mfu": useful_flops_per_s / hardware_peak, "mfu_vs_torch_matmul": useful_flops_per_s / torch_peak}
    for row in rows.values():
        row["ratio_vs_transformers"] = row["tokens_per_s"] / rows[REFERENCE]["tokens_per_s"]
    return {"seq_len": seq_len, "matmul_peak_flops": hardware_peak, "torch_matmul_peak_flops": torch_peak,
            "matmul_peaks_measured": peaks, "load_average_1min": [load_before, load_after], "variants": rows}


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    return {"cpu": cpu, "logical_cores": os.cpu_count(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}


def check_targets(results: list[dict]) -> list[dict]:
    """One entry per (setting, seq_len, measure) target of the issue, with the measured value and pass/fail.
    MFU is judged against the hardware peak (the larger of the two measured peaks)."""
    checks = []
    for block in results:
        for row in block["variants"].values():
            for measure, goal in TARGETS.get(row["setting"], {}).items():
                value = row["ratio_vs_transformers"] if measure == "ratio" else row["mfu"]
                checks.append({"setting": row["setting"], "seq_len": block["seq_len"], "measure": measure,
                               "target": goal, "value": value, "met": value >= goal})
    return checks


def render_markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        "# Speed: minibert vs transformers (`make bench`)", "",
        f"Generated by `python -m bench.bench_mlm` on {report['date']}; re-run `make bench` to refresh "
        "(do not edit by hand). Raw numbers, every step time included: `bench/results.json`.", "",
        f"**Machine:** {m['cpu']}, {m['logical_cores']} logical cores, torch {m['torch']}, transformers "
        f"{m['transformers']}, {m['torch_threads']} torch threads, Python {m['python']}.", "",
        f"**What is timed:** one training step (forward + MLM loss + backward + fused AdamW step), fp32 on the CPU, "
        f"BERT-mini (H{s['hidden_size']} L{s['num_hidden_layers']} A{s['num_attention_heads']} "
        f"I{s['intermediate_size']}), vocabulary V={s['vocab_size']:,}, batch {s['batch_size']}. The implementations "
        f"alternate step by step in one process; tokens/s = B·T ÷ the median of {s['rounds']} steps "
        f"(after {s['warmup']} warm-up steps each).", "",
        "**MFU** = useful training FLOPs/s ÷ a fp32 matmul peak measured in the same run, before and after the "
        "timed steps. Useful FLOPs = 3 × forward, with the vocabulary projection counted at masked positions only: "
        "one formula for both implementations. Two peaks are measured: torch's own matmul (MKL, which runs its "
        "AVX2 code on AMD CPUs) and oneDNN's GEMM (AVX-512 where the CPU has it). The MFU column divides by the "
        "larger, the hardware's; the last column by torch's matmul, the most any PyTorch fp32 training step "
        "here can use.", "",
        "| setting | T | implementation | dropout hidden / attn | mask rate | attention_mask | tokens/s "
        "| step s, median (min–max) | × transformers | MFU | MFU vs torch matmul |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for block in report["results"]:
        for name, r in block["variants"].items():
            lines.append(
                f"| {r['setting']} | {block['seq_len']} | {name} "
                f"| {r['hidden_dropout']} / {r['attention_dropout']} | {r['mask_rate']:.2f} "
                f"| {'passed' if r['padding_mask'] else 'None (packed)'} | {r['tokens_per_s']:,.0f} "
                f"| {r['step_s_median']:.3f} ({r['step_s_min']:.3f}–{r['step_s_max']:.3f}) "
                f"| {r['ratio_vs_transformers']:.2f}× | {r['mfu']:.0%} | {r['mfu_vs_torch_matmul']:.0%} |")
    lines += ["", "Matmul peaks (GFLOP/s, before / after the timed steps) and the 1-minute load average:", ""]
    for block in report["results"]:
        lo, hi = block["load_average_1min"]
        measured = "; ".join(f"{kind} " + " / ".join(f"{p.get(kind, 0) / 1e9:,.0f}" for p in block["matmul_peaks_measured"])
                             for kind in block["matmul_peaks_measured"][0])
        lines.append(f"- T={block['seq_len']}: {measured}; load {lo:.2f} / {hi:.2f} on {m['logical_cores']} cores")
    lines += ["", "Targets (issue 4):", ""]
    for c in report["targets"]:
        shown = f"{c['value']:.0%} MFU (target ≥ {c['target']:.0%})" if c["measure"] == "mfu" \
            else f"{c['value']:.2f}× transformers (target ≥ {c['target']}×)"
        lines.append(f"- {c['setting']} T={c['seq_len']}: {shown}: {'met' if c['met'] else 'NOT met'}")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.bench_mlm", description=__doc__.split("\n")[0])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per implementation and sequence length")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per implementation first")
    p.add_argument("--num-batches", type=int, default=4, help="distinct batches cycled through")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--peak-size", type=int, default=2048, help="side of the square matmul that measures the peak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a tiny model (H32 L1 A2 I64): a seconds-long smoke run")
    p.add_argument("--json", type=Path, default=REPO_ROOT / "bench" / "results.json")
    p.add_argument("--markdown", type=Path, default=REPO_ROOT / "docs" / "bench.md")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = BertConfig.mini(args.vocab_size)
    if args.tiny:
        config = config.replace(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    if max(args.seq_lens) > config.max_position_embeddings:
        raise SystemExit(f"--seq-lens {max(args.seq_lens)} > max_position_embeddings="
                         f"{config.max_position_embeddings}; pick lengths up to {config.max_position_embeddings}")
    settings = {**{k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
                **{k: getattr(config, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                   "num_attention_heads", "intermediate_size")}}
    results = []
    for seq_len in args.seq_lens:
        block = bench_seq_len(config, seq_len, args)
        results.append(block)
        for name, r in block["variants"].items():
            print(f"T={seq_len:4d}  {name:34s} {r['tokens_per_s']:9,.0f} tokens/s  "
                  f"{r['ratio_vs_transformers']:5.2f}×  MFU {r['mfu']:4.0%} ({r['mfu_vs_torch_matmul']:4.0%} of torch matmul)",
                  flush=True)
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
              "settings": settings, "results": results}
    report["targets"] = check_targets(results)
    atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.markdown, render_markdown(report))
    print(f"wrote {args.json} and {args.markdown}")
    return report


if __name__ == "__main__":
    main()
