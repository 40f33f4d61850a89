"""--time-budget and --resume: the decisions a budget run recorded in its checkpoint (the first, the replays, the
second and the third) are reused, not asked again, and the resumed run ends bit-identical to an uninterrupted one
(pretrain/budget.py, pretrain/clock.py, pretrain/resume.py)."""
import json

import pytest
import torch
from test_time_budget import args

from pretrain.batching import PretrainingBatches
from pretrain.config import parse_config
from pretrain.train import train


def test_resume_reuses_the_recorded_max_steps_bit_identically(tmp_path, restore_threads, monkeypatch):
    """The budget decisions are faked (12 steps fit, then 6 more for the grown model) so that the test does not
    depend on the machine's load; the run is interrupted at step 5, after the checkpoint of step 3, and resumed."""
    from pretrain import budget as budget_module, train as train_module

    class Interrupted(train_module.PretrainingBatches):
        def __next__(self):  # the training stream only: the probe and evaluations read batches directly
            if self.shuffle and (self.epoch, self.step) == (0, 4):
                raise KeyboardInterrupt  # as Ctrl-C in the middle of step 5
            return super().__next__()

    monkeypatch.setattr(budget_module, "steps_for_budget", lambda *measured: 12)
    monkeypatch.setattr(budget_module, "steps_after_growth", lambda *measured: 6)  # re-planned after the resume
    monkeypatch.setattr(train_module, "PretrainingBatches", Interrupted)
    growth = ["--growth-fraction", "0.5"]  # the small model trains steps 1-6, BERT-mini 7-12
    budget_run = args(tmp_path, "budget", "--time-budget", "1h", "--checkpoint-every", "3", "--log-every", "1", *growth)
    with pytest.raises(KeyboardInterrupt):
        train(parse_config(budget_run))
    state = torch.load(tmp_path / "budget" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and state["extra"]["budget_max_steps"] == 12
    monkeypatch.setattr(train_module, "PretrainingBatches", PretrainingBatches)
    monkeypatch.setattr(budget_module, "steps_for_budget", lambda *measured: 99)  # must not be asked again
    resumed = train(parse_config(budget_run + ["--resume"]))
    assert resumed["max_steps"] == 12
    # ...and it ends exactly where a step-based run of 12 steps ends: the timing probe left no trace either.
    train(parse_config(args(tmp_path, "steps", "--max-steps", "12", "--log-every", "1", *growth)))
    budget_weights = (tmp_path / "budget" / "final" / "model.safetensors").read_bytes()
    assert budget_weights == (tmp_path / "steps" / "final" / "model.safetensors").read_bytes()
    lr = [json.loads(line)["lr"] for line in (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()
          if '"lr"' in line]
    # Each stage's schedule decays to its end, the second one to the recorded max_steps.
    assert len(lr) == 12 and lr[5] == min(lr[:6]) < lr[0] and lr[-1] == min(lr[6:]) < lr[6]


def test_time_budget_with_resume_of_a_step_run_is_one_line(tmp_path, restore_threads):
    train(parse_config(args(tmp_path, "run", "--max-steps", "2")))
    with pytest.raises(ValueError, match="step-based run"):
        train(parse_config(args(tmp_path, "run", "--time-budget", "1m", "--resume")))


class InterruptedInStep11(PretrainingBatches):
    """The training stream raises Ctrl-C while step 11 fetches its batch (after the checkpoint of step 9)."""

    def __next__(self):
        if self.shuffle and self.epoch * self.steps_per_epoch + self.step == 10:
            raise KeyboardInterrupt
        return super().__next__()


def run_whole_then_cut(tmp_path, monkeypatch, run: list[str]) -> dict:
    """`run` twice: uninterrupted ("whole"), then interrupted in step 11 ("cut"); returns the cut run's checkpoint."""
    from pretrain import train as train_module

    train(parse_config(args(tmp_path, "whole", *run)))
    monkeypatch.setattr(train_module, "PretrainingBatches", InterruptedInStep11)
    with pytest.raises(KeyboardInterrupt):
        train(parse_config(args(tmp_path, "cut", *run)))
    monkeypatch.setattr(train_module, "PretrainingBatches", PretrainingBatches)
    return torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)


def resume_cut_run(tmp_path, run: list[str]) -> dict:
    """Resumes the cut run; it must end bit-identical to the whole one. Returns its result."""
    result = train(parse_config(args(tmp_path, "cut", *run, "--resume")))
    weights = [(tmp_path / run_name / "final" / "model.safetensors").read_bytes() for run_name in ("whole", "cut")]
    assert weights[0] == weights[1]
    return result


def test_resume_after_the_growth_step_reuses_the_second_decision(tmp_path, restore_threads, monkeypatch):
    """Both decisions faked: 12 steps (growth after step 6), then 8 grown steps instead of 6, so max_steps 14 no
    longer matches growth_fraction. Interrupted in step 11 (after the checkpoint of step 9) and resumed, the run
    must keep grow_step 6 and max_steps 14 without asking again, and end bit-identical to an uninterrupted run."""
    from pretrain import budget as budget_module

    monkeypatch.setattr(budget_module, "steps_for_budget", lambda *measured: 12)
    monkeypatch.setattr(budget_module, "steps_after_growth", lambda *measured: 8)
    run = ["--time-budget", "1h", "--checkpoint-every", "3", "--log-every", "1", "--growth-fraction", "0.5"]
    state = run_whole_then_cut(tmp_path, monkeypatch, run)
    assert state["step"] == 9 and (state["extra"]["budget_max_steps"], state["extra"]["budget_grow_step"]) == (14, 6)
    for decision in ("steps_for_budget", "steps_after_growth"):  # must not be asked again
        monkeypatch.setattr(budget_module, decision, lambda *measured: 99)
    assert resume_cut_run(tmp_path, run)["max_steps"] == 14


def test_resume_after_the_third_decision_rebuilds_the_same_shortened_schedule(tmp_path, restore_threads,
                                                                               monkeypatch):
    """The decisions faked as above (max_steps 14, growth after step 6), and the third one too: at step 9 the
    grown stage "runs slow" and is cut to 12 steps. Interrupted in step 11 (after the checkpoint of step 9) and
    resumed, the run must rebuild the schedule of the shortened stage from the recorded max_steps and end
    bit-identical to an uninterrupted run."""
    from pretrain import budget as budget_module, clock as clock_module

    monkeypatch.setattr(budget_module, "steps_for_budget", lambda *measured: 12)
    monkeypatch.setattr(budget_module, "steps_after_growth", lambda *measured: 8)
    monkeypatch.setattr(clock_module, "refit_last_stage",
                        lambda step, max_steps, *clock: min(max_steps, 12) if step >= 9 else max_steps)
    run = ["--time-budget", "1h", "--checkpoint-every", "3", "--log-every", "1", "--growth-fraction", "0.5"]
    state = run_whole_then_cut(tmp_path, monkeypatch, run)
    assert state["step"] == 9 and (state["extra"]["budget_max_steps"], state["extra"]["budget_grow_step"]) == (12, 6)
    assert resume_cut_run(tmp_path, run)["max_steps"] == 12
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
           if '"lr"' in line]
    assert len(lrs) == 12 and lrs[-1] == min(lrs[6:]) < lrs[8]  # the shortened stage still decays to its end


def test_resume_after_a_replay_rebuilds_the_lengthened_small_stage(tmp_path, restore_threads, monkeypatch):
    """The first decision faked to 12 steps (growth after step 6); at step 3, the first check after an evaluation
    (eval_every 2, log_every 1), a faked replay lengthens the run to 24 (growth after step 12); the second decision
    gives 6 grown steps. Interrupted in step 11 (after the checkpoint of step 9, inside the lengthened small stage)
    and resumed, the run must rebuild the small stage's schedule from the recorded max_steps and end bit-identical
    to an uninterrupted run."""
    from pretrain import budget as budget_module, clock as clock_module

    def replay_to_24(plan, *clock):
        plan.max_steps, plan.probe = 24, None  # a single replay
        return plan.max_steps

    monkeypatch.setattr(budget_module, "steps_for_budget", lambda *measured: 12)
    monkeypatch.setattr(budget_module, "steps_after_growth", lambda *measured: 6)
    monkeypatch.setattr(clock_module, "replan_small_stage", replay_to_24)
    run = ["--time-budget", "1h", "--checkpoint-every", "3", "--log-every", "1", "--eval-every", "2",
           "--growth-fraction", "0.5"]
    state = run_whole_then_cut(tmp_path, monkeypatch, run)
    assert state["step"] == 9 and (state["extra"]["budget_max_steps"], state["extra"]["budget_grow_step"]) == (24, None)
    assert resume_cut_run(tmp_path, run)["max_steps"] == 18  # 12 small steps, then the second decision's 6
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
           if '"lr"' in line]
    # steps 1-2 warm up towards a 6-step stage; from step 3 the 12-step stage's schedule decays to its end
    assert len(lrs) == 18 and lrs[11] == min(lrs[2:12]) < lrs[2]


def test_the_watchdogs_early_growth_is_recorded_so_a_resume_keeps_it(tmp_path, monkeypatch):
    # killed after the checkpoint of the step where the watchdog chose to grow, before the growth: the resumed run
    # must grow there too, not at the first decision's step
    from pretrain import clock
    from pretrain.budget import BudgetPlan, recorded_budget

    monkeypatch.setattr(clock, "check_clock", lambda deadline, grow_by, device: (False, True))  # behind plan
    plan = BudgetPlan(max_steps=400, grown_steps=20, grow_by=0.0)
    cfg = parse_config(["--time-budget", "10m"])
    said = []
    result = clock.read_clock(120, 400, 380, plan, deadline=1e12, last_stage=(0, 0.0), still_small=True,
                              device=torch.device("cpu"), cfg=cfg, is_main=True, say=said.append)
    assert result == (400, 120, False) and plan.grow_early == 120 and "grows after step 120, not 380" in said[0]
    torch.save({"step": 120, "extra": plan.record()}, tmp_path / "checkpoint.pt")  # what save_checkpoint records
    again = recorded_budget(tmp_path / "checkpoint.pt")
    assert (again.max_steps, again.grow_step, again.grow_early) == (400, None, 120)
