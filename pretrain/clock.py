"""--time-budget's clock: what a budget run checks at every log step, after pretrain/budget.py's first decision.

At the first check after each evaluation of the first stage's first half, the first decision is replayed with
the pace measured since the last such check if the probe was fooled into planning too few steps
(budget.replan_small_stage). At the growth step budget.replan_after_growth makes the second decision.

The third decision: the last stage watches its own pace (refit_last_stage). If the machine got slower and the
planned steps no longer fit, the stage is shortened at the next clock check and its schedule rebuilt to decay to 0
at the new last step, recorded in the checkpoint like the decisions before it.

Behind all three decisions sits a hard stop (check_clock): if the clock still runs out (the machine slowed down
between two checks, or the stage is too young for its pace to be trusted), the step at which it does becomes the
last one (a small model grows first, so the export is always the full shape), with the final evaluation and export
as usual, STOP_MARGIN_S before the budget ends.

Every check is rank 0's clock, broadcast, so under DDP all ranks stop, grow or shorten at the same step.
"""

from __future__ import annotations

import time

import torch

from minibert.training.distributed import broadcast_from_main
from pretrain.budget import BudgetPlan, parse_duration, replan_small_stage
from pretrain.growth import last_small_step

# The hard stop (check_clock): the final evaluation, checkpoint and export took 1.6 s after a 60-minute SST-2 run;
# 8 s, budget.RESERVE_MIN_S, leaves room for a slower disk.
STOP_MARGIN_S = 8.0
# The third decision (refit_last_stage) trusts the last stage's pace once it has run this many steps, and fits the
# steps into this share of the time left, so that a pace a little slower still ends before the hard stop.
REFIT_MIN_STEPS = 20
REFIT_HEADROOM = 0.98


def check_clock(deadline: float | None, grow_by: float | None, device: torch.device) -> tuple[bool, bool]:
    """Rank 0's clock against the hard stop (`deadline`) and the small stage's watchdog (`grow_by`; None once the
    model has grown), as (out of time, behind plan): one broadcast, so every rank stops or grows at the same step.

    The hard stop sits behind both decisions because a machine that slows down after the last decision still
    overruns: two 60-minute runs ended 3.7% and 3.9% late, their grown steps 15-20% slower than timed at growing.
    The watchdog grows the model early when the small stage runs slower than the first decision planned (a busy
    machine), so that the second decision still finds the grown model its time, not a single step (docs/pretrain.md).
    """
    now = time.monotonic()
    late = int(deadline is not None and now > deadline) + 2 * int(grow_by is not None and now > grow_by)
    late = broadcast_from_main(late, device)  # bit 0: out of time, bit 1: behind plan
    return bool(late & 1), bool(late & 2)


def refit_last_stage(step: int, max_steps: int, stage_clock: tuple[int, float], deadline: float,
                     device: torch.device) -> int:
    """The third decision, at each clock check of the last stage: max_steps, or fewer when the stage's own pace so
    far (its evaluations and checkpoints included) would carry it past the deadline. Rank 0 decides for all.

    Why: a machine that slows down after the second decision used to meet the hard stop, which cuts the LR
    schedule wherever the clock runs out: the 60-minute CLUENER run stopped at 88% of its grown stage (step 19,800
    of 21,353) with the LR still at 12% of its peak (docs/pretrain_lab.md, "The third decision"). Shortening the
    stage instead lets its schedule decay to 0 at the new last step (the LR steps down a little at the moment of
    the refit).

    Args:
        step: the step about to run; stage_clock: (the step after which the stage started, or the resumed step;
            time.monotonic() then), so the pace is measured on steps this process ran.
    """
    fits, done = max_steps, step - 1 - stage_clock[0]
    if done >= REFIT_MIN_STEPS:
        now = time.monotonic()
        pace = (now - stage_clock[1]) / done  # seconds per step, everything around the step included
        fits = min(max_steps, step + int(REFIT_HEADROOM * max(0.0, deadline - now) / pace))
    return broadcast_from_main(fits, device)


def budget_deadline(cfg, started: float) -> float | None:
    """time.monotonic() at which a --time-budget run must take its last step (None without a budget)."""
    return started + parse_duration(cfg.time_budget) - STOP_MARGIN_S if cfg.time_budget else None


def replay_due(step: int, cfg, stage_end: int) -> bool:
    """Whether this clock check replays the first decision (budget.replan_small_stage): the first check after
    each evaluation, so that every measured stretch holds one, in the first half of the first stage (later, a
    longer plan would lift an LR already deep into its decay). The same answer on every rank: a replay is a
    collective."""
    after_evaluation = (step - 1) // cfg.eval_every > (step - 1 - cfg.log_every) // cfg.eval_every
    return step > cfg.eval_every and after_evaluation and 2 * step <= stage_end


def shared_cpu_hint(device: torch.device) -> str:
    """What to try when a CPU run falls behind plan with several threads: another job on the same cores makes
    torch's threads wait for each other at every operation (CLUENER with one busy core beside it: 0.206 s per small
    step on 2 threads, 0.093 s on 1; docs/pretrain.md, "A CPU shared with another job")."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        return ""
    return (f" (is another job using this CPU? its {torch.get_num_threads()} threads then wait for each other; "
            f"--num-threads 1 can be twice as fast)")


def read_clock(step: int, max_steps: int, grow_step: int, plan: BudgetPlan, deadline: float,
               last_stage: tuple[int, float], still_small: bool, device: torch.device, cfg, is_main: bool,
               say) -> tuple[int, int, bool]:
    """--time-budget's clock, at a log step of the loop: the hard stop, the small stage's watchdog, the replayed
    first decision or the third decision (above). Returns (max_steps, grow_step, whether the current stage's
    schedule must be rebuilt); the decisions are recorded in `plan`, which the checkpoint saves."""
    label = f"--time-budget {cfg.time_budget}"
    out_of_time, behind_plan = check_clock(deadline, plan.grow_by if step < grow_step else None, device)
    if out_of_time:  # the machine ran slower than planned: a hard stop
        say(f"{label}: out of time at step {step:,} of {max_steps:,}: this step is the last, then the final "
            f"evaluation")
        if plan.grow_step is None and still_small:  # grow now, so the export has the full shape
            grow_step = plan.grow_step = step - 1
        return step, grow_step, False
    if behind_plan:  # a slow small stage: grow now, so that BERT-mini keeps time for its own steps
        say(f"{label}: the small model is behind plan; it grows after step {step:,}, not {grow_step:,}, to leave "
            f"BERT-mini its planned time{shared_cpu_hint(device)}")
        plan.grow_early = step  # recorded: a resume before the growth must not forget it
        return max_steps, step, False
    growing = plan.grown_steps is not None  # a run that starts small: its first stage ends at grow_step
    if plan.probe and replay_due(step, cfg, grow_step if growing else max_steps):
        plan.window = plan.window or last_stage  # the first stretch: from the stage's start
        replayed = replan_small_stage(plan, cfg, step, last_stage[0], growing, device, is_main, say)
        if replayed != max_steps:  # a longer first stage: its schedule now decays to 0 at its new end
            new_grow_step = last_small_step(replayed, cfg.growth_fraction, cfg.growth_max_small_steps) if growing \
                else grow_step
            return replayed, new_grow_step, True
    if step > grow_step + 1 and (fits := refit_last_stage(step, max_steps, last_stage, deadline, device)) < max_steps:
        say(f"{label}: at this stage's pace the run ends at step {fits:,}, not {max_steps:,}; the LR now decays to 0 "
            f"there")
        plan.max_steps = fits
        return fits, grow_step, True
    return max_steps, grow_step, False
