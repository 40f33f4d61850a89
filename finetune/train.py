"""THE fine-tuning loop, shared by every task: read it top to bottom.

    for each epoch:
        for each optimizer step:
            for each of `gradient_accumulation` micro-batches:     梯度累积 gradient accumulation
                forward (autocast on CUDA), backward the SUM of the per-term losses
            divide the gradients by the number of terms, clip them   梯度裁剪 gradient clipping
            AdamW step (groups: weight decay, head LR, layer decay), LR schedule step (warmup + decay)
        evaluate on dev; print a stats row; keep the best checkpoint; stop early when dev stops improving
        (with --eval-every N, also every N steps inside the epoch)
    draw the learning curve, write metrics.json

Why backward the SUM and divide later? A step's loss must be the mean over EVERY term (example, labelled token,
(example, type) row) of every micro-batch. Averaging the micro-batch means instead ("divide each loss by the
number of accumulation steps") over-weights the terms of a small micro-batch, e.g. the last one of an epoch, or
one with few labelled tokens. Gradients are linear in the loss, so dividing the summed gradient by the total
term count equals dividing each micro-batch's loss sum by it (tests/test_finetune.py checks 4×8 == 32).

Dimension legend: B batch, T sequence length, C labels.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from minibert.training.device import autocast, autocast_dtype, make_grad_scaler, move_batch, pick_device
from minibert.training.io import atomic_write_text
from minibert.training.logs import MetricsLog, plot_curves
from minibert.training.optim import build_adamw, format_group_table, param_groups
from minibert.training.schedule import build_scheduler

from .checkpoints import save_finetuned
from minibert.cli import RunFailed

from .config import FinetuneConfig
from .features import bucketed_batches, collate
from .prepare import Prepared
from .tasks import compute_metrics, decode, gold_labels

SHOWN_METRICS = ("accuracy", "macro_f1", "mcc", "micro_f1", "precision", "recall", "f1")


class NonFiniteLoss(RunFailed):
    """The loss became inf/NaN: training stops (exit 1), the best checkpoint so far stays on disk."""


def nonfinite_message(step: int, loss: float, cfg: FinetuneConfig, out_dir: Path) -> str:
    """Why the run stopped and what to change: the flags that can make the loss blow up, and the best checkpoint
    only if one exists (nothing is kept before the first dev evaluation)."""
    best = out_dir / "best"
    kept = (f"the best checkpoint so far is in {best}" if (best / "model.safetensors").is_file()
            else "no checkpoint was kept (none before the first dev evaluation)")
    return (f"step {step}: the training loss is {loss}; lower --lr (now {cfg.lr}) or --head-lr (now {cfg.head_lr}), "
            f"keep --max-grad-norm on (now {cfg.max_grad_norm}), or use --precision fp32; {kept}")


@torch.no_grad()
def evaluate(model, prepared: Prepared, cfg: FinetuneConfig, device, dtype, features=None, examples=None,
             with_labels: bool = True) -> tuple[float | None, dict, list]:
    """Loss, metrics and predictions on dev (or on `features`/`examples` given). Returns (loss, metrics, preds)
    with predictions in the ORIGINAL order: batches are sorted by length for speed, then put back."""
    spec = prepared.spec
    features = prepared.dev_features if features is None else features
    examples = prepared.dev_examples if examples is None else examples
    model.eval()
    predictions, loss_sum, terms = [None] * len(features), 0.0, 0.0
    label_kind = spec.label_kind if with_labels else "none"
    for index in bucketed_batches([len(f.input_ids) for f in features], cfg.eval_batch_size, shuffle=False):
        batch_features = [features[i] for i in index]
        batch = move_batch(collate(batch_features, prepared.tokenizer.pad_id, label_kind, spec.num_labels), device)
        with autocast(device, dtype):
            out = model(**batch)
        if with_labels:
            loss_sum += out.loss.item() * float(out.num_loss_terms)
            terms += float(out.num_loss_terms)
        for i, prediction in zip(index.tolist(), decode(spec, out.logits, batch_features, cfg.threshold)):
            predictions[i] = prediction
    if not with_labels:
        return None, {}, predictions
    metrics = compute_metrics(spec, gold_labels(spec, examples), predictions)
    return loss_sum / max(terms, 1.0), metrics, predictions


def accumulate_gradients(model, micro_batches: list[dict], scaler, device, dtype) -> tuple[float, float]:
    """梯度累积 Gradient accumulation for ONE optimizer step: forward and backward every micro-batch, leaving in
    `.grad` the gradient of the mean loss over all terms of all micro-batches (see the module docstring).

    Args:
        micro_batches: collated batches (dicts of [B,T] tensors and labels), moved to `device` here.
        scaler: the GradScaler (a no-op unless fp16); gradients stay scaled, unscale_ them before clipping.
    Returns:
        (mean loss over all terms, number of terms).
    """
    loss_sum, total_terms = 0.0, 0.0
    for batch in micro_batches:
        batch = move_batch(batch, device)
        with autocast(device, dtype):
            out = model(**batch)
        terms = float(out.num_loss_terms)  # examples, labelled tokens, or (example, type) rows
        scaler.scale(out.loss * terms).backward()  # the SUM over this micro-batch's terms
        loss_sum += out.loss.item() * terms
        total_terms += terms
    for p in model.parameters():
        if p.grad is not None:
            p.grad.div_(max(total_terms, 1.0))  # sum over all terms -> mean over all terms
    return loss_sum / max(total_terms, 1.0), total_terms


def stats_row(values: list, widths: list[int]) -> str:
    return " | ".join(str(v).rjust(w) for v, w in zip(values, widths))


def train(cfg: FinetuneConfig, prepared: Prepared) -> dict:
    """Fine-tune `prepared.model`; returns the summary that is also written to <out>/metrics.json."""
    spec, out_dir = prepared.spec, Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    dtype = autocast_dtype(device, cfg.precision)  # None = fp32 (the CPU default)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    model = prepared.model.to(device)
    torch.manual_seed(cfg.seed)  # dropout masks

    # ---- optimizer: AdamW groups (no decay on biases/LayerNorm; head LR; optional layer-wise decay)
    groups = param_groups(model, cfg.lr, cfg.weight_decay, head_lr=cfg.head_lr, head_prefixes=spec.head_prefixes,
                          layer_decay=cfg.layer_decay)
    tqdm.write(format_group_table(groups))
    optimizer = build_adamw(groups)
    batches_per_epoch = math.ceil(len(prepared.train_features) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation)
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps,
                                                                                  cfg.epochs * steps_per_epoch)
    warmup_steps = int(cfg.warmup_ratio * total_steps)
    scheduler = build_scheduler(optimizer, warmup_steps, total_steps, cfg.schedule)
    scaler = make_grad_scaler(device, dtype)  # active only for fp16 on CUDA
    params = [p for group in optimizer.param_groups for p in group["params"]]  # for clipping
    lengths = np.array([len(f.input_ids) for f in prepared.train_features])

    log_path = out_dir / "metrics.jsonl"
    log_path.unlink(missing_ok=True)  # a fresh run starts a fresh log
    log = MetricsLog(log_path)
    tqdm.write(f"device {device}, precision {dtype or torch.float32}, {len(prepared.train_features)} train / "
               f"{len(prepared.dev_features)} dev examples, {total_steps} steps ({warmup_steps} warmup), "
               f"batch {cfg.batch_size} x {cfg.gradient_accumulation} accumulation")
    history, step = [], 0
    best = {"score": -math.inf, "epoch": 0, "metrics": None, "evaluations_without_gain": 0}

    def dev_round(epoch: float, train_loss: float, seconds: float) -> bool:
        """Evaluate on dev, print a stats row, keep the best checkpoint. Returns True when early stopping says stop."""
        dev_loss, metrics, _ = evaluate(model, prepared, cfg, device, dtype)
        score = metrics[spec.metric]
        history.append({"epoch": epoch, "step": step, "train_loss": train_loss, "dev_loss": dev_loss,
                        "seconds": seconds, **{k: metrics[k] for k in SHOWN_METRICS if k in metrics}})
        log.write({"step": step, "epoch": epoch, "dev_loss": dev_loss, "dev_" + spec.metric: score})
        shown = [k for k in SHOWN_METRICS if k in metrics]  # the task's metrics, in a fixed order
        widths = [5, 10, 8] + [max(len(k), 8) for k in shown] + [6]
        if len(history) == 1:  # 训练统计表 the training-stats table
            tqdm.write(stats_row(["epoch", "train loss", "dev loss", *shown, "time"], widths))
        tqdm.write(stats_row([f"{epoch:g}", f"{train_loss:.4f}", f"{dev_loss:.4f}",
                              *[f"{metrics[k]:.4f}" for k in shown], f"{seconds:.0f}s"], widths))
        model.train()  # evaluate() switched to eval mode
        if score > best["score"]:
            best.update(score=score, epoch=epoch, metrics=metrics, evaluations_without_gain=0)
            save_finetuned(out_dir / "best", model, prepared.vocab_path,
                           {"task": spec.task, "epoch": epoch, "step": step, "spec": spec.to_dict(),
                            "config": cfg.to_dict(), "dev": {spec.metric: score}})
            return False
        best["evaluations_without_gain"] += 1
        if cfg.patience and best["evaluations_without_gain"] >= cfg.patience:
            tqdm.write(f"early stopping: dev {spec.metric} has not improved for {cfg.patience} evaluation(s)")
            return True
        return False

    bar = tqdm(total=total_steps, disable=not cfg.progress, desc="fine-tune", leave=False)
    stop = False
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        started = time.time()
        batches = bucketed_batches(lengths, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch)
        period_loss, period_terms = 0.0, 0.0  # training loss since the last dev evaluation
        for first in range(0, len(batches), cfg.gradient_accumulation):
            if step >= total_steps:
                break
            micro_batches = [collate([prepared.train_features[i] for i in index], prepared.tokenizer.pad_id,
                                     spec.label_kind, spec.num_labels)
                             for index in batches[first:first + cfg.gradient_accumulation]]
            step_loss, step_terms = accumulate_gradients(model, micro_batches, scaler, device, dtype)
            if not math.isfinite(step_loss):
                raise NonFiniteLoss(nonfinite_message(step + 1, step_loss, cfg, out_dir))
            scaler.unscale_(optimizer)  # fp16: undo the loss scaling before clipping
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(optimizer)  # skipped by the scaler if fp16 gradients overflowed
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            period_loss, period_terms = period_loss + step_loss * step_terms, period_terms + step_terms
            lr = scheduler.get_last_lr()[0]
            log.write({"step": step, "epoch": epoch, "train_loss": step_loss, "lr": lr})
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
            last_of_epoch = first + cfg.gradient_accumulation >= len(batches) or step >= total_steps
            if cfg.eval_every and step % cfg.eval_every == 0 and not last_of_epoch:  # optional mid-epoch check
                stop = dev_round(round(step / steps_per_epoch, 2), period_loss / max(period_terms, 1.0),
                                 time.time() - started)
                period_loss, period_terms, started = 0.0, 0.0, time.time()
                if stop:
                    break
        if stop:
            break
        # ---- end of epoch: evaluate, report, keep the best, maybe stop early
        if dev_round(epoch, period_loss / max(period_terms, 1.0), time.time() - started) or step >= total_steps:
            break
    bar.close()

    plot_curves(log_path, out_dir / "learning_curve.png", {"train loss": ("step", "train_loss"),
                                                          "dev loss": ("step", "dev_loss")},
                title=f"{spec.task}: train vs dev loss (dev rising while train falls = overfitting)")
    summary = {"metric": spec.metric, "best_epoch": best["epoch"], "best": best["metrics"], "steps": step,
               "history": history, "spec": spec.to_dict(), "config": cfg.to_dict()}
    atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out_dir / "finetune_config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    return summary
