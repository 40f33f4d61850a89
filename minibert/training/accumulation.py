"""梯度累积 Gradient accumulation: ONE rule for every training loop (pretraining and fine-tuning).

An optimizer step may see more examples than fit in memory at once: run k micro-batches forward and backward,
let their gradients add up in `.grad`, and step once. The trap is the weighting. Each head returns a loss that
is a MEAN over its own n_i terms, the predictions it scores: masked tokens for MLM, labelled tokens for NER,
examples for classification, (example, entity type) rows for GlobalPointer.
Dynamic masking, padding and a short last batch make n_i differ from micro-batch to micro-batch. The loss of
the one big batch we want to imitate is the mean over ALL N = Σn terms:

    loss_big = Σ_i Σ_{j in batch i} ℓ_ij / N  =  Σ_i loss_i · n_i / N

so micro-batch i must be backpropagated as `loss_i · n_i / N`. The common `loss_i / k` weights a batch with
3 masked tokens as much as one with 300: a biased gradient that no longer matches the big batch (the test
tests/test_accumulation.py shows both). Under Adam the overall scale barely matters (m̂/√v̂ cancels it), but the
RELATIVE weights of the micro-batches always do, and so does the scale for clipping and for the logged loss.

N must be known BEFORE the first backward, so the loop counts the terms of all k micro-batches on their CPU
copies first (no GPU sync). Under DDP (DistributedDataParallel) the big batch is the union over the W ranks, so N
is summed over ranks (one all-reduce of a single integer per step, which the host waits for: under DDP the one
sync of a step, and it keeps the host from queueing the next step ahead of the GPU), and because DDP AVERAGES
gradients over ranks (divides by W), each rank multiplies its loss by W to turn that average back into the sum the
formula needs.

The loop, in both pretrain/train.py and finetune/train.py:

    counts = [n_i of each micro-batch]                  # on the CPU batch, before the copy to the device
    total = global_prediction_count(counts, device)     # N over micro-batches and ranks
    for each micro-batch i: (loss_i * loss_weight(counts[i], total, W)).backward()

Dimension legend: B batch, T sequence length, n_i loss terms of micro-batch i, N their sum, W processes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..model import IGNORE_INDEX


def count_predictions(labels: torch.Tensor) -> int:
    """n_i for token-level labels [B,T] (MLM, NER tags): the positions not equal to IGNORE_INDEX. Call it on the CPU
    batch: on a GPU tensor `int(...)` would make the host wait for the device."""
    return int((labels != IGNORE_INDEX).sum())


def global_prediction_count(local_counts: list[int], device: torch.device) -> int:
    """N: the loss terms of this rank's micro-batches and, under torch.distributed, of every rank (all-reduce SUM).

    Must be known BEFORE the first backward of the step, so the caller counts all k micro-batches first."""
    total = sum(local_counts)
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([total], dtype=torch.long, device=device)  # [1]
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        total = int(t.item())
    if total <= 0:
        raise ValueError(f"gradient accumulation: the step has {total} loss terms in total (masked positions, "
                         f"labelled tokens or examples); every step needs at least one: check the masking "
                         f"(mask_rate) or the labels of the data")
    return total


def loss_weight(count: int, total: int, world_size: int = 1) -> float:
    """The factor for micro-batch loss_i (a mean over its n_i terms) before `.backward()`:
    n_i / N, times W under DDP to undo DDP's averaging of gradients over the W ranks."""
    return count * world_size / total
