"""断点续训 Resume is exact: a run SIGKILLed mid-training and resumed ends bit-identical to an uninterrupted run.

The interrupted run is a real subprocess that is killed with SIGKILL (no cleanup, no atexit, no flush), in the
middle of step 5: after the checkpoint of step 3 was written and after two more steps' worth of work that the
checkpoint does not hold. `--simulate-crash-at-step` makes the kill land at the same point every time.
Threads are pinned (--num-threads 1) so both runs use the same CPU kernels and summation order.
"""

import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, pretrain_args
from safetensors.torch import load_file

from pretrain.config import parse_config
from pretrain.train import train

TINY = ["--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "4",
        "--model.intermediate_size", "64", "--max-len", "32", "--batch-size", "8", "--lr", "3e-3",
        "--warmup-fraction", "0.1", "--num-threads", "1", "--matmul-peak-gflops", "1", "--eval-sequences", "16",
        "--log-every", "1"]


def run_args(tmp_path, out, *extra):
    # Hidden dropout ON (0.1, though the recipe pretrains without it): resuming must also restore the RNG that
    # draws dropout masks.
    return pretrain_args(tmp_path, out, TINY, 3, "--model.hidden_dropout_prob", "0.1", "--max-steps", "8",
                         "--checkpoint-every", "3", "--eval-every", "4", *extra)


LONG_ROWS = ("--long-stage-min-steps", "1", "--grown-max-len", "64")  # the grown stage: 4 rows of 64, not 8 of 32


# The model grows after step 4 (the checkpoint of step 3 holds the small model) or after step 2 (the grown one);
# with LONG_ROWS the grown stage reads longer rows, and the checkpoint of step 3 is then a position in THAT stream.
@pytest.mark.parametrize("growth", [("0.5",), ("0.25",), ("0.5", *LONG_ROWS), ("0.25", *LONG_ROWS)])
def test_sigkill_then_resume_is_bit_identical(tmp_path, restore_threads, growth):
    def args(out, *extra):
        return run_args(tmp_path, out, "--growth-fraction", *growth, *extra)

    train(parse_config(args("uninterrupted")))

    crashed = subprocess.run([sys.executable, "-m", "pretrain", *args("crashed"),
                              "--simulate-crash-at-step", "5"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    run = tmp_path / "crashed"
    assert not (run / "final").exists()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    assert max(r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())) == 4

    # A negative control, run first: the same resume from a copy whose checkpoint holds one nudged weight must END
    # differently. A resume that ignored the checkpoint (and retrained from step 0, deterministically) would pass
    # the bit-identity below; it fails here.
    shutil.copytree(run, tmp_path / "nudged")
    state = torch.load(tmp_path / "nudged" / "checkpoint.pt", weights_only=False)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 1e-2
    torch.save(state, tmp_path / "nudged" / "checkpoint.pt")
    train(parse_config(args("nudged", "--resume")))
    nudged = load_file(tmp_path / "nudged" / "final" / "model.safetensors")

    result = train(parse_config(args("crashed", "--resume")))

    reference = tmp_path / "uninterrupted" / "final" / "model.safetensors"
    resumed = run / "final" / "model.safetensors"
    a, b = load_file(reference), load_file(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    assert reference.read_bytes() == resumed.read_bytes()
    assert any(not torch.equal(a[name], nudged[name]) for name in a)  # the checkpoint's weights were used
    # The log was cut back to the checkpoint and continued: the same training losses, step for step.
    def losses(folder):
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in records if "loss" in r]
    assert losses(run) == losses(tmp_path / "uninterrupted")
    assert [s for s, _ in losses(run)] == list(range(1, 9))
    assert result["eval_acc"] == json.loads((tmp_path / "uninterrupted" / "results.json").read_text())["eval_acc"]
    assert result["eval_max_len"] == (64 if LONG_ROWS[0] in growth else 32)


def test_resume_without_checkpoint_is_one_clear_line(tmp_path, capsys):
    from pretrain.__main__ import main

    assert main(run_args(tmp_path, "nothing-here", "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint" in err and "--resume" in err


def test_resume_rejects_a_different_data_setup(tmp_path, restore_threads):
    train(parse_config(run_args(tmp_path, "run", "--max-steps", "3")))
    with pytest.raises(ValueError, match="--max-len 32 -> 24.*--init .*final"):
        train(parse_config(run_args(tmp_path, "run", "--max-len", "24", "--max-steps", "3", "--resume")))


def test_a_run_started_from_init_resumes_without_it(tmp_path, restore_threads):
    """--init starts a full-size model that never grows, and --resume does not repeat --init (it is refused with
    it): the resumed run must build the full-size model too, not the small one a fresh run would grow from, which
    could not hold the checkpoint's weights. SIGKILLed mid-run and resumed, it ends bit-identical."""
    train(parse_config(run_args(tmp_path, "first")))  # growth-fraction default: this one grows
    def args(out, *extra):
        return run_args(tmp_path, out, "--init", str(tmp_path / "first" / "final"), *extra)

    train(parse_config(args("uninterrupted")))
    crashed = subprocess.run([sys.executable, "-m", "pretrain", *args("crashed"), "--simulate-crash-at-step", "5"],
                             cwd=REPO_ROOT, capture_output=True, text=True)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    resume = [a for a in args("crashed", "--resume") if a not in ("--init", str(tmp_path / "first" / "final"))]
    train(parse_config(resume))
    reference = (tmp_path / "uninterrupted" / "final" / "model.safetensors").read_bytes()
    assert (tmp_path / "crashed" / "final" / "model.safetensors").read_bytes() == reference


def test_init_from_a_model_folder_of_another_shape_names_the_overrides(tmp_path, restore_threads):
    """--init <run>/final with other --model/--set overrides than the run that wrote it: the shape error says
    that this run's flags, not the folder's config.json, decide the model."""
    train(parse_config(run_args(tmp_path, "first", "--max-steps", "2")))
    wider = run_args(tmp_path, "second", "--init", str(tmp_path / "first" / "final"), "--model.hidden_size", "64")
    with pytest.raises(ValueError, match=r"--init .*final: .*shape mismatch.*not from the folder's config.json: use "
                                         r"the same --set/--model overrides as the run that wrote it"):
        train(parse_config(wider))
    config = json.loads((tmp_path / "first" / "final" / "config.json").read_text())
    (tmp_path / "first" / "final" / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match=r"--init .*final: its weights were trained with hidden_act 'relu' \(this "
                                         r"run: 'gelu'\); pass --set hidden_act=relu"):  # silently gelu before
        train(parse_config(run_args(tmp_path, "third", "--init", str(tmp_path / "first" / "final"))))
    del config["max_position_embeddings"], config["hidden_act"]  # a sparse HF config: the weights give the shapes
    (tmp_path / "first" / "final" / "config.json").write_text(json.dumps(config))
    train(parse_config(run_args(tmp_path, "fourth", "--init", str(tmp_path / "first" / "final"))))
