"""梯度累积 Gradient accumulation: k micro-batches weighted by masked-token counts == one batch of k·b.

The micro-batches deliberately hold very different numbers of masked tokens (1 per row vs. most of the row),
which is exactly where the naive `loss / k` goes wrong; a negative control shows that it does.
"""

import pytest
import torch
from conftest import tiny_config

from minibert import IGNORE_INDEX, BertForMaskedLM
from minibert.training.accumulation import count_predictions, global_prediction_count, loss_weight


def make_batches(k=3, b=4, T=16, V=97):
    """k micro-batches of b rows; micro-batch i masks a different share of its tokens."""
    gen = torch.Generator().manual_seed(1)
    batches = []
    for i in range(k):
        ids = torch.randint(5, V, (b, T), generator=gen)  # [b,T]
        rate = [0.07, 0.6, 0.25, 0.9][i % 4]
        chosen = torch.rand(b, T, generator=gen) < rate  # [b,T]
        chosen[:, 0] = True  # at least one prediction per row
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
        attention_mask = torch.ones_like(ids)
        attention_mask[-1, T // 2:] = 0  # one padded row: padding must not change the weighting either
        labels[-1, T // 2:] = IGNORE_INDEX
        batches.append({"input_ids": ids, "attention_mask": attention_mask, "labels": labels})
    return batches


def gradients(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def big_batch_gradient(model, batches):
    model.zero_grad(set_to_none=True)
    big = {key: torch.cat([b[key] for b in batches]) for key in batches[0]}  # [k·b,T]
    model(**big).loss.backward()
    return gradients(model)


def accumulated_gradient(model, batches, weight_fn):
    model.zero_grad(set_to_none=True)
    counts = [count_predictions(b["labels"]) for b in batches]
    total = global_prediction_count(counts, torch.device("cpu"))
    for batch, m in zip(batches, counts):
        out = model(**batch)
        assert out.num_predictions == m
        (out.loss * weight_fn(m, total)).backward()
    return gradients(model)


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[n] - b[n]).abs().max().item() for n in a)


@pytest.mark.parametrize("k", [2, 3])
def test_accumulated_gradient_equals_big_batch(k):
    model = BertForMaskedLM(tiny_config()).double()  # float64: the comparison measures the method, not rounding
    batches = make_batches(k=k)
    counts = [count_predictions(b["labels"]) for b in batches]
    assert len(set(counts)) == k, f"the micro-batches must differ in masked counts, got {counts}"
    reference = big_batch_gradient(model, batches)
    accumulated = accumulated_gradient(model, batches, loss_weight)
    assert max_difference(reference, accumulated) < 1e-6


def test_accumulated_gradient_fp32_within_1e6():
    model = BertForMaskedLM(tiny_config())
    batches = make_batches(k=3)
    reference = big_batch_gradient(model, batches)
    accumulated = accumulated_gradient(model, batches, loss_weight)
    assert max_difference(reference, accumulated) < 1e-6


def test_naive_mean_over_steps_is_wrong():
    """Negative control: dividing by k (ignoring the masked counts) gives a measurably different gradient."""
    model = BertForMaskedLM(tiny_config()).double()
    batches = make_batches(k=3)
    reference = big_batch_gradient(model, batches)
    naive = accumulated_gradient(model, batches, lambda m, total: 1 / len(batches))
    assert max_difference(reference, naive) > 1e-3


def test_ddp_weight_undoes_gradient_averaging():
    # Rank r's share is M_r / ΣM; DDP divides the summed gradient by W, so each rank scales by W.
    assert loss_weight(30, 120, world_size=2) == pytest.approx(0.5)
    assert sum(loss_weight(m, 100, world_size=4) for m in (10, 20, 30, 40)) / 4 == pytest.approx(1.0)


def test_zero_predictions_is_a_clear_error():
    with pytest.raises(ValueError, match="masked positions"):
        global_prediction_count([0, 0], torch.device("cpu"))
