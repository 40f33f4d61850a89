"""`python -m pretrain.compare`: the table, the plateau step and the plot of several runs' metrics.jsonl."""

from __future__ import annotations

import json

from pretrain.compare import main, plateau_exit


def write_run(folder, accuracies, bigram=0.2, unigram=0.04, grew_at=None):
    """A run folder whose metrics.jsonl holds one evaluation every 100 steps, as `python -m pretrain` writes them."""
    folder.mkdir(parents=True)
    records = [{"step": 100 * i, "eval_acc": acc, "eval_ppl": 100.0 - i, "bigram_acc": bigram, "unigram_acc": unigram}
               for i, acc in enumerate(accuracies)]
    records.insert(1, {"step": 10, "loss": 6.0})  # a training log line: not an evaluation
    if grew_at is not None:
        records.append({"step": grew_at, "grew_to": "H256 L4"})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def test_the_plateau_ends_halfway_to_the_bigram():
    evaluations = [{"step": s, "eval_acc": a, "unigram_acc": 0.04, "bigram_acc": 0.2}
                   for s, a in [(0, 0.04), (100, 0.05), (200, 0.11), (300, 0.13), (400, 0.3)]]
    assert plateau_exit(evaluations) == 300  # (0.04 + 0.2) / 2 = 0.12: a wobble above the unigram is not enough
    assert plateau_exit(evaluations[:3]) is None


def test_two_runs_give_a_table_and_a_plot(tmp_path, capsys):
    slow = write_run(tmp_path / "slow", [0.04, 0.04, 0.05, 0.13, 0.18])
    fast = write_run(tmp_path / "fast", [0.04, 0.15, 0.2, 0.22, 0.25], grew_at=350)
    out = tmp_path / "plots" / "compare.png"
    assert main([str(slow), str(fast), "--labels", "mask 0.15", "mask 0.3", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split("|")[0].strip() == "mask 0.15" and lines[1].split("|")[-1].strip() == "300"
    assert lines[2].split("|")[-1].strip() == "100" and "1.25x" in lines[2]  # 0.25 / 0.2
    assert not any(line.startswith("note:") for line in lines)  # one split: one set of yardsticks
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_on_other_splits_are_flagged_and_a_run_that_stays_is_said_to(tmp_path, capsys):
    stuck = write_run(tmp_path / "stuck", [0.04, 0.041, 0.04])
    other = write_run(tmp_path / "other", [0.04, 0.3, 0.4], bigram=0.37)
    assert main([str(stuck), str(other), "--out", str(tmp_path / "c.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("stuck") and lines[1].endswith("never")
    assert any(line.startswith("note: the runs' yardsticks differ") for line in lines)


def test_a_folder_without_a_run_or_a_label_too_many_is_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "run", [0.04, 0.1])
    assert main([str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main([str(run), "--labels", "a", "b"]) == 2
    assert "--labels: got 2 for 1 runs" in capsys.readouterr().err
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "metrics.jsonl").write_text('{"step": 10, "loss": 6.0}\n', encoding="utf-8")
    assert main([str(tmp_path / "fresh")]) == 2
    assert "no held-out evaluation yet" in capsys.readouterr().err
