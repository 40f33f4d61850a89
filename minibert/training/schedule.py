"""学习率预热 Learning-rate warmup, then decay.

Warmup matters for BERT's post-LN blocks: Adam's second-moment estimate is noisy in the first steps, and a full
learning rate then can blow the model up (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate";
Xiong et al. 2020 on post-LN). So the LR climbs linearly from peak/warmup_steps (never 0: the first update is not
wasted) to its peak over `warmup_steps`, then decays linearly (BERT, Devlin et al. 2019) or along a half cosine
(Loshchilov & Hutter 2017) toward 0. With w warmup steps of S (steps 0 .. S−1) the peak is used at steps w−1 and w,
and the last step gets 1/(S−w) of it: the schedule would reach 0 at step S, which is never taken.
"""

from __future__ import annotations

import math

import torch


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, kind: str = "linear") -> float:
    """The factor applied to each group's peak LR at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # never exactly 0, or the first update would be wasted
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # 0 -> 1 over the decay phase
    progress = min(progress, 1.0)
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule kind={kind!r}: must be 'linear' or 'cosine'")


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    kind: str = "linear", steps_done: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule over `total_steps` optimizer steps. steps_done > 0: a schedule taking over a run that has
    already taken that many steps (--time-budget shortening a stage, pretrain/budget.py); the optimizer's groups
    then already hold their `initial_lr`, and the next step gets lr_multiplier(steps_done, ...)."""
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"schedule: warmup_steps={warmup_steps}, total_steps={total_steps}; need "
                         f"0 <= warmup_steps <= total_steps and total_steps > 0")
    lr_multiplier(0, warmup_steps, total_steps, kind)  # fail now on a bad kind, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, warmup_steps, total_steps, kind), last_epoch=steps_done - 1)
