"""Pretrain for the time you have: `--time-budget 10m` becomes a number of optimizer steps: decided after a timing
probe, lengthened while the small stage shows that the probe was fooled, decided again at the growth step, and
from then on only ever shortened.

The budget covers the whole command (corpus generation and encoding, the baselines, evaluations, checkpoints and
the export), so the clock starts when `python -m pretrain` starts. After the set-up, a short timing probe runs a
few real training steps (forward, backward, AdamW) on a throwaway copy of the state, then

    max_steps = (budget - time spent so far - reserve) / (seconds per step + evaluation seconds / eval_every)

The reserve (RESERVE_FRACTION of the budget, at least RESERVE_MIN_S) pays for the checkpoints, the final
evaluation, the export and the plot, and absorbs a machine that gets a little slower during the run.

A probe of a few steps is easily fooled: another process holding the cores for that one second halves the
estimate, and the probe never sees the grown model's slower evaluations. So a growing run (pretrain/growth.py)
decides a second time, at the growth step, when the first stage has been timed for real: the grown stage gets
what is left of the budget (minus a smaller final reserve), each grown step costed as its freshly timed step plus
the per-step overhead the first stage showed (`steps_after_growth`). Each stage has its own schedule anyway, so
nothing already trained is re-scheduled; only the split between the stages moves away from growth_fraction.

A probe can also be fooled for longer than a second: a `pip install` beside `make pretrain` slowed all 8 timed
steps 2.6-fold, and the first decision planned 2,578 small steps where an idle machine plans 8,000. The second
decision cannot give those back (the small model has grown by then), so while the first half of the small stage
runs, the first decision is replayed after each evaluation with the pace measured since the last replay, when
that pace is REPLAN_FASTER times the planned one (replan_small_stage): only ever to lengthen the stage.

After the decisions, pretrain/clock.py watches the clock at every log step: it replays the first decision, it
grows a small model that falls behind plan early, a third decision shortens the last stage when the machine has
slowed down, and a hard stop sits behind all of them.

Why a step count and not "stop when the clock runs out": the LR schedule (warmup, then decay to 0 over the run,
as 24hBERT/Izsak et al. 2021 do with fractions of the run) needs to know where the run ends, and a step count
keeps a run reproducible: the decisions are recorded in the checkpoint, a --resume reuses them (bit-identical,
tests/test_time_budget_resume.py), and under DDP rank 0 measures and broadcasts them, so every rank runs the same steps.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass

import torch

from minibert.training.device import autocast, autocast_dtype, move_batch
from minibert.training.distributed import broadcast_from_main
from pretrain.batching import split_micro_batches
from pretrain.growth import grow, last_small_step

# 12% of the budget, for checkpoints, the final evaluation, export and plot. Measured with 8%: a 9-minute
# `make pretrain` took 550 s and a 10-minute Tianchi run overran by ~4%, because the probe does not see the grown
# model's slower evaluations or the growth itself.
RESERVE_FRACTION = 0.12
RESERVE_MIN_S = 8.0       # ... but at least this many seconds (saving and plotting take a few seconds anyway)
# The second decision has measured the first stage's evaluations and checkpoints, so what it keeps back only pays
# for the export and absorbs drift: 4%. With the first decision's 12% an idle 9-minute run ended after 7.4 minutes.
FINAL_RESERVE_FRACTION = 0.04
# The watchdog on the small stage (BudgetPlan.grow_by): grow early once the grown model would get less than this
# share of the time the first decision planned for it. Not 1: the probe times bare steps, and even on an idle
# machine the small stage runs ~20% slower than that (batches, masking), which alone would cut it short every time.
GROWN_SHARE_KEPT = 0.5
# Replaying the first decision (replan_small_stage) while the small stage runs: only when it runs this many times
# faster than planned. Not just "faster": even on an idle machine the loop runs ~20% SLOWER than the bare steps the
# probe times, so a plan that fits is left alone.
REPLAN_FASTER = 1.5
PROBE_STEPS = 8           # timed steps (after one untimed warm-up step: first calls allocate and pick kernels)
MAX_BUDGET_H = 720        # 30 days: a longer budget is a typo, and a huge one would plan a max_steps of 10^25


@dataclass
class BudgetPlan:
    """What --time-budget decided, as recorded in the checkpoint (so --resume repeats nothing).

    max_steps: the run's length; grow_step: the last small step, set by the second decision (None before it,
    or when the model does not grow); grow_early: the last small step the watchdog chose (clock.py), recorded so
    that a run resumed between that choice and the growth grows where the interrupted one would have.
    The rest is this process's clock, so it is not recorded (None after --resume):
    started: time.monotonic() when the command started; probe: the first decision's timings in seconds (a small
        step, a grown step, an evaluation), as replan_small_stage has rescaled them; window: (step, time) from
        which replan_small_stage measures the first stage's pace (its start, then its last check);
    grow_by: time.monotonic() by which the small model must grow to leave the grown one GROWN_SHARE_KEPT of the
        time the first decision planned for it (None without growing).
    """
    max_steps: int
    grow_step: int | None = None
    grown_steps: int | None = None  # the first decision's grown steps, for the second decision's log line
    grow_early: int | None = None
    started: float | None = None
    probe: tuple[float, float, float] | None = None
    window: tuple[int, float] | None = None
    grow_by: float | None = None

    def record(self) -> dict:
        return {"budget_max_steps": self.max_steps, "budget_grow_step": self.grow_step,
                "budget_grow_early": self.grow_early}


def parse_duration(text: str) -> float:
    """Seconds in "90s", "10m", "1h", "1h30m" or a bare number of seconds ("600"). Raises ValueError (one line)."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text or "")
    if not text or not parts or not any(parts.groups()):
        raise ValueError(f"--time-budget={text!r}: not a duration; write e.g. 90s, 10m, 1h or 1h30m")
    hours, minutes, seconds = (float(group or 0) for group in parts.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise ValueError(f"--time-budget={text!r}: must be longer than 0 seconds, e.g. 10m")
    if total > MAX_BUDGET_H * 3600:  # also catches a number too long to be finite
        raise ValueError(f"--time-budget={text!r}: at most {MAX_BUDGET_H}h (30 days); for a longer run give "
                         f"--max-steps and resume it from its checkpoints")
    return total


def steps_for_budget(budget_s: float, elapsed_s: float, step_s: float, eval_s: float, eval_every: int) -> int:
    """The optimizer steps that fit in what is left of the budget (at least 1).

    Args:
        budget_s: the whole command's budget; elapsed_s: spent so far (set-up, baselines, the probe).
        step_s: measured seconds per optimizer step; eval_s: measured seconds per evaluation.
        eval_every: steps between evaluations (each costs eval_s).
    """
    reserve = max(RESERVE_MIN_S, RESERVE_FRACTION * budget_s)
    left = budget_s - elapsed_s - reserve
    return max(1, int(left / (step_s + eval_s / eval_every)))


def steps_after_growth(budget_s: float, elapsed_s: float, stage_s: float, stage_steps: int, small_step_s: float,
                       grown_step_s: float) -> int:
    """The grown model's steps that fit in what is left of the budget (at least 1): the second decision.

    Args:
        budget_s: the whole command's budget; elapsed_s: spent so far, the first stage included.
        stage_s, stage_steps: wall seconds and steps of the first stage as this process ran it.
        small_step_s, grown_step_s: one training step of each model, timed just now.
    The first stage's pace minus its bare step is what each step costs around the model (batches, masking, logging,
    evaluations, checkpoints); a grown step costs that plus its own step. (Scaling the whole pace by the grown /
    small ratio instead charged that overhead 8 times over and ended an idle 9-minute run after 7.4 minutes.)
    """
    reserve = max(RESERVE_MIN_S, FINAL_RESERVE_FRACTION * budget_s)
    overhead = max(0.0, stage_s / max(1, stage_steps) - small_step_s)  # seconds per step outside forward/backward
    return max(1, int((budget_s - elapsed_s - reserve) / (grown_step_s + overhead)))


def time_training_steps(model: torch.nn.Module, train_model: torch.nn.Module, batches, cfg) -> float:
    """Seconds per optimizer step (the median of the timed steps, so one step slowed by another process does not
    move it), measured on real batches; the model's weights and the torch RNGs are restored afterwards, so the
    probe leaves no trace in the run.

    The probe runs the loop's step: its micro-batches with their CPU-found masked positions, its precision
    (autocast) and its AdamW (fused on a GPU). A step timed in fp32 while the loop runs bf16, or one that finds
    the masked positions on the GPU (a host sync), reads several times slower there and plans too few steps.

    Args:
        model: the bare model; train_model: what the loop calls (the DDP / torch.compile wrapper, or model).
        batches: PretrainingBatches; batch(0, i) is read without moving the iterator.
        cfg: the PretrainConfig: gradient_accumulation (k), precision and adam_beta2 (the probe's AdamW is a
            throwaway: its state would not match the run's anyway).
    """
    device = next(model.parameters()).device
    amp_dtype = autocast_dtype(device, cfg.precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, cfg.adam_beta2),
                                  fused=device.type == "cuda")
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    seconds = []
    for step in range(PROBE_STEPS + 1):
        batch = batches.batch(0, step % batches.steps_per_epoch)
        start = time.perf_counter()
        for micro in split_micro_batches(batch, cfg.gradient_accumulation):
            with autocast(device, amp_dtype):
                loss = train_model(**move_batch(micro, device)).loss
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # step 0 is the warm-up
            seconds.append(time.perf_counter() - start)
    model.load_state_dict(weights)
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)
    return statistics.median(seconds)


def budget_max_steps(cfg, model, train_model, wrap, batches, grown_config, started: float, eval_seconds: float,
                     is_main: bool, say) -> BudgetPlan:
    """--time-budget as max_steps: probe the step time, fit the steps into what is left, rank 0 decides for all.

    Args:
        cfg: the PretrainConfig (time_budget, growth_fraction, gradient_accumulation, eval_every, ...).
        model / train_model: the bare model and what the loop calls; wrap(bare) wraps a model the same way.
        grown_config: the BertConfig the model grows into, or None when it does not grow.
        started: time.monotonic() when the command started; eval_seconds: one measured evaluation (rank 0).
        say: rank 0's print.
    Returns:
        the BudgetPlan, whose max_steps the growth step revisits (replan_after_growth).
    """
    budget = parse_duration(cfg.time_budget)
    small_seconds = grown_seconds = time_training_steps(model, train_model, batches, cfg)
    fraction = cfg.growth_fraction if grown_config is not None else 0.0
    if grown_config is not None:  # the grown model's steps cost more: time a throwaway grown copy
        grown = grow(model, grown_config, noise=0.0, seed=cfg.seed)
        grown_seconds = time_training_steps(grown, wrap(grown), batches, cfg)
    max_steps = 0
    if is_main:
        elapsed = time.monotonic() - started
        max_steps = planned_steps(budget, elapsed, small_seconds, grown_seconds, eval_seconds, cfg.eval_every,
                                  fraction, cfg.growth_max_small_steps)
        say(f"--time-budget {cfg.time_budget}: {elapsed:.0f} s of set-up, {small_seconds:.3f} s per step"
            + (f" ({grown_seconds:.3f} s grown)" if grown_config is not None else "")
            + f", {eval_seconds:.1f} s per evaluation -> max_steps {max_steps:,}")
        if elapsed >= budget:  # the run still trains one step and exports, so a user sees how far off it was
            say(f"warning: --time-budget {cfg.time_budget} was spent before the first step (the set-up alone took "
                f"{elapsed:.0f} s); give it more time, e.g. --time-budget 10m")
    plan = BudgetPlan(broadcast_from_main(max_steps, next(model.parameters()).device), started=started,
                      probe=(small_seconds, grown_seconds, eval_seconds))
    if grown_config is not None:  # every rank sets it (clock.check_clock is a collective); rank 0's clock decides
        watch_small_stage(plan, cfg, grown_seconds, eval_seconds)
    return plan


def watch_small_stage(plan: BudgetPlan, cfg, grown_s: float, eval_s: float) -> None:
    """Sets plan.grown_steps, and plan.grow_by from them: the time by which the small model must grow to leave the
    grown one GROWN_SHARE_KEPT of the time planned for it at grown_s per step (clock.check_clock's watchdog)."""
    budget = parse_duration(cfg.time_budget)
    plan.grown_steps = plan.max_steps - last_small_step(plan.max_steps, cfg.growth_fraction,
                                                        cfg.growth_max_small_steps)
    grown_time = plan.grown_steps * (grown_s + eval_s / cfg.eval_every)
    plan.grow_by = plan.started + budget - max(RESERVE_MIN_S, FINAL_RESERVE_FRACTION * budget) - \
        GROWN_SHARE_KEPT * grown_time


def replan_small_stage(plan: BudgetPlan, cfg, step: int, stage_start: int, growing: bool, device: torch.device,
                       is_main: bool, say) -> int:
    """The first decision replayed at `step` of the first stage, when the stage has run REPLAN_FASTER times faster
    since plan.window (the stage's start, or the last replay) than plan.probe's timings said: every timing is
    scaled by the measured ratio and the stage's steps are planned again, as an idle machine would have planned
    them, for the time that is really left. Only a longer plan is taken. Sets plan.max_steps (rank 0's, on every
    rank), the scaled timings, the next window and, when growing, the watchdog; returns max_steps.

    Args:
        stage_start: the step after which the first stage started (0: replays happen in a fresh run only).
        growing: the first stage is the small model's (growth_fraction applies); else it is the whole run.
    Why the steps already taken are charged at the new pace: the plan counts them among its max_steps, and
    (now − started) already holds what they really cost, slow part included, so the time lost is not given back.
    """
    small_s, grown_s, eval_s = plan.probe
    fraction = cfg.growth_fraction if growing else 0.0
    max_steps, scale, now = plan.max_steps, 1.0, time.monotonic()
    if is_main:
        pace = (now - plan.window[1]) / max(1, step - 1 - plan.window[0])  # s per step since the window opened
        planned_pace = small_s + eval_s / cfg.eval_every  # evaluations included: the window holds one
        if planned_pace >= REPLAN_FASTER * pace:
            scale = pace / planned_pace
            elapsed = now - plan.started - (step - 1 - stage_start) * pace  # the steps taken, at the new pace
            replayed = planned_steps(parse_duration(cfg.time_budget), elapsed, small_s * scale, grown_s * scale,
                                     eval_s * scale, cfg.eval_every, fraction, cfg.growth_max_small_steps)
            first_stage = (last_small_step(replayed, fraction, cfg.growth_max_small_steps) if growing else replayed,
                           last_small_step(max_steps, fraction, cfg.growth_max_small_steps) if growing else max_steps)
            if first_stage[0] > first_stage[1]:
                say(f"--time-budget {cfg.time_budget}: the first stage runs {1 / scale:.1f}x faster than planned (a "
                    f"busy machine during the probe?), so its steps are planned again: "
                    + (f"the model grows after step {first_stage[0]:,}, not {first_stage[1]:,}; " if growing else "")
                    + f"max_steps {replayed:,}, not {max_steps:,}")
                max_steps = replayed
    plan.max_steps = broadcast_from_main(max_steps, device)
    plan.probe, plan.window = (small_s * scale, grown_s * scale, eval_s * scale), (step - 1, now)
    if growing:
        watch_small_stage(plan, cfg, grown_s * scale, eval_s * scale)
    return plan.max_steps


def planned_steps(budget_s: float, elapsed_s: float, small_s: float, grown_s: float, eval_s: float, eval_every: int,
                  fraction: float, max_small_steps: int) -> int:
    """The first decision: max_steps for a run whose first `fraction` of steps (at most max_small_steps of them;
    0 = no cap) cost small_s each and the rest grown_s (fraction 0: no growing, every step small_s).

    Args are steps_for_budget's, plus the two step times and growth_fraction / growth_max_small_steps.
    """
    blended = fraction * small_s + (1 - fraction) * grown_s if fraction else small_s
    max_steps = steps_for_budget(budget_s, elapsed_s, blended, eval_s, eval_every)
    if fraction and max_small_steps and fraction * max_steps > max_small_steps:
        # The small stage stops at the cap (growth.last_small_step); the rest of the budget buys grown steps.
        small_stage_s = max_small_steps * (small_s + eval_s / eval_every)
        max_steps = max_small_steps + steps_for_budget(budget_s, elapsed_s + small_stage_s, grown_s, eval_s,
                                                       eval_every)
    return max_steps


def replan_after_growth(plan: BudgetPlan, cfg, small: tuple, grown: tuple, batches, grow_step: int,
                        stage_start: tuple[int, float], started: float, is_main: bool, say) -> int:
    """The second decision of a --time-budget run, at the growth step: sets plan.grow_step and plan.max_steps
    (rank 0's, on every rank) and returns the new max_steps.

    Args:
        small, grown: (bare model, what the loop calls) before and after growing. Both are timed again here, one
            right after the other (every rank takes part, as DDP needs), under the load of now: the first probe's
            two timings lie up to a minute apart, and a neighbouring process during one of them skewed their
            ratio by 55% in a real run (docs/pretrain_lab.md, "The second decision, at the growth step").
        stage_start: (step, time.monotonic()) where this process started training the first stage (after a
            --resume, the resumed step), so the pace is measured on steps this process ran.
    """
    stage_seconds = time.monotonic() - stage_start[1]  # the first stage's wall time, before the timing below
    small_s = time_training_steps(*small, batches, cfg)
    grown_s = time_training_steps(*grown, batches, cfg)
    max_steps, ran = 0, grow_step - stage_start[0]
    if is_main:
        max_steps = grow_step + steps_after_growth(parse_duration(cfg.time_budget), time.monotonic() - started,
                                                   stage_seconds, ran, small_s, grown_s)
        say(f"--time-budget {cfg.time_budget}: the first stage ran {ran:,} steps in {stage_seconds:.0f} s; a step "
            f"takes {small_s:.3f} s small, {grown_s:.3f} s grown -> {max_steps - grow_step:,} steps for the grown "
            f"model (planned {plan.grown_steps or plan.max_steps - grow_step:,}), max_steps {max_steps:,}")
    plan.max_steps, plan.grow_step = broadcast_from_main(max_steps, next(grown[0].parameters()).device), grow_step
    return plan.max_steps


def recorded_budget(checkpoint_path) -> BudgetPlan | None:
    """The BudgetPlan a budget run recorded in its checkpoint (None for a step-based run's checkpoint). Its
    grow_step is None when the checkpoint predates the growth step: then the resumed run makes the second
    decision itself."""
    if not checkpoint_path.is_file():
        return None
    try:
        extra = torch.load(checkpoint_path, map_location="cpu", weights_only=True).get("extra", {})
    except Exception:  # unreadable: load_training_state reports it in one line
        return None
    if "budget_max_steps" not in extra:
        return None
    return BudgetPlan(extra["budget_max_steps"], extra.get("budget_grow_step"), grow_early=extra.get("budget_grow_early"))
