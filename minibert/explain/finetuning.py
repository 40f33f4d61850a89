"""Demos of judging a fine-tuned model: 马修斯相关系数 MCC vs accuracy on imbalanced labels, and 过拟合
overfitting seen in the dev loss. The code they exercise is finetune/metrics.py and minibert/heads.py."""

from __future__ import annotations

import numpy as np
import torch

from ..heads import BertForSequenceClassification
from ..training.logs import pyplot, save_figure
from .common import DemoContext, conclude, show, table, tiny_config, title


def mcc_vs_accuracy(ctx: DemoContext) -> dict:
    from finetune.metrics import classification_metrics  # the fine-tuning pipeline's own metrics

    title("马修斯相关系数 MCC vs accuracy: on imbalanced labels accuracy rewards doing nothing")
    rng = np.random.default_rng(0)
    gold = (rng.random(1000) < 0.3).astype(int)  # CoLA-like: 70% of sentences are class 1 ... here class 0
    gold = 1 - gold  # 70% class 1 (acceptable), 30% class 0
    predictors = {
        "always the majority class": np.ones_like(gold),
        "random guess, 70/30": (rng.random(1000) < 0.7).astype(int),
        "a real model (85% right per class)": np.where(rng.random(1000) < 0.85, gold, 1 - gold),
        "always wrong": 1 - gold,
    }
    rows, results = [], {}
    for name, predicted in predictors.items():
        m = classification_metrics(gold, predicted, num_classes=2)
        results[name] = m
        rows.append((name, f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", f"{m['mcc']:+.3f}"))
    table(rows, ("predictor (70% of gold labels are 1)", "accuracy", "macro-F1", "MCC"))
    majority = results["always the majority class"]
    conclude(f"'always 1' scores accuracy {majority['accuracy']:.2f} but MCC {majority['mcc']:.2f}: MCC is a "
             f"correlation, 0 for any constant or random guess whatever the class balance, +1 perfect, -1 inverted. "
             f"That is why CoLA reports MCC and Tianchi macro-F1")
    return {name: {k: m[k] for k in ("accuracy", "macro_f1", "mcc")} for name, m in results.items()}


def _task(n: int, noise: float, generator: torch.Generator):
    """Label = does token 7 appear? A learnable rule; `noise` of the labels are flipped (label noise to memorise)."""
    ids = torch.randint(8, 60, (n, 12), generator=generator)  # [N,T]
    has = torch.rand(n, generator=generator) < 0.5
    ids[has, torch.randint(1, 12, (int(has.sum()),), generator=generator)] = 7
    ids[:, 0] = 2  # [CLS]
    labels = has.long()
    flip = torch.rand(n, generator=generator) < noise
    return ids, torch.where(flip, 1 - labels, labels)


def overfitting(ctx: DemoContext) -> dict:
    title("过拟合 overfitting: train loss keeps falling, dev loss turns up; early stopping keeps the best epoch")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    train_x, train_y = _task(64, noise=0.25, generator=g)  # few, noisy examples: easy to memorise
    dev_x, dev_y = _task(200, noise=0.0, generator=g)
    model = BertForSequenceClassification(tiny_config(), num_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    history = []
    for epoch in range(1, 37):
        model.train()
        opt.zero_grad()
        loss = model(train_x, labels=train_y).loss
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            dev = model(dev_x, labels=dev_y)
        dev_acc = (dev.logits.argmax(-1) == dev_y).float().mean().item()
        history.append((epoch, loss.item(), dev.loss.item(), dev_acc))
    best = min(history, key=lambda h: h[2])
    shown = [h for h in history if h[0] % 4 == 0 or h[0] == best[0]]
    table([(e, f"{tl:.3f}", f"{dl:.3f}", f"{acc:.3f}", "<- best dev loss" if e == best[0] else "")
           for e, tl, dl, acc in shown], ("epoch", "train loss", "dev loss", "dev acc", ""))
    png = None
    try:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 3), dpi=110)
        ax.plot([h[0] for h in history], [h[1] for h in history], label="train loss")
        ax.plot([h[0] for h in history], [h[2] for h in history], label="dev loss")
        ax.axvline(best[0], color="gray", ls=":", label=f"best dev loss (epoch {best[0]})")
        ax.set_xlabel("epoch (one full-batch step each)")
        ax.legend()
        png = ctx.png_path("overfitting.png")
        save_figure(fig, png)  # atomic: a reader never sees half a PNG
        show("learning curve written to", str(png))
    except OSError as e:
        show("plot not written", str(e))
    last = history[-1]
    conclude(f"dev loss is lowest at epoch {best[0]} ({best[2]:.3f}) and {last[2]:.3f} at epoch {last[0]} while the "
             f"train loss fell to {last[1]:.3f}: the model memorises the 25% flipped labels. Watch the dev LOSS "
             f"(it turns before dev accuracy does) and keep the best checkpoint")
    return {"best_epoch": best[0], "best_dev": best[2], "last_dev": last[2], "last_train": last[1],
            "first_train": history[0][1], "png": png}
