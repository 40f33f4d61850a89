"""--time-budget: parsed strictly, turned into max_steps after a probe, replayed while a fooled probe's small stage
runs, decided again at the growth step (pretrain/budget.py, pretrain/clock.py), recorded in the checkpoint, and the
whole command stays inside the budget. What --resume does with the recorded decisions: test_time_budget_resume.py."""
import json
import math
import os
import re
import time

import pytest
import torch
from conftest import pretrain_args

from pretrain.__main__ import main
from pretrain.budget import (FINAL_RESERVE_FRACTION, RESERVE_MIN_S, parse_duration, planned_steps, steps_after_growth,
                             steps_for_budget)
from pretrain.clock import replay_due
from pretrain.config import parse_config
from pretrain.growth import last_small_step
from pretrain.train import train

TINY = ["--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "4",
        "--model.intermediate_size", "64", "--max-len", "32", "--batch-size", "8", "--lr", "3e-3",
        "--num-threads", "1", "--matmul-peak-gflops", "1", "--eval-sequences", "16", "--eval-every", "50"]


def args(tmp_path, out, *extra):
    return pretrain_args(tmp_path, out, TINY, 2, *extra)


def budget_run(tmp_path, budget: float, *extra):
    """A tiny --time-budget run, timed from its start: (its result, wall seconds, its checkpoint)."""
    started = time.monotonic()
    result = train(parse_config(args(tmp_path, "run", "--time-budget", f"{budget}s", *extra)), started_at=started)
    wall = time.monotonic() - started
    return result, wall, torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)


def assert_within_budget(wall: float, budget: float) -> None:
    """The run fits its budget. On a machine busier than its cores, other processes take a share of the CPU the
    run could not plan for (they come and go after its probe), so the limit stretches by the load / cores
    slowdown of a fair-share scheduler; it is never skipped."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    allowed = budget * max(1.0, load / cores)
    assert wall <= allowed, f"the run took {wall:.1f} s of a {budget} s budget ({allowed:.1f} s at load {load:.1f})"


def test_durations():
    assert parse_duration("90s") == parse_duration("1.5m") == parse_duration("90") == 90
    assert parse_duration("1h30m") == 5400 and parse_duration("10m") == 600
    assert parse_duration("720h") == 720 * 3600
    for bad in ("", "ten", "10 minutes", "0s", "-5m", "721h", "1" + "0" * 400 + "s"):  # the last: inf seconds
        with pytest.raises(ValueError, match="--time-budget"):
            parse_duration(bad)


def test_steps_for_budget_counts_steps_evaluations_and_the_reserve():
    # 600 s, 50 s spent, reserve max(8, 0.12·600) = 72 s: 478 s left for steps of 0.5 s and an 8 s evaluation
    # every 100 steps (0.08 s per step) -> 478 / 0.58 = 824 steps.
    assert steps_for_budget(600, 50, 0.5, 8.0, 100) == 824
    assert steps_for_budget(10, 9, 1.0, 1.0, 10) == 1  # nothing left: still one step, never zero


def test_a_long_budget_caps_the_small_stage_and_buys_grown_steps_with_the_rest():
    # 3,600 s, 50 s spent, reserve 432 s: 3,118 s. Small steps 0.1 s, grown 0.5 s, no evaluations to speak of.
    # Blended 0.95·0.1 + 0.05·0.5 = 0.12 s -> 25,983 steps, 24,684 of them small: past a cap of 8,000. Capped:
    # 8,000 small steps take 800 s, and the 2,318 s left buy 4,636 grown steps.
    assert planned_steps(3600, 50, 0.1, 0.5, 0.0, 100, 0.95, 0) == steps_for_budget(3600, 50, 0.12, 0.0, 100) == 25983
    assert planned_steps(3600, 50, 0.1, 0.5, 0.0, 100, 0.95, 8000) == 8000 + 4636
    # A short budget stays below the cap, and without growing every step costs the small model's time.
    assert planned_steps(600, 50, 0.1, 0.5, 0.0, 100, 0.95, 8000) == steps_for_budget(600, 50, 0.12, 0.0, 100) == 3983
    assert planned_steps(600, 50, 0.1, 0.5, 0.0, 100, 0.0, 8000) == steps_for_budget(600, 50, 0.1, 0.0, 100)


def test_steps_after_growth_spend_what_is_left_at_the_measured_pace():
    # 600 s budget, 300 s spent; the first stage ran 400 steps in 250 s (0.625 s each) of which the bare step is
    # 0.5 s, so 0.125 s per step go to batches, logging, evaluations; a grown step is 1.5 s. Left: 600 - 300 - 24
    # (the final 4% reserve) = 276 s, at 1.5 + 0.125 s per grown step: 169.8 steps.
    assert FINAL_RESERVE_FRACTION * 600 == 24 and steps_after_growth(600, 300, 250, 400, 0.5, 1.5) == 169
    assert steps_after_growth(600, 300, 150, 400, 0.5, 1.5) == 184  # a probe slower than the stage: overhead 0
    assert steps_after_growth(600, 599, 250, 400, 0.5, 1.5) == 1  # over budget already: one step, never zero


def test_bad_budget_is_one_line(tmp_path, capsys):
    assert main(args(tmp_path, "run", "--time-budget", "soon")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--time-budget='soon'" in err and "10m" in err


def test_tiny_budget_stops_in_time_and_records_max_steps(tmp_path, restore_threads):
    budget = RESERVE_MIN_S + 6
    result, wall, state = budget_run(tmp_path, budget)
    assert result["max_steps"] >= 1 and result["time_budget"] == f"{budget}s"
    # the plan, or fewer steps where the machine ran slower than the probe said and the hard stop ended the run
    assert state["step"] == result["max_steps"] <= state["extra"]["budget_max_steps"]
    assert_within_budget(wall, budget)


def test_the_probe_times_the_loops_step_in_its_precision_with_positions_found_on_the_cpu(tmp_path, restore_threads,
                                                                                      monkeypatch):
    """A probe that timed fp32 while the loop runs bf16, or found the masked positions on the device (a host sync on
    a GPU), would read slower than the loop runs and plan too few steps."""
    from pretrain import budget as budget_module

    measured, seen = budget_module.time_training_steps, []

    def watched(model, train_model, batches, cfg):
        def step(**micro):
            seen.append(("prediction_positions" in micro, torch.is_autocast_enabled("cpu")
                         and torch.get_autocast_dtype("cpu")))
            return train_model(**micro)
        return measured(model, step, batches, cfg)

    monkeypatch.setattr(budget_module, "time_training_steps", watched)
    budget_run(tmp_path, RESERVE_MIN_S + 6, "--precision", "bf16", "--gradient-accumulation", "2")
    assert seen and set(seen) == {(True, torch.bfloat16)}


def fool_the_first_probe(monkeypatch, factor: float) -> None:
    """The first decision's two timings (small, grown) read `factor` times too slow, as if another process held the
    cores while they ran; the growth step's timings are right."""
    from pretrain import budget as budget_module

    measured, calls = budget_module.time_training_steps, []

    def fooled(*probe):
        calls.append(1)
        return measured(*probe) * (factor if len(calls) <= 2 else 1)

    monkeypatch.setattr(budget_module, "time_training_steps", fooled)


def test_a_probe_fooled_by_a_busy_machine_is_corrected_at_the_growth_step(tmp_path, restore_threads, monkeypatch):
    """The probe reads 30x too slow, so the first decision plans few steps, and its replay is switched off (next
    test): the first stage then runs at the machine's real pace, and the second decision gives the grown model the
    time that is left, instead of ending the run far inside its budget."""
    from pretrain import budget as budget_module

    fool_the_first_probe(monkeypatch, 30)
    monkeypatch.setattr(budget_module, "REPLAN_FASTER", math.inf)
    budget = RESERVE_MIN_S + 12
    result, wall, state = budget_run(tmp_path, budget, "--checkpoint-every", "1000")
    grow_step = state["extra"]["budget_grow_step"]  # growth_fraction of the first decision's steps
    planned = state["extra"]["budget_max_steps"]  # the hard stop may end a run on a busy machine before it
    assert result["max_steps"] == state["step"] <= planned
    assert planned - grow_step > 5 * grow_step, "the re-plan did not give the grown model the time left"
    assert_within_budget(wall, budget)


def test_a_probe_fooled_by_a_busy_machine_is_replayed_and_the_small_stage_gets_its_steps(tmp_path, restore_threads,
                                                                                        monkeypatch, capsys):
    """The probe reads 10x too slow (a `pip install` beside `make pretrain` did that 2.6-fold to all 8 timed steps).
    At the first clock check after an evaluation (step 25: eval_every 20, log_every 5) the small stage's own pace
    shows it, the first decision is replayed, and the small model keeps training: the steps the second decision
    cannot give back."""
    fool_the_first_probe(monkeypatch, 10)
    budget = RESERVE_MIN_S + 12
    result, wall, state = budget_run(tmp_path, budget, "--eval-every", "20", "--log-every", "5",
                                     "--checkpoint-every", "1000")
    said = capsys.readouterr().out
    decisions = "\n".join(line for line in said.splitlines() if "--time-budget" in line and "this stage's" not in line)
    first = int(re.search(r"-> max_steps ([\d,]+)", said)[1].replace(",", ""))
    replays = [[int(number.replace(",", "")) for number in found] for found in re.findall(
        r"planned again: the model grows after step ([\d,]+), not ([\d,]+); max_steps ([\d,]+)", said)]
    assert replays, decisions
    planned_growth = replays[0][1]
    assert planned_growth == last_small_step(first, 0.95, 8000), decisions  # the first decision's growth step
    grows_after, replayed_steps = replays[-1][0], replays[-1][2]  # a later replay may lengthen it again
    assert grows_after > 2 * planned_growth and replayed_steps > 2 * first, decisions
    # it grows there, or a little earlier where the small stage then runs slower than measured (the watchdog)
    assert 2 * planned_growth < state["extra"]["budget_grow_step"] <= grows_after, decisions
    assert_within_budget(wall, budget)


def test_the_first_decision_is_replayed_after_each_evaluation_of_the_first_half_of_the_first_stage():
    cfg = parse_config(["--eval-every", "200", "--log-every", "10"])
    due = [step for step in range(10, 2001, 10) if replay_due(step, cfg, stage_end=1000)]
    assert due == [210, 410]  # 610 > half of 1,000; step 10 comes before any evaluation
    # evaluations at the END of steps 50, 100, 150, 200; a check runs at the START of its step, so 150's is too early
    odd = parse_config(["--eval-every", "50", "--log-every", "15"])
    assert [step for step in range(15, 241, 15) if replay_due(step, odd, stage_end=480)] == [60, 105, 165, 210]
    assert replay_due(210, cfg, stage_end=420) and not replay_due(210, cfg, stage_end=419)  # half-way is still in


def test_the_third_decision_measures_the_pace_over_the_steps_this_stage_ran(monkeypatch):
    import pretrain.clock as clock

    monkeypatch.setattr(clock.time, "monotonic", lambda: 1100.0)
    # Step 121 is about to run: steps 1-120 took 100 s, 60 s are left: 0.98 · 60 / (100/120) = 70.56 more steps.
    assert clock.refit_last_stage(121, 1000, (0, 1000.0), 1160.0, torch.device("cpu")) == 121 + 70
    assert clock.refit_last_stage(121, 150, (0, 1000.0), 1160.0, torch.device("cpu")) == 150  # fits: unchanged
    assert clock.refit_last_stage(15, 1000, (0, 1000.0), 1160.0, torch.device("cpu")) == 1000  # too few to judge


def test_a_machine_slower_than_planned_stops_at_the_deadline_grown_and_exported(tmp_path, restore_threads,
                                                                                 monkeypatch):
    """The first decision is faked to plan a million steps (as if the machine then slowed down 1,000-fold), so the
    small stage would never end, and the watchdog that grows early is switched off (it sees no grown steps planned):
    the hard stop must still end the command inside its budget, grow the model first and export the full shape."""
    from pretrain import budget as budget_module

    monkeypatch.setattr(budget_module, "steps_for_budget", lambda *measured: 1_000_000)
    monkeypatch.setattr(budget_module, "last_small_step", lambda max_steps, *growth: max_steps)
    budget = RESERVE_MIN_S + 12
    result, wall, state = budget_run(tmp_path, budget, "--log-every", "5")
    assert 5 <= result["max_steps"] == state["step"] < 1_000_000 and result["max_steps"] % 5 == 0
    assert state["extra"]["budget_grow_step"] == result["max_steps"] - 1  # grown for the last step
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (32, 2)
    assert_within_budget(wall, budget)


def test_a_small_stage_behind_plan_grows_early_and_leaves_the_grown_model_its_time(tmp_path, restore_threads,
                                                                                    monkeypatch):
    """The same million-step plan, with the watchdog on: the planned grown steps cannot fit any more, so the small
    model grows at the first check (step 5) and the second decision gives BERT-mini the rest of the budget, instead
    of the single step the hard stop would leave it (a busy 2-core machine did that to `make pretrain`)."""
    from pretrain import budget as budget_module

    monkeypatch.setattr(budget_module, "steps_for_budget", lambda *measured: 1_000_000)
    budget = RESERVE_MIN_S + 12
    result, wall, state = budget_run(tmp_path, budget, "--log-every", "5")
    assert state["extra"]["budget_grow_step"] == 5
    assert result["max_steps"] == state["step"] > 5 + 5, "the grown model got fewer than 5 steps"
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (32, 2)
    assert_within_budget(wall, budget)


def test_a_cpu_run_behind_plan_on_several_threads_suggests_one_thread(restore_threads):
    from pretrain.clock import shared_cpu_hint

    torch.set_num_threads(2)
    assert "--num-threads 1" in shared_cpu_hint(torch.device("cpu")) and "2 threads" in shared_cpu_hint(
        torch.device("cpu"))
    assert shared_cpu_hint(torch.device("cuda")) == ""  # a GPU run's pace is not about CPU threads
    torch.set_num_threads(1)
    assert shared_cpu_hint(torch.device("cpu")) == ""  # already one thread: nothing to suggest


def test_a_schedule_that_takes_over_mid_stage_continues_from_the_steps_done():
    from minibert.training.schedule import build_scheduler, lr_multiplier

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, 2, 10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == build_scheduler(optimizer, 2, 10, steps_done=4).get_last_lr()
    shorter = build_scheduler(optimizer, 1, 6, steps_done=4)  # the stage now ends after 6 steps, not 10
    assert shorter.get_last_lr() == [lr_multiplier(4, 1, 6)] == [optimizer.param_groups[0]["lr"]]


def test_a_grown_stage_slower_than_planned_is_shortened_and_its_lr_still_decays_to_zero(tmp_path, restore_threads,
                                                                                        monkeypatch):
    """The second decision is faked to give the grown model a million steps (as if the machine slowed down
    1,000-fold after growing). The third decision must shorten the stage from its own pace, so that the run ends
    on its (recorded) last planned step with the LR decayed, instead of at the hard stop with the LR near its peak."""
    from pretrain import budget as budget_module

    monkeypatch.setattr(budget_module, "steps_for_budget", lambda *measured: 12)
    monkeypatch.setattr(budget_module, "steps_after_growth", lambda *measured: 1_000_000)
    budget = RESERVE_MIN_S + 12
    result, wall, state = budget_run(tmp_path, budget, "--log-every", "5", "--growth-fraction", "0.5")
    grow_step = state["extra"]["budget_grow_step"]
    assert grow_step == 6
    assert result["max_steps"] == state["step"] == state["extra"]["budget_max_steps"] < grow_step + 1_000_000
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    grown_lrs = [r["lr"] for r in records if "lr" in r and r["step"] > grow_step]
    assert len(grown_lrs) > 10, "the grown stage hardly ran"
    assert grown_lrs[-1] < 0.1 * max(grown_lrs), f"the LR ended at {grown_lrs[-1]:.2e}, peak {max(grown_lrs):.2e}"
    assert_within_budget(wall, budget)
