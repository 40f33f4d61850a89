"""Demos of one training step: 梯度累积 gradient accumulation, 梯度裁剪 gradient clipping and
学习率预热 warmup. The code they exercise is minibert/training/ and the pretraining loop."""

from __future__ import annotations

import torch

from ..model import IGNORE_INDEX, BertForMaskedLM
from ..training.accumulation import count_predictions, loss_weight
from ..training.schedule import lr_multiplier
from ..training.logs import pyplot, save_figure
from .common import DemoContext, conclude, max_abs_diff, show, table, tiny_config, title


def _mlm_batch(config, batch_size: int, seq_len: int, generator: torch.Generator):
    """Random IDs and MLM labels whose masking rate differs per sequence (2%..60%), so that micro-batches hold
    different numbers M of predictions: the case that exposes the wrong normalisations."""
    ids = torch.randint(5, config.vocab_size, (batch_size, seq_len), generator=generator)  # [B,T]
    rates = torch.linspace(0.02, 0.6, batch_size)[torch.randperm(batch_size, generator=generator)]  # [B]
    chosen = torch.rand(batch_size, seq_len, generator=generator) < rates[:, None]  # [B,T]
    chosen[:, 1] = True  # at least one prediction per sequence
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))  # [B,T]
    return ids, labels


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def gradient_accumulation(ctx: DemoContext) -> dict:
    title("梯度累积 gradient accumulation: 4 micro-batches of 8 must give the gradient of one batch of 32")
    torch.manual_seed(0)
    config = tiny_config()  # dropout 0: with dropout the two runs would draw different masks
    model = BertForMaskedLM(config)
    ids, labels = _mlm_batch(config, 32, 24, torch.Generator().manual_seed(1))  # [32,T]

    model.zero_grad()
    model(ids, labels=labels).loss.backward()  # the loss is the mean over ALL M masked tokens of the batch
    reference = _grads(model)

    micro = [(ids[i:i + 8], labels[i:i + 8]) for i in range(0, 32, 8)]
    counts = [count_predictions(lab) for _, lab in micro]  # M_k per micro-batch
    total = sum(counts)
    show("masked tokens per micro-batch M_k", counts)
    results = {}
    # The right weight is the pretraining loop's own: training.accumulation.loss_weight(M_k, sum M) = M_k / sum M.
    ways = {"right: loss_k * M_k / sum(M)": lambda k: loss_weight(counts[k], total),
            "wrong: loss_k / 4 (divide by steps)": lambda k: 1 / len(micro),
            "wrong: loss_k (no division)": lambda k: 1.0}
    for name, weight in ways.items():
        model.zero_grad()
        for k, (x, y) in enumerate(micro):  # .backward() ADDS into .grad: that is what accumulates
            (model(x, labels=y).loss * weight(k)).backward()
        results[name] = max_abs_diff(_grads(model), reference)
    scale = max(g.abs().max().item() for g in reference)
    table([(name, f"{diff:.1e}", f"{diff / scale:.1e}") for name, diff in results.items()],
          ("accumulate 4 x 8", "max |grad - grad(32)|", "relative"))
    right, steps, none = results.values()
    conclude(f"weighting each micro-batch by its share of masked tokens matches the big batch to {right:.0e}; "
             f"dividing by the step count is off by {steps:.0e} (the micro-batches have different M), "
             f"not dividing at all is {len(micro)}x too large")
    return {"right": right, "divide_by_steps": steps, "no_division": none, "scale": scale}


def gradient_clipping(ctx: DemoContext) -> dict:
    title("梯度裁剪 gradient clipping: rescale the whole gradient to norm <= 1.0, keep its direction")
    torch.manual_seed(0)
    config = tiny_config()
    model = BertForMaskedLM(config)
    ids, labels = _mlm_batch(config, 8, 24, torch.Generator().manual_seed(2))
    (model(ids, labels=labels).loss * 50).backward()  # x50: pretend a loss spike
    before = torch.cat([p.grad.flatten() for p in model.parameters()])  # [num_params]
    reported = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # returns the norm BEFORE clipping
    after = torch.cat([p.grad.flatten() for p in model.parameters()])
    cos_norm = torch.nn.functional.cosine_similarity(before, after, dim=0).item()
    for p, g in zip(model.parameters(), before.split([p.numel() for p in model.parameters()])):
        p.grad.copy_(g.view_as(p))  # restore, then clip by VALUE for comparison
    torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=0.01)
    by_value = torch.cat([p.grad.flatten() for p in model.parameters()])
    cos_value = torch.nn.functional.cosine_similarity(before, by_value, dim=0).item()
    show("global grad norm before (clip_grad_norm_ returns it)", reported.item())
    show("global grad norm after clip_grad_norm_(1.0)", after.norm().item())
    show("cosine(before, after) for clip by norm", round(cos_norm, 6))
    show("cosine(before, after) for clip_grad_value_(0.01)", round(cos_value, 4))
    # The fp16 trap: with a GradScaler the .grad values are multiplied by the loss scale (e.g. 65536). Clipping
    # them before scaler.unscale_(optimizer) clips the SCALED norm, so the real update becomes ~65536x smaller.
    scale = 65536.0
    scaled_norm = reported.item() * scale
    show("fp16 trap: norm of scaled grads (loss scale 65536)", scaled_norm)
    show("real norm if clipped before unscale_ (1.0 / 65536)", 1.0 / scale)
    conclude(f"clip by norm keeps the direction (cosine {cos_norm:.6f}) and logs the pre-clip norm "
             f"{reported.item():.1f}; clip by value bends it (cosine {cos_value:.3f}). With AMP, call "
             f"scaler.unscale_(optimizer) before clipping, and clip once per optimizer step, not per micro-batch")
    return {"norm_before": reported.item(), "norm_after": after.norm().item(), "cos_norm": cos_norm,
            "cos_value": cos_value}


def warmup(ctx: DemoContext) -> dict:
    title("学习率预热 warmup: LR climbs linearly for 10% of the steps, then decays to 0")
    total, warm, peak = 100, 10, 1e-4
    linear = [peak * lr_multiplier(s, warm, total, "linear") for s in range(total)]
    cosine = [peak * lr_multiplier(s, warm, total, "cosine") for s in range(total)]
    rows, cols = 10, 50  # an ASCII plot: one column per 2 steps, one row per 10% of the peak
    grid = [[" "] * cols for _ in range(rows + 1)]
    for c in range(cols):
        grid[round(cosine[2 * c] / peak * rows)][c] = "+"
        grid[round(linear[2 * c] / peak * rows)][c] = "#"  # drawn last: '#' wins where the curves meet
    print(f"   lr / peak ({peak:.0e})   '#' warmup + linear decay, '+' warmup + cosine decay")
    for r in range(rows, -1, -1):
        print(f"   {r / rows:4.1f} |" + "".join(grid[r]))
    print("        +" + "-" * cols + f"> step 0..{total - 1}, 2 steps per column")
    show("lr at step 0 (never exactly 0)", linear[0])
    show(f"lr at step {warm - 1} (end of warmup)", linear[warm - 1])
    show(f"lr at step {total // 2}, linear / cosine", f"{linear[total // 2]:.2e} / {cosine[total // 2]:.2e}")
    show(f"lr at step {total - 1}", linear[-1])
    png = None
    try:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 3), dpi=110)
        ax.plot(linear, label="warmup + linear decay (BERT)")
        ax.plot(cosine, label="warmup + cosine decay")
        ax.axvline(warm - 1, color="gray", ls=":", label="end of warmup")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("learning rate")
        ax.legend()
        png = ctx.png_path("warmup.png")
        save_figure(fig, png)  # atomic: a reader never sees half a PNG
        show("plot written to", str(png))
    except OSError as e:
        show("plot not written", str(e))
    conclude(f"step 0 uses peak/{warm}, step {warm - 1} the peak {peak:.0e}, then the LR falls to "
             f"{linear[-1]:.1e} at the last step; post-LN BERT needs the slow start because Adam's early steps "
             f"are noisy (Liu et al. 2020)")
    return {"first": linear[0], "peak": linear[warm - 1], "last": linear[-1], "png": png}
