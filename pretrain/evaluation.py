"""Held-out MLM evaluation: loss, accuracy and perplexity on documents the model never trains on.

Comparable across evaluations: the held-out batches come from a `PretrainingBatches` with shuffle=False, whose
masks are seeded by (seed, step) alone, so every evaluation scores the SAME positions of the SAME rows. A change in
the number is then the model's doing, not the luck of a new mask draw.

Perplexity = exp(mean cross-entropy over the masked positions): "as uncertain as a uniform choice among that many
tokens". The unigram baseline (pretrain.data.unigram_baseline) is what a model that ignores context scores.

Dimension legend: B rows, T max_len, M masked positions, V vocab.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from minibert import IGNORE_INDEX
from minibert.training.device import autocast, move_batch


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device, amp_dtype: torch.dtype | None,
             max_sequences: int) -> dict:
    """Score `model` on the first `max_sequences` rows of `batches` (an iterable of masked batch dicts).

    Returns:
        {"eval_loss", "eval_acc", "eval_ppl", "eval_predictions"}: means over all masked positions, not per batch
        (batches with more masks weigh more, exactly as in one big batch).
    """
    was_training = model.training
    model.eval()  # no dropout: the evaluation is deterministic
    loss_sum, correct, predictions, rows = 0.0, 0, 0, 0
    for batch in itertools.takewhile(lambda _: rows < max_sequences, batches):
        batch = move_batch(batch, device)
        with autocast(device, amp_dtype):
            out = model(**batch)
        targets = batch["labels"][batch["labels"] != IGNORE_INDEX]  # [M]
        loss_sum += out.loss.item() * out.num_predictions
        correct += int((out.logits.argmax(dim=-1) == targets).sum())  # logits [M,V] -> [M]
        predictions += out.num_predictions
        rows += len(batch["input_ids"])
    model.train(was_training)
    if predictions == 0:
        raise ValueError("evaluation: the held-out batches hold no masked position; raise --heldout-fraction")
    loss = loss_sum / predictions
    return {"eval_loss": loss, "eval_acc": correct / predictions,
            "eval_ppl": math.exp(min(loss, 700.0)),  # exp(>709) overflows a float
            "eval_predictions": predictions}
