"""梯度累积 Gradient accumulation for MLM: weight each micro-batch by its number of masked tokens.

An optimizer step may see more sequences than fit in memory at once: run k micro-batches forward and backward,
let their gradients add up in `.grad`, and step once. The trap is the weighting. The MLM loss of a micro-batch
is a MEAN over its M_i masked positions, and dynamic masking makes M_i differ from batch to batch. The loss of
the one big batch we want to imitate is the mean over ALL ΣM positions:

    loss_big = Σ_i Σ_{j in batch i} ℓ_ij / ΣM  =  Σ_i loss_i · M_i / ΣM

so micro-batch i must be backpropagated as `loss_i · M_i / ΣM`. The common `loss_i / k` weights a batch with
3 masked tokens as much as one with 300: a biased gradient that no longer matches the big batch.

Under DDP (DistributedDataParallel) the big batch is the union over the W ranks, so ΣM is summed over ranks
(one all-reduce of a single integer per step), and because DDP AVERAGES gradients over ranks (divides by W), each
rank multiplies its loss by W to turn that average back into the sum the formula needs.

Dimension legend: B batch, T sequence length, M masked positions of one micro-batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..model import IGNORE_INDEX


def count_predictions(labels: torch.Tensor) -> int:
    """M: how many positions of `labels` [B,T] carry a prediction target (are not IGNORE_INDEX)."""
    return int((labels != IGNORE_INDEX).sum())


def global_prediction_count(local_counts: list[int], device: torch.device) -> int:
    """ΣM over this rank's micro-batches and, under torch.distributed, over every rank (all-reduce SUM).

    Must be known BEFORE the first backward of the step, so the caller masks all k micro-batches first."""
    total = sum(local_counts)
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([total], dtype=torch.long, device=device)  # [1]
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        total = int(t.item())
    if total <= 0:
        raise ValueError(f"gradient accumulation: the step has {total} masked positions in total; the masking "
                         f"must select at least one token per sequence (check mask_rate and the data)")
    return total


def loss_weight(num_predictions: int, total_predictions: int, world_size: int = 1) -> float:
    """The factor for micro-batch loss_i (a mean over its M_i predictions) before `.backward()`:
    M_i / ΣM, times W under DDP to undo DDP's averaging of gradients over the W ranks."""
    return num_predictions * world_size / total_predictions
