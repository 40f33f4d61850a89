"""Plateau diagnostics: is the model using context yet? Two numbers logged at every held-out evaluation.

A BERT trained from scratch first learns the token frequencies: it predicts the frequent tokens everywhere and its
accuracy sits at the unigram baseline (the "unigram plateau"; loss stuck near the unigram entropy). It leaves the
plateau when attention starts to pick out specific positions (Chen et al. 2023, "Sudden drops in the loss":
attention structure forms abruptly, and the loss drop follows). Two signals show this before accuracy does:

- attention_entropy: the mean entropy of the attention distributions over layers, heads and query positions,
  as a fraction of the uniform distribution's ln(T) (T = keys a query may attend to). 1.0 = every head averages
  all positions (a bag of words: no order, no neighbours); it falls when heads focus, e.g. on the previous token.
- hidden_cosine: the mean cosine similarity between the last layer's hidden states of two positions of one row.
  Near 1 = the representations have collapsed to one vector per row: the model can only predict the same
  distribution at every masked position. It falls as positions get representations of their own context.

With `bigram_gap` = held-out accuracy - bidirectional-bigram accuracy (pretrain/baselines.py), a learner reads the
curve: flat accuracy + entropy near 1 + cosine near 1 = still on the plateau; entropy and cosine dropping = the
model is starting to use context, and accuracy follows.

Dimension legend: B rows, N heads, T tokens (queries and keys), H hidden size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minibert.training.device import move_batch
from minibert.training.logs import MetricsLog, plot_curves
from pretrain.baselines import standing
from pretrain.evaluation import evaluate


@torch.no_grad()
def context_diagnostics(model: nn.Module, batch: dict, device: torch.device) -> dict:
    """Attention entropy and hidden-state similarity of `model` (a BertForMaskedLM) on one held-out batch.

    Args:
        model: the (unwrapped) BertForMaskedLM.
        batch: a masked batch dict, as `evaluate` gets (padding, if any, is excluded via its attention_mask).
        device: where the model is.
    Returns:
        {"attention_entropy": fraction of ln(T) in [0, 1], "hidden_cosine": mean pairwise cosine in [-1, 1]}.
    """
    was_training = model.training
    model.eval()
    batch = move_batch(batch, device)
    # output_attentions takes the reference attention path (it materialises [B,N,T,T]): fine for one batch.
    out = model.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], output_attentions=True)
    model.train(was_training)
    B, T = batch["input_ids"].shape
    valid = (batch["attention_mask"] if batch["attention_mask"] is not None
             else torch.ones(B, T, device=device)).bool()                                      # [B,T]
    keys = valid.sum(dim=1).clamp(min=2).float()                                               # [B] keys per row
    entropies = []
    for probs in out.attentions:                                                                # [B,N,T,T]
        probs = probs.float()
        entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum(dim=-1)                      # [B,N,T]
        entropy = entropy / torch.log(keys)[:, None, None]                                      # fraction of ln T
        entropies.append(entropy.mean(dim=1)[valid])                                            # [valid queries]
    hidden = nn.functional.normalize(out.last_hidden_state.float(), dim=-1) * valid[..., None]  # [B,T,H]
    n = valid.sum(dim=1).float()                                                                # [B]
    # Mean over pairs i != j of u_i·u_j = (|Σ u_i|² - Σ |u_i|²) / (n(n-1)), with |u_i| = 1.
    pair_sum = hidden.sum(dim=1).pow(2).sum(dim=-1) - n                                          # [B]
    cosine = pair_sum / (n * (n - 1)).clamp(min=1)
    return {"attention_entropy": float(torch.cat(entropies).mean()),
            "hidden_cosine": float(cosine[n > 1].mean()) if bool((n > 1).any()) else math.nan}


def evaluate_with_diagnostics(model: nn.Module, heldout, device: torch.device, amp_dtype, max_sequences: int,
                              baselines: dict) -> dict:
    """`evaluate` on the held-out batches, plus the two diagnostics (on the first held-out batch) and
    bigram_gap = eval_acc - bigram_acc (> 0: the model beats counting its two neighbours)."""
    metrics = evaluate(model, heldout.epoch_batches(), device, amp_dtype, max_sequences)
    metrics.update(context_diagnostics(model, next(heldout.epoch_batches()), device))
    metrics["bigram_gap"] = metrics["eval_acc"] - baselines["bigram_acc"]
    return metrics


def describe_evaluation(metrics: dict, baselines: dict) -> str:
    """The evaluation's log line: the standing against counting, the loss, and the two plateau diagnostics."""
    return (f"{standing(metrics, baselines)} | loss {metrics['eval_loss']:.3f}, perplexity {metrics['eval_ppl']:.1f} | "
            f"attention entropy {metrics['attention_entropy']:.2f}, hidden cosine {metrics['hidden_cosine']:.2f}")


def plot_run(log_path, png_path, title: str, baselines: dict) -> None:
    """loss_curve.png: the train and held-out loss, and a panel with the held-out accuracy, the two diagnostics
    above and the count baselines as horizontal lines (where the model stands against counting, at a glance); a
    dotted vertical line where the small model grew (pretrain/growth.py), the step at which the diagnostics jump."""
    grew = {f"grew to {r['grew_to']}": r["step"] for r in MetricsLog(log_path).read() if "grew_to" in r}
    plot_curves(log_path, png_path, {"train loss": ("step", "loss"), "held-out loss": ("step", "eval_loss")},
                title=title,
                accuracy={"held-out accuracy": ("step", "eval_acc"),
                          "attention entropy / ln T": ("step", "attention_entropy"),
                          "hidden-state cosine": ("step", "hidden_cosine")},
                baselines={"±2 window": baselines["window2_acc"], "bigram": baselines["bigram_acc"],
                           "unigram": baselines["unigram_acc"]}, events=grew)
