"""THE fine-tuning loop, shared by every task: read it top to bottom.

    for each epoch:
        for each optimizer step:
            count the loss terms n_i of each micro-batch on the CPU    梯度累积 gradient accumulation
            for each of `gradient_accumulation` micro-batches:
                forward (autocast on CUDA), backward loss_i · n_i / Σn
                    (+ λ · MLM loss_i · m_i / Σm with --mlm-weight λ: finetune/auxiliary.py, 辅助 MLM 损失)
            clip the gradients, AdamW step, LR schedule step           梯度裁剪 gradient clipping
        evaluate on dev; print a stats row; keep the best checkpoint; stop early when dev stops improving
        (with --eval-every N, also every N steps inside the epoch)
    draw the learning curve, write metrics.json

Gradient accumulation follows the one rule of minibert/training/accumulation.py, shared with pretraining: a
step's loss is the mean over EVERY term (example, labelled token, (example, type) row) of every micro-batch, so
micro-batch i is weighted by n_i / Σn. Averaging the micro-batch means instead ("divide each loss by the number
of accumulation steps") over-weights the terms of a small micro-batch, e.g. the last one of an epoch, or one with
few labelled tokens (tests/test_finetune.py checks 4 unequal micro-batches == 1 batch of 32).

The GPU never waits for the host inside a step: ids and labels are checked on the CPU batch before the copy
(check_batch; the model's own checks are off while training), the step's loss stays on the device, and the
per-step losses are read (one sync) every LOG_EVERY steps and before every dev evaluation, which is also when a
non-finite loss is caught. The checkpoint is written only after that check, so it never holds non-finite weights.

Dimension legend: B batch, T sequence length, C labels, W windows (--truncate windows).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from minibert.globalpointer import check_span_labels
from minibert.heads import check_labels, check_multi_hot
from minibert.input_checks import check_inputs
from minibert.training.accumulation import global_prediction_count, loss_weight
from minibert.training.device import autocast, autocast_dtype, make_grad_scaler, move_batch, pick_device
from minibert.training.io import atomic_write_text
from minibert.training.logs import MetricsLog, plot_curves
from minibert.training.optim import build_adamw, format_group_table, param_groups
from minibert.training.schedule import build_scheduler, lr_multiplier

from .auxiliary import AuxiliaryMLM
from .checkpoints import save_finetuned
from minibert.cli import RunFailed

from .config import FinetuneConfig
from .features import bucketed_batches, collate, count_loss_terms
from .prepare import Prepared
from .tasks import compute_metrics, decode, gold_labels, pool_windows

SHOWN_METRICS = ("accuracy", "macro_f1", "mcc", "micro_f1", "precision", "recall", "f1")
LOG_EVERY = 20  # steps between reads of the device-side losses (each read makes the host wait for the GPU)


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
    windowed = bool(features) and features[0].source is not None  # --truncate windows: several per example
    window_log_probs = torch.zeros(len(features), spec.num_labels) if windowed else None  # [W,C]
    batches = bucketed_batches([len(f.input_ids) for f in features], cfg.eval_batch_size, shuffle=False)
    # a bar for long files (--predict on Tianchi's 50,000 test documents); leave=False: it clears when done
    for index in tqdm(batches, desc="evaluate", unit="batch", leave=False, disable=not cfg.progress):
        batch_features = [features[i] for i in index]
        batch = move_batch(collate(batch_features, prepared.tokenizer.pad_id, label_kind, spec.num_labels), device)
        with autocast(device, dtype):
            out = model(**batch)
        if with_labels:  # (windowed: the loss is the mean over windows, each with its document's label)
            loss_sum += out.loss.item() * float(out.num_loss_terms)
            terms += float(out.num_loss_terms)
        if windowed:
            window_log_probs[index] = torch.log_softmax(out.logits.float(), dim=-1).cpu()
            continue
        for i, prediction in zip(index.tolist(), decode(spec, out.logits, batch_features, cfg.threshold)):
            predictions[i] = prediction
    if windowed:
        predictions = pool_windows(window_log_probs, [f.source for f in features], len(examples))
    if not with_labels:
        return None, {}, predictions
    metrics = compute_metrics(spec, gold_labels(spec, examples), predictions)
    return loss_sum / max(terms, 1.0), metrics, predictions


def accumulate_gradients(model, micro_batches: list[dict], label_kind: str, scaler, device, dtype,
                         auxiliary: AuxiliaryMLM | None = None) -> tuple[torch.Tensor, int]:
    """梯度累积 Gradient accumulation for ONE optimizer step: forward and backward every micro-batch, leaving in
    `.grad` the gradient of the mean loss over all terms of all micro-batches (see the module docstring).

    Args:
        micro_batches: collated CPU batches (dicts of [B,T] tensors and labels), moved to `device` here.
        label_kind: how their labels count loss terms (finetune/features.py:count_loss_terms).
        scaler: the GradScaler (a no-op unless fp16); gradients stay scaled, unscale_ them before clipping.
        auxiliary: `--mlm-weight`'s loss (finetune/auxiliary.py), added to each micro-batch's task loss, or None.
    Returns:
        (mean TASK loss over all terms as a 0-d tensor ON `device`: reading it is a host sync, number of terms).
    """
    for batch in micro_batches:
        check_batch(model, batch, label_kind)
    counts = [count_loss_terms(batch["labels"], label_kind) for batch in micro_batches]  # n_i, on the CPU
    total = global_prediction_count(counts, device)  # Σn, before any backward
    # 辅助 MLM 损失: a masked copy of the same rows (on the CPU, as pretraining masks). Its loss is a mean over the
    # m_i masked positions of micro-batch i, so it is weighted by m_i / Σm: the step then follows the mean over ALL
    # masked positions, whatever the split into micro-batches (weighting it by n_i / Σn would not).
    masks = [auxiliary.mask(batch["input_ids"]) for batch in micro_batches] if auxiliary else []
    mlm_counts = [len(positions) for _, _, positions in masks]  # m_i; 0 only for rows that are all [UNK]
    mlm_total = sum(mlm_counts)  # Σm
    step_loss = torch.zeros((), device=device)
    for i, (batch, count) in enumerate(zip(micro_batches, counts)):
        batch = move_batch(batch, device)
        weight = loss_weight(count, total)  # n_i / Σn
        with autocast(device, dtype):
            out = model(**batch)
            loss = out.loss * weight
            if masks and mlm_counts[i]:  # task loss + λ · MLM loss
                masked = tuple(t.to(device, non_blocking=True) for t in masks[i])
                mlm_loss = auxiliary.loss(model, masked, batch)
                loss = loss + auxiliary.weight * mlm_loss * loss_weight(mlm_counts[i], mlm_total)  # m_i / Σm
        scaler.scale(loss).backward()
        step_loss += (out.loss * weight).detach().float()
    return step_loss, total


def check_batch(model, batch: dict, label_kind: str) -> None:
    """The model's own input and label checks, run on the CPU batch before the copy to the device: there they cost
    no host sync, so the loop switches the model's copies off (train)."""
    check_inputs(model.bert.config, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                 model.bert.embeddings.max_positions)
    if label_kind in ("class", "tags"):
        check_labels(batch["labels"], model.num_labels, allow_ignore=label_kind == "tags",
                     what="classification" if label_kind == "class" else "token classification")
    elif label_kind == "multi":
        check_multi_hot(batch["labels"])
    elif label_kind == "spans":
        check_span_labels(batch["labels"], batch["attention_mask"])


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
    # Inputs and labels are checked on the CPU batches (check_batch); the model's own checks, each a host sync on
    # a GPU, are off while it trains and back on afterwards.
    model.bert.check_inputs, model.check_labels = False, False

    # ---- optimizer: AdamW groups (no decay on biases/LayerNorm; head LR; optional layer-wise decay)
    groups = param_groups(model, cfg.lr, cfg.weight_decay, head_lr=cfg.head_lr, head_prefixes=spec.head_prefixes,
                          layer_decay=cfg.layer_decay)
    if prepared.auxiliary:  # --mlm-weight: the MLM head trains too, at the encoder's LR
        prepared.auxiliary.head.to(device)
        groups.append(prepared.auxiliary.param_group(cfg.lr))
    tqdm.write(format_group_table(groups))
    optimizer = build_adamw(groups, fused=device.type == "cuda")  # fused: one kernel for all parameters
    batches_per_epoch = math.ceil(len(prepared.train_features) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation)
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps,
                                                                                  cfg.epochs * steps_per_epoch)
    # the LR curve spans the run, or --schedule-steps: a comparison row that stops where an early-stopped run did
    # keeps that run's curve (warmup, and a decay cut off at the same point) instead of a compressed one
    schedule_steps = cfg.schedule_steps or total_steps
    if schedule_steps < total_steps:  # past its end the multiplier is 0: steps that change nothing, without a word
        raise ValueError(f"--schedule-steps {schedule_steps} ends before the run's {total_steps} steps, which would "
                         f"train at LR 0 past it; pass --max-steps {schedule_steps} or a longer --schedule-steps")
    warmup_steps = int(cfg.warmup_ratio * schedule_steps)
    scheduler = build_scheduler(optimizer, warmup_steps, schedule_steps, cfg.schedule)
    scaler = make_grad_scaler(device, dtype)  # active only for fp16 on CUDA
    params = [p for group in optimizer.param_groups for p in group["params"]]  # for clipping
    lengths = np.array([len(f.input_ids) for f in prepared.train_features])

    log_path = out_dir / "metrics.jsonl"
    log_path.unlink(missing_ok=True)  # a fresh run starts a fresh log
    for stale in ("predictions.csv", "predictions.json"):  # an earlier model's: never left beside the new best/
        (out_dir / stale).unlink(missing_ok=True)
    log = MetricsLog(log_path)
    unit = "windows" if cfg.truncate == "windows" and spec.task == "cls" else "examples"  # --truncate windows
    tqdm.write(f"device {device}, precision {dtype or torch.float32}, {len(prepared.train_features)} train / "
               f"{len(prepared.dev_features)} dev {unit}, {total_steps} steps ({warmup_steps} warmup"
               f"{f', an LR schedule of {schedule_steps}' if schedule_steps != total_steps else ''}), "
               f"batch {cfg.batch_size} x {cfg.gradient_accumulation} accumulation")
    history, step = [], 0
    best = {"score": -math.inf, "epoch": 0, "metrics": None, "evaluations_without_gain": 0}

    pending = []  # (log record, loss tensor on the device) of the steps whose loss has not been read yet

    def read_losses() -> None:
        """Read the pending steps' losses in ONE host sync and log them; stop at the first non-finite one."""
        if not pending:
            return
        values = torch.stack([loss for _, loss in pending]).tolist()
        for (record, _), value in zip(pending, values):
            if not math.isfinite(value):
                raise NonFiniteLoss(nonfinite_message(record["step"], value, cfg, out_dir))
            log.write({**record, "train_loss": value})
        bar.set_postfix(epoch=pending[-1][0]["epoch"], loss=f"{values[-1]:.4f}", lr=f"{pending[-1][0]['lr']:.2e}")
        pending.clear()

    def dev_round(epoch: float, train_loss: float, seconds: float) -> bool:
        """Evaluate on dev, print a stats row, keep the best checkpoint. Returns True when early stopping says stop."""
        read_losses()  # first: a non-finite loss must stop the run before a checkpoint is written
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
        period_loss, period_terms = torch.zeros((), device=device), 0  # training loss since the last dev round
        for first in range(0, len(batches), cfg.gradient_accumulation):
            if step >= total_steps:
                break
            micro_batches = [collate([prepared.train_features[i] for i in index], prepared.tokenizer.pad_id,
                                     spec.label_kind, spec.num_labels)
                             for index in batches[first:first + cfg.gradient_accumulation]]
            step_loss, step_terms = accumulate_gradients(model, micro_batches, spec.label_kind, scaler, device,
                                                         dtype, prepared.auxiliary)
            scaler.unscale_(optimizer)  # fp16: undo the loss scaling before clipping
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            # the LR this step uses, --lr's (the head's is head_lr/lr times it, the lower layers' less under
            # --layer-decay); read BEFORE scheduler.step(), which moves it on to the next step's
            lr = cfg.lr * lr_multiplier(step, warmup_steps, schedule_steps, cfg.schedule)
            scaler.step(optimizer)  # skipped by the scaler if fp16 gradients overflowed
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)  # 梯度清零: backward ADDS into .grad, so reset after each step
            step += 1
            period_loss, period_terms = period_loss + step_loss * step_terms, period_terms + step_terms
            pending.append(({"step": step, "epoch": epoch, "lr": lr}, step_loss))
            if step % LOG_EVERY == 0:
                read_losses()
            bar.update(1)
            last_of_epoch = first + cfg.gradient_accumulation >= len(batches) or step >= total_steps
            if cfg.eval_every and step % cfg.eval_every == 0 and not last_of_epoch:  # optional mid-epoch check
                stop = dev_round(round(step / steps_per_epoch, 2), period_loss.item() / max(period_terms, 1),
                                 time.time() - started)
                period_loss, period_terms, started = torch.zeros((), device=device), 0, time.time()
                if stop:
                    break
        if stop:
            break
        # ---- end of epoch: evaluate, report, keep the best, maybe stop early
        if dev_round(epoch, period_loss.item() / max(period_terms, 1), time.time() - started) or step >= total_steps:
            break
    read_losses()
    bar.close()
    model.bert.check_inputs, model.check_labels = True, True

    plot_curves(log_path, out_dir / "learning_curve.png", {"train loss": ("step", "train_loss"),
                                                          "dev loss": ("step", "dev_loss")},
                title=f"{spec.task}: train vs dev loss (dev rising while train falls = overfitting)")
    summary = {"metric": spec.metric, "best_epoch": best["epoch"], "best": best["metrics"], "steps": step,
               "schedule_steps": schedule_steps,
               "history": history, "spec": spec.to_dict(), "config": cfg.to_dict()}
    atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out_dir / "finetune_config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    return summary
