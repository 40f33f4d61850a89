"""`make bench`: MLM training speed of minibert against the `transformers` BertForMaskedLM a user would otherwise pick.

What is timed: one training step = forward + MLM loss + backward + AdamW step, fp32 on the CPU, BERT-mini
(H256 L4 A4 I1024), batch 32, sequence length 128 and 256, in ONE process. The implementations are ALTERNATED
step by step (the order rotates every round), so a burst of load from another process hits all of them alike,
and each is summarised by the MEDIAN step time, which ignores the odd slow step. The optimizer is the same on
both sides: torch's fused AdamW, the default of transformers' Trainer since torch 2.8, so only model code differs.

The rows (see `variants`):
  reference  transformers with its defaults: dropout 0.1 everywhere, 15% masked, the tokenizer's attention_mask,
             and logits for EVERY position (its MLM loss projects all B·T positions onto the vocabulary).
  (a)        minibert with the same hyperparameters; it projects only the masked positions (sparse MLM). The same
             math (the loss ignores unmasked positions anyway), less work: `(a) dense` projects every position as
             transformers does, so the table shows how much of (a)'s lead is the head and how much the rest.
  (b)        minibert's pretraining recipe, read from `make pretrain`'s defaults (pretrain/config.py) so the two
             cannot drift apart: dropout 0 (Cramming, Geiping & Goldstein 2022; MosaicBERT, Portes et al. 2023,
             drops attention dropout), packed rows with no padding and attention_mask=None, and the recipe's mask rate
             (30% when written, after Wettig et al. 2023, "Should You Mask 15% in MLM?"). When that rate is not
             BERT's 15%, a second (b) row shows the recipe at 15%.
  bf16       not part of the issue's targets, which are fp32: transformers' defaults and minibert's recipe again,
             each under bf16 autocast (torch.autocast("cpu", torch.bfloat16)). On CPUs with native bf16 dot
             products (AVX512_BF16 / AMX) this is the faster way to train; on CPUs without them it is slower.
             Their MFU divides by a bf16 matmul peak, and "same precision" compares them with each other.

模型算力利用率 MFU = useful FLOPs/s ÷ an fp32 matmul peak measured in this same run (minibert/training/mfu.py).
Useful FLOPs use ONE formula for both sides, with the vocabulary projection counted at the masked positions
only, so the full-vocabulary logits transformers computes at unmasked positions count as waste.

Dimension legend: B batch size, T sequence length, V vocabulary size.
Run: `python -m bench.bench_mlm` (writes bench/results.json and docs/bench.md); `--help` lists the knobs.
`--device cuda` runs the same comparison on a GPU, every row in bf16 (`make gpu-check` calls it; docs/gpu.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from types import SimpleNamespace
from pathlib import Path

import torch
import torch.nn.functional as F

from minibert import BertConfig, BertForMaskedLM
from minibert.cli import OneLineParser, run_cli
from minibert.model import prediction_positions
from minibert.training.device import pick_device
from minibert.training.io import atomic_write_text
from minibert.training.mfu import training_flops_per_token
from pretrain.config import PretrainConfig

from .report import check_targets, machine_info, render_markdown
from .timing import BF16_PEAK, measure_peaks, time_alternating

REPO_ROOT = Path(__file__).resolve().parent.parent
# `make pretrain`'s vocabulary: the embedded default corpus (data version 4) has 2,561 content IDs, 2,566 entries
# with the 5 specials (its runs/pretrain/final/vocab.txt). --vocab-size 30522 times BERT's English WordPiece vocab.
DEFAULT_VOCAB_SIZE = 2566
CLS_ID, SEP_ID, MASK_ID, FIRST_REAL_ID = 2, 3, 4, 5  # minibert's whitespace-vocab specials ([PAD]=0, [UNK]=1)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Variant:
    """One row of the table: which implementation, with which training hyperparameters."""
    setting: str  # "reference", "(a)" or "(b)"
    implementation: str  # "transformers" or "minibert"
    hidden_dropout: float
    attention_dropout: float
    mask_rate: float  # fraction of positions that get an MLM label
    padding_mask: bool  # True: pass attention_mask as a tokenizer would; False: packed, attention_mask=None
    precision: str = "fp32"  # "fp32", or "bf16" for bf16 autocast
    compile: bool = False  # torch.compile the model (GPU recipe rows; compile time is reported apart)
    sparse_head: bool = True  # minibert: vocabulary logits at masked positions only; False: at all B·T, as HF


def variants(device_type: str = "cpu") -> dict[str, Variant]:
    """The rows. On a GPU every row runs under bf16 autocast, SDPA attention and fused AdamW (transformers supports
    all three), so the ratios compare implementations, not precisions; the recipe row adds torch.compile."""
    recipe = PretrainConfig()  # the defaults `make pretrain` runs
    model = recipe.bert_config(vocab_size=DEFAULT_VOCAB_SIZE)
    pretrain = dict(hidden_dropout=model.hidden_dropout_prob, attention_dropout=model.attention_probs_dropout_prob,
                    padding_mask=not recipe.pack)
    rows = {
        "transformers defaults": Variant("reference", "transformers", 0.1, 0.1, 0.15, padding_mask=True),
        "minibert, equal hyperparameters": Variant("(a)", "minibert", 0.1, 0.1, 0.15, padding_mask=True),
        "minibert, equal hyperparameters, dense MLM head": Variant("(a) dense", "minibert", 0.1, 0.1, 0.15,
                                                                   padding_mask=True, sparse_head=False),
        "minibert, make pretrain recipe": Variant("(b)", "minibert", mask_rate=recipe.mask_rate, **pretrain),
    }
    if device_type == "cuda":
        return {name: replace(v, precision="bf16", compile=v.setting == "(b)") for name, v in rows.items()}
    if recipe.mask_rate != 0.15:  # also show the recipe at BERT's rate: more predictions cost more head FLOPs
        rows["minibert, recipe at 15% masking"] = Variant("(b)", "minibert", mask_rate=0.15, **pretrain)
    rows["transformers defaults, bf16 autocast"] = Variant("bf16", "transformers", 0.1, 0.1, 0.15,
                                                           padding_mask=True, precision="bf16")
    rows["minibert, recipe, bf16 autocast"] = Variant("bf16", "minibert", mask_rate=recipe.mask_rate,
                                                      precision="bf16", **pretrain)
    return rows


def build_model(variant: Variant, config: BertConfig) -> torch.nn.Module:
    """The model for one variant, in training mode. Both sides start from the same config fields."""
    config = config.replace(hidden_dropout_prob=variant.hidden_dropout,
                            attention_probs_dropout_prob=variant.attention_dropout)
    if variant.implementation == "transformers":
        import transformers  # bench/test-only dependency, never imported by minibert itself

        # minibert's config uses HF's field names, so the same dict builds the HF model; SDPA attention as ours.
        hf_config = transformers.BertConfig(**config.to_dict(), attn_implementation="sdpa")
        return transformers.BertForMaskedLM(hf_config).train()
    return BertForMaskedLM(config).train()


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


def dense_mlm_loss(model: BertForMaskedLM):
    """minibert doing transformers' work: vocabulary logits at all B·T positions [B,T,V], then the mean
    cross-entropy over the labelled ones, the same loss value as the sparse head's."""
    def forward(input_ids, labels, attention_mask=None) -> SimpleNamespace:
        sequence = model.bert(input_ids, attention_mask=attention_mask).last_hidden_state  # [B,T,H]
        logits = model.mlm_head(sequence, model.bert.embeddings.word_embeddings.weight)  # [B,T,V]
        return SimpleNamespace(loss=F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)))
    return forward


def make_train_step(model: torch.nn.Module, batches: list[dict], padding_mask: bool, precision: str = "fp32",
                    device: torch.device = torch.device("cpu"), compile_model: bool = False, sparse_head: bool = True):
    """A closure that runs one training step on the next batch (cycling through `batches`), on `device`."""
    model = model.to(device)
    params = list({id(p): p for p in model.parameters()}.values())  # transformers' tied decoder shows up twice
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=True)
    # A tokenizer returns attention_mask = 1 everywhere for a batch without padding; packed batches pass None.
    masks = [torch.ones_like(b["input_ids"]).to(device) if padding_mask else None for b in batches]  # [B,T] or None
    forward = model
    if isinstance(model, BertForMaskedLM):  # as pretrain's data path does: ids checked and masked positions found
        model.bert.check_inputs = False  # on the CPU, so a GPU step never waits for the host; the ids are in range
        if sparse_head:
            batches = [{**b, "prediction_positions": prediction_positions(b["labels"])} for b in batches]
        else:
            forward = dense_mlm_loss(model)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    forward = torch.compile(forward) if compile_model else forward
    position = [0]

    def step() -> None:
        i = position[0] % len(batches)
        position[0] += 1
        # Autocast covers the forward pass and the loss only; backward runs each op in its forward's dtype.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = forward(attention_mask=masks[i], **batches[i]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_seq_len(config: BertConfig, seq_len: int, args) -> dict:
    """Time every variant at one sequence length; returns the measured rows and the matmul peaks."""
    steps, fractions, device = {}, {}, torch.device(args.device)
    for i, (name, variant) in enumerate(variants(device.type).items()):
        torch.manual_seed(args.seed + i)
        batches = make_batches(config, args.batch_size, seq_len, variant.mask_rate, args.num_batches, args.seed)
        fractions[name] = statistics.fmean((b["labels"] != IGNORE_INDEX).float().mean().item() for b in batches)
        steps[name] = make_train_step(build_model(variant, config), batches, variant.padding_mask, variant.precision,
                                      device, variant.compile, variant.sparse_head)
    peaks = [measure_peaks(args.peak_size, device)]
    load_before = os.getloadavg()[0]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds, warmup_seconds = time_alternating(steps, args.rounds, args.warmup, sync)
    load_after = os.getloadavg()[0]
    peaks.append(measure_peaks(args.peak_size, device))
    # The best each GEMM showed, before or after the timed steps: a conservative denominator on a noisy machine.
    torch_peak = max(p["torch_matmul"] for p in peaks)
    hardware_peak = max(max(v for k, v in p.items() if k != BF16_PEAK) for p in peaks)  # the best fp32 GEMM
    bf16_peak = max(p[BF16_PEAK] for p in peaks)

    rows = {}
    for name, variant in variants(device.type).items():
        median = statistics.median(seconds[name])
        tokens_per_s = args.batch_size * seq_len / median
        flops_per_token = training_flops_per_token(config, seq_len, fractions[name])
        peak, reachable = (bf16_peak, bf16_peak) if variant.precision == "bf16" else (hardware_peak, torch_peak)
        rows[name] = {**asdict(variant), "tokens_per_s": tokens_per_s, "step_s_median": median,
                      "step_s_min": min(seconds[name]), "step_s_max": max(seconds[name]),
                      "step_s_all": seconds[name], "warmup_s": warmup_seconds[name],
                      "masked_fraction": fractions[name],
                      "useful_flops_per_token": flops_per_token,
                      "mfu": tokens_per_s * flops_per_token / peak,
                      "mfu_vs_torch_matmul": tokens_per_s * flops_per_token / reachable}
    references = {row["precision"]: row["tokens_per_s"] for row in rows.values()
                  if row["implementation"] == "transformers"}
    for row in rows.values():
        # the ratio: vs fp32 transformers on a CPU; on a GPU every row is bf16, so vs bf16 transformers
        row["ratio_vs_transformers"] = row["tokens_per_s"] / references.get("fp32", references[row["precision"]])
        row["ratio_same_precision"] = row["tokens_per_s"] / references[row["precision"]]
    return {"seq_len": seq_len, "matmul_peak_flops": hardware_peak, "torch_matmul_peak_flops": torch_peak,
            "bf16_matmul_peak_flops": bf16_peak,
            "matmul_peaks_measured": peaks, "load_average_1min": [load_before, load_after], "variants": rows}


def at_least(low: int):
    """argparse type: an integer >= low, refused in one line (0 rounds would end in statistics' own error)."""
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value
    check.__name__ = f"integer >= {low}"
    return check


def parse_args(argv=None):
    p = OneLineParser(prog="python -m bench.bench_mlm", description=__doc__.split("\n")[0])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--vocab-size", type=at_least(6), default=DEFAULT_VOCAB_SIZE, help="at least 6: 5 special "
                                                                                      "tokens and one word")
    p.add_argument("--rounds", type=at_least(1), default=10, help="timed steps per implementation and sequence length")
    p.add_argument("--warmup", type=at_least(0), default=2, help="untimed steps per implementation first")
    p.add_argument("--num-batches", type=at_least(1), default=4, help="distinct batches cycled through")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch.set_num_threads; 0 = torch's default")
    p.add_argument("--peak-size", type=at_least(1), default=None,
                   help="side of the square matmuls that measure the peaks (default 2048 on a CPU, 8192 on a GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a tiny model (H32 L1 A2 I64): a seconds-long smoke run")
    p.add_argument("--model", choices=["mini", "base"], default="mini", help="BERT-mini (H256 L4) or BERT-base")
    p.add_argument("--device", default="cpu", help="cpu, or cuda: every row in bf16 with SDPA and fused AdamW")
    p.add_argument("--json", type=Path, default=REPO_ROOT / "bench" / "results.json")
    p.add_argument("--markdown", type=Path, default=REPO_ROOT / "docs" / "bench.md")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    """Run the bench; returns the report (`python -m bench.bench_mlm` goes through cli())."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = BertConfig.mini(args.vocab_size) if args.model == "mini" else BertConfig(vocab_size=args.vocab_size)
    if args.tiny:
        config = config.replace(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    if max(args.seq_lens) > config.max_position_embeddings or min(args.seq_lens) < 3:
        raise ValueError(f"--seq-lens {args.seq_lens}: each must be in [3, max_position_embeddings="
                         f"{config.max_position_embeddings}], e.g. --seq-lens 128 256")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ValueError(f"--device {args.device}: must be cpu, cuda or cuda:N")
    pick_device(args.device)  # a GPU that is not there: one line, before any work
    settings = {**{k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
                **{k: getattr(config, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                   "num_attention_heads", "intermediate_size")}}
    results = []
    for seq_len in args.seq_lens:
        results.append(bench_seq_len(config, seq_len, args))
        for name, r in results[-1]["variants"].items():
            print(f"T={seq_len:4d}  {name:38s} {r['tokens_per_s']:8,.0f} tokens/s  {r['ratio_vs_transformers']:5.2f}×  "
                  f"MFU {r['mfu']:4.0%} ({r['mfu_vs_torch_matmul']:4.0%} of torch matmul)", flush=True)
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
              "settings": settings, "results": results}
    report["targets"] = check_targets(results)
    atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    if args.device == "cpu":  # docs/bench.md describes a CPU run; a GPU run is reported by bench/gpu_check.py
        atomic_write_text(args.markdown, render_markdown(report))
    print(f"wrote {args.json}" + (f" and {args.markdown}" if args.device == "cpu" else ""))
    return report


def cli(argv=None) -> int:
    """Exit codes: 0 measured and written, 2 bad input (one `error:` line; see minibert/cli.py)."""
    def body(args: list[str]) -> int:
        main(args)
        return 0
    return run_cli(body, argv)


if __name__ == "__main__":
    sys.exit(cli())
