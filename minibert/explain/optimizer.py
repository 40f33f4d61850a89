"""Demos of the optimizer: 权重衰减 weight decay groups, weight decay vs L2, Adam bias correction and
差分学习率 differential learning rates. The code they exercise is minibert/training/optim.py."""

from __future__ import annotations

import torch

from ..heads import BertForSequenceClassification
from ..model import BertForMaskedLM
from ..training.optim import build_adamw, format_group_table, param_groups
from .common import DemoContext, conclude, show, table, tiny_config, title


def weight_decay_groups(ctx: DemoContext) -> dict:
    title("权重衰减参数分组 weight-decay parameter groups: decay matrices, not biases or LayerNorm")
    model = BertForMaskedLM(tiny_config())
    groups = param_groups(model, lr=1e-4, weight_decay=0.01)
    print(format_group_table(groups))
    no_decay = [n for g in groups if g["weight_decay"] == 0 for n in g["param_names"]]
    norm_params = [n for n, _ in model.named_parameters() if "norm" in n]
    print("\n   The usual copy-pasted rule, run on minibert's parameter names:")
    names = [n for n, _ in model.named_parameters()]
    pattern = ["bias", "LayerNorm.weight"]
    substring = [n for n in names if any(p in n for p in pattern)]
    exact = [n for n in names if n in pattern]
    show("no-decay params, minibert (by module type)", len(no_decay))
    show("no-decay params, substring rule any(p in name)", len(substring))
    show("no-decay params, exact rule name in [...]", len(exact))
    missed = sorted(set(no_decay) - set(substring))
    show("LayerNorm gammas the substring rule still decays", len(missed))
    print(f"   e.g. {missed[0]}")
    conclude(f"minibert exempts all {len(norm_params)} LayerNorm parameters and every bias; the substring rule "
             f"misses {len(missed)} gammas (ours are named layer_norm/attention_norm/ffn_norm), the exact rule "
             f"exempts {len(exact)}")
    return {"no_decay": len(no_decay), "substring": len(substring), "exact": len(exact), "missed": len(missed),
            "norm_params": len(norm_params)}


def weight_decay_vs_l2(ctx: DemoContext) -> dict:
    title("权重衰减 vs L2 正则 weight decay vs L2 regularisation under Adam (Loshchilov & Hutter 2019)")
    print("   Two weights start at 1.0 with a zero-mean loss gradient (+g, -g, +g, ...): weight A is quiet")
    print("   (g = 0.01), weight B is busy (g = 10). Without a penalty neither drifts. Penalty strength 0.1.")
    lr, lam, steps = 1e-2, 0.1, 200
    runs = {"no penalty": lambda w: torch.optim.Adam([w], lr=lr),
            # torch's Adam(weight_decay=...) IS L2: it adds λw to the gradient before the moment estimates
            "Adam + L2 (grad += λw)": lambda w: torch.optim.Adam([w], lr=lr, weight_decay=lam),
            "AdamW (w -= lr·λ·w)": lambda w: torch.optim.AdamW([w], lr=lr, weight_decay=lam)}
    final = {}
    for name, make in runs.items():
        w = torch.nn.Parameter(torch.ones(2))
        opt = make(w)
        for t in range(steps):
            w.grad = torch.tensor([0.01, 10.0]) * (1 if t % 2 == 0 else -1)  # the loss gradient
            opt.step()
        final[name] = w.detach().clone()
    table([(name, f"{w[0].item():.3f}", f"{w[1].item():.3f}") for name, w in final.items()],
          (f"weight after {steps} steps", "A (quiet, g=0.01)", "B (busy, g=10)"))
    l2, dec = final["Adam + L2 (grad += λw)"], final["AdamW (w -= lr·λ·w)"]
    conclude(f"Adam divides the L2 term by √v: the quiet weight A is crushed to {l2[0].item():.3f} while the busy "
             f"B keeps {l2[1].item():.3f}; AdamW shrinks both by the same factor ({dec[0].item():.3f}, "
             f"{dec[1].item():.3f}): under Adam, L2 and weight decay are different regularisers")
    return {"l2": l2.tolist(), "adamw": dec.tolist(), "none": final["no penalty"].tolist()}


def adam_bias_correction(ctx: DemoContext) -> dict:
    title("Adam 偏差修正 bias correction: m̂ = m/(1-β1^t), v̂ = v/(1-β2^t) (Kingma & Ba 2015, §3)")
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-6
    w = torch.nn.Parameter(torch.zeros(1))
    opt = build_adamw([{"params": [w], "lr": lr, "weight_decay": 0.0}], betas=(b1, b2), eps=eps)
    m = v = 0.0
    w_raw = 0.0  # the same optimizer WITHOUT bias correction (google-research/bert's AdamWeightDecayOptimizer)
    rows, steps_shown = [], {1, 2, 5, 10, 50, 100, 1000}
    ratio_at = {}
    for t in range(1, 1001):
        g = 1.0  # a constant gradient makes the effect exact: the ideal step is lr every time
        before = w.item()
        w.grad = torch.tensor([g])
        opt.step()
        step_corrected = abs(w.item() - before)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step_raw = lr * m / (v ** 0.5 + eps)
        w_raw -= step_raw
        ratio_at[t] = step_raw / step_corrected
        if t in steps_shown:
            rows.append((t, f"{step_corrected:.2e}", f"{step_raw:.2e}", f"{ratio_at[t]:.2f}x"))
    table(rows, ("step t", "with correction (torch AdamW)", "without", "ratio"))
    peak_t = max(ratio_at, key=ratio_at.get)
    conclude(f"without correction the first step is {ratio_at[1]:.2f}x too LARGE and step {peak_t} "
             f"{ratio_at[peak_t]:.1f}x (v starts near 0 and is divided out); by step 1000 it is "
             f"{ratio_at[1000]:.2f}x. Warmup hides this, few-sample fine-tuning does not (Zhang et al. 2021)")
    return {"ratio_step1": ratio_at[1], "peak_ratio": ratio_at[peak_t], "peak_step": peak_t,
            "ratio_step1000": ratio_at[1000]}


def differential_lr(ctx: DemoContext) -> dict:
    title("差分学习率 differential learning rates: a larger LR for the new head, layer-wise decay below it")
    model = BertForSequenceClassification(tiny_config(num_hidden_layers=3), num_labels=14)  # e.g. Tianchi
    # As finetune/train.py does: the new "classifier" gets head_lr, the encoder a decayed lr per layer.
    groups = param_groups(model, lr=2e-5, weight_decay=0.01, head_lr=1e-3, head_prefixes=("classifier",),
                          layer_decay=0.8)
    print(format_group_table(groups))
    lrs = {g["name"]: g["lr"] for g in groups}
    emb = lrs["depth 0 weights"]
    top = lrs["depth 3 weights"]
    conclude(f"head lr {lrs['head weights']:.0e} >> top layer {top:.2e} > embeddings {emb:.2e} "
             f"(x0.8 per layer): the random head learns fast, the pretrained bottom barely moves")
    return {"lrs": lrs}
