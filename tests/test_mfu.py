"""MFU's numerator: the FLOPs formula of minibert/training/mfu.py against what PyTorch's FLOP counter sees."""

from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from minibert import BertConfig, BertForMaskedLM
from minibert.training.mfu import (ThroughputWindow, forward_flops_per_token, measure_matmul_peak,
                                   training_flops_per_token)

B, T, M = 2, 16, 5  # batch, sequence length, masked positions


def counted_flops(model, batch, backward: bool) -> int:
    # The fused CPU attention kernel is invisible to the counter; the math backend runs the same attention as bmm.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(**batch)
        if backward:
            out.loss.backward()
    return counter.get_total_flops()


@pytest.fixture()
def model_and_batch():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=T, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    labels = torch.full((B, T), -100)
    labels.view(-1)[torch.randperm(B * T)[:M]] = 7  # M predicted positions, the sparse MLM head's only work
    batch = {"input_ids": torch.randint(5, 50, (B, T)), "labels": labels}
    return config, BertForMaskedLM(config), batch


def test_forward_flops_formula_matches_pytorchs_count_exactly(model_and_batch):
    config, model, batch = model_and_batch
    formula = B * T * forward_flops_per_token(config, T, predicted_fraction=M / (B * T))
    assert counted_flops(model, batch, backward=False) == pytest.approx(formula, rel=1e-9)


def test_training_flops_are_three_forwards(model_and_batch):
    # the backward pass computes gradients w.r.t. inputs AND weights: two matmuls for each one of the forward
    config, model, batch = model_and_batch
    formula = B * T * training_flops_per_token(config, T, predicted_fraction=M / (B * T))
    assert counted_flops(model, batch, backward=True) == pytest.approx(formula, rel=1e-9)


def test_throughput_window_reports_the_pace_since_its_last_restart(monkeypatch):
    import minibert.training.mfu as mfu_module

    clock = [100.0]  # a fake clock: the test states the seconds instead of measuring them
    monkeypatch.setattr(mfu_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))  # this module's only
    window = ThroughputWindow()
    window.add(1000, 8e6)  # 8,000 FLOPs per token before the restart ...
    clock[0] += 5.0  # ... over 5 s (an evaluation, say) that must not count
    window.restart()
    window.add(500, 3e6)  # 6,000 per token after it, over 2 s
    clock[0] += 2.0
    tokens_per_s, mfu = window.rates(peak_flops=1e9)
    assert tokens_per_s == pytest.approx(500 / 2)  # not 1500 / 7 (nothing restarted) nor 500 / 7 (clock kept)
    assert mfu == pytest.approx(3e6 / 2 / 1e9)  # the window's own FLOPs over its own time


def test_measuring_the_peak_leaves_the_global_rng_alone():
    # pretrain re-measures at every evaluation: drawing from the global RNG would shift every later dropout mask,
    # so --eval-every (which may change on --resume) would change the trained weights
    state = torch.get_rng_state()
    assert measure_matmul_peak(torch.device("cpu"), size=64, repeats=1) > 0
    assert torch.equal(torch.get_rng_state(), state)
