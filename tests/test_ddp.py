"""Distributed data parallel: 2 CPU processes (torchrun, gloo) train the same weights as 1 process.

At an equal GLOBAL batch (--batch-size is rows per optimizer step over all processes) and with dropout 0, each rank
gets half of every global batch, with the masks one process would draw (pretrain/batching.py), and the loss
weights M_i·W/ΣM turn DDP's gradient average into the single-process mean over all masked tokens. The DDP run also
accumulates 2 micro-batches per rank (no_sync on the first), against 1 big batch in the single process. The only
difference left is the order of floating-point sums, so the weights agree to fp32 rounding, not bit for bit.
"""

import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, pretrain_args
from safetensors.torch import load_file

from minibert import BertForMaskedLM
from pretrain.config import parse_config
from pretrain.train import train

TINY = ["--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "4",
        "--model.intermediate_size", "64", "--model.hidden_dropout_prob", "0", "--max-len", "32",
        "--batch-size", "8", "--lr", "3e-3", "--warmup-fraction", "0.25", "--max-steps", "4", "--num-threads", "1",
        "--matmul-peak-gflops", "1", "--eval-sequences", "16", "--eval-every", "4", "--checkpoint-every", "4"]


def args(tmp_path, out, *extra):
    return pretrain_args(tmp_path, out, TINY, 5, *extra)


def test_two_processes_match_one(tmp_path, restore_threads):
    train(parse_config(args(tmp_path, "single")))
    # --standalone: torchrun picks a free local port itself (a port chosen here could be taken before it binds).
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pretrain",
              *args(tmp_path, "ddp", "--gradient-accumulation", "2")]
    done = subprocess.run(launch, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [line for line in done.stdout.splitlines() if line.startswith("held-out acc")]
    assert len(summaries) == 1, "only rank 0 may print the summary"

    single = load_file(tmp_path / "single" / "final" / "model.safetensors")
    ddp = load_file(tmp_path / "ddp" / "final" / "model.safetensors")
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-4, atol=2e-5, msg=name)
    # ... and the runs really trained: 4 AdamW steps at lr 3e-3 move the weights far beyond that tolerance.
    torch.manual_seed(0)  # train() seeds with --seed 0 right before building the model
    vocab_size = json.loads((tmp_path / "single" / "final" / "config.json").read_text())["vocab_size"]
    initial = BertForMaskedLM(parse_config(args(tmp_path, "x")).bert_config(vocab_size)).state_dict()
    assert max((single[n] - initial[n]).abs().max().item() for n in single) > 5e-3
    losses = {run: [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
                    if '"loss"' in line] for run in ("single", "ddp")}
    assert len(losses["ddp"]) == len(losses["single"]) == 1  # log_every 10 > 4 steps: the final step's line
    assert losses["ddp"][0] == pytest.approx(losses["single"][0], rel=1e-5)


def test_time_budget_rank_0_decides_for_all(tmp_path):
    """Under --time-budget each rank could measure a different speed; rank 0's max_steps is broadcast, so both
    ranks run the same steps (a disagreement would hang the all-reduce, caught by the timeout)."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pretrain",
              *args(tmp_path, "ddp", "--time-budget", "25s", "--eval-every", "50", "--checkpoint-every", "1000")]
    done = subprocess.run(launch, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in done.stdout.splitlines() if line.startswith("--time-budget")]
    decided = [line for line in said if " -> " in line]
    stopped = [int(re.search(r"out of time at step ([\d,]+)", line)[1].replace(",", "")) for line in said
               if "out of time" in line]  # a busy machine: the hard stop, rank 0's clock, on both ranks
    # only rank 0 decides (and says so), after the probe and again at the growth step, unless the hard stop came first;
    # a replay of the first decision may lengthen the small stage, and a third decision shorten the grown stage, both
    # also broadcast by rank 0: the last of them is the plan
    assert len(decided) == 2 or (len(decided) == 1 and stopped), said
    plans = [re.search(r"ends at step ([\d,]+), not", line) or re.search(r"max_steps ([\d,]+)", line) for line in said]
    planned = [int(found[1].replace(",", "")) for found in plans if found][-1]
    steps = json.loads((tmp_path / "ddp" / "results.json").read_text())["max_steps"]
    assert len(stopped) <= 1 and steps == (stopped[0] if stopped else planned) >= 1
    state = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert state["step"] == steps and state["extra"]["budget_max_steps"] == planned


def test_global_batch_must_split_over_processes(tmp_path):
    with pytest.raises(ValueError, match="must split evenly"):
        train(parse_config(args(tmp_path, "bad", "--batch-size", "9", "--gradient-accumulation", "2")))
