"""MLM pretraining of BERT, the whole loop in one file, top to bottom (`python -m pretrain` runs `train`).

    1. processes and device: one process, or one per device under `torchrun` (DDP)
    2. data: corpus -> cached encoding -> split BY DOCUMENT -> batches masked afresh every step (RoBERTa)
    3. model (a small one that grows into BERT-mini, pretrain/growth.py), AdamW groups, schedule, precision
    4. 断点续训 resume: model, optimizer, schedule, RNGs and data position from <out>/checkpoint.pt
    5. the loop: k micro-batches (梯度累积), clip, step; log, evaluate, checkpoint
    6. the final model in minibert format, the curves, held-out accuracy next to the count baselines (outputs.py)

Every evaluation prints where the model stands against counting: `held-out acc 0.31 | ±2 window 0.35 | bigram 0.26
| unigram 0.05` (pretrain/baselines.py), with the plateau diagnostics of pretrain/diagnostics.py. `--time-budget`
turns the time you have into max_steps (pretrain/budget.py). The unigram plateau (a model that guesses the most
frequent token everywhere for thousands of steps) is left by starting small, with init tricks
(pretrain/warm_start.py), and growing into the full model, which reads longer rows when its stage is long
(序列长度预热 sequence-length warmup; docs/pretrain.md).

The recipe: MLM only, no next-sentence prediction (RoBERTa, Liu et al. 2019, found NSP does not help), dynamic
masking, sparse MLM head, attention AND hidden dropout 0 (Cramming, Geiping & Goldstein 2022), a large LR with
warmup and linear decay to 0 (Izsak et al. 2021, "How to Train BERT with an Academic Budget"). The mask rate
(PretrainConfig.mask_rate) is above BERT's 0.15 (Wettig et al. 2022: higher rates can do better); evaluation masks 0.15.

Dimension legend: G global batch (rows per optimizer step, all processes), W processes, k gradient_accumulation,
B = G / (W·k) rows per micro-batch, T max_len, V vocab, M masked positions.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from minibert import BertForMaskedLM
from minibert.training.accumulation import global_prediction_count, loss_weight
from minibert.training.checkpoint import gather_rng_states
from minibert.training.device import autocast, autocast_dtype, make_grad_scaler, move_batch
from minibert.training.distributed import all_reduce_sum, init_distributed, shutdown_distributed, wrap_for_training
from minibert.training.logs import MetricsLog
from minibert.training.mfu import ThroughputWindow, measure_matmul_peak, training_flops_per_token
from minibert.training.optim import build_adamw, format_group_table, param_groups
from minibert.training.schedule import build_scheduler
from pretrain.baselines import standing
from pretrain.batching import Prefetcher, PretrainingBatches, split_micro_batches
from pretrain.budget import budget_max_steps, recorded_budget, replan_after_growth
from pretrain.clock import budget_deadline, read_clock
from pretrain.config import PretrainConfig
from pretrain.data import load_corpus
from pretrain.diagnostics import describe_evaluation, evaluate_with_diagnostics
from pretrain.evaluation import heldout_yardsticks, init_split_warning, split_documents
from pretrain.growth import (GROWTH_NOISE, SMALL_LAYERS, carry_adam_state, grow, grown_row_length,
                            grown_stage_groups, last_small_step, saved_hidden_size, small_config)
from pretrain.masking import DynamicMasking
from pretrain.outputs import write_outputs
from pretrain.resume import (TrainingDiverged, check_start, choose_vocab, divergence_message, fingerprint,
                             load_checkpoint, load_init_weights, prepare_out_folder, read_digests, save_checkpoint,
                             started_from_init)
from pretrain.warm_start import train_token_counts, warm_started_model


def train(cfg: PretrainConfig, started_at: float | None = None) -> dict:
    """Pretrain as `cfg` says. Returns the final held-out metrics and the baselines (rank 0; {} elsewhere).

    started_at: time.monotonic() when the command started (python -m pretrain passes it): --time-budget counts
    from there; None = from this call."""
    started = time.monotonic() if started_at is None else started_at
    # ---- 1. processes and device ---------------------------------------------------------------------------------
    ctx = init_distributed(cfg.device)
    device, W, k = ctx.device, ctx.world_size, cfg.gradient_accumulation
    say = print if ctx.is_main else (lambda *args, **kwargs: None)  # only rank 0 talks and writes
    note = tqdm.write if ctx.is_main else say  # the same, during the loop: above the progress bar
    if cfg.batch_size % (W * k):
        raise ValueError(f"--batch-size={cfg.batch_size} (the global batch) must split evenly into {W} process(es) "
                         f"x {k} micro-batch(es); use a multiple of {W * k}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)  # same thread count -> same CPU kernels -> reproducible sums
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the SAME initial weights on every rank (DDP also broadcasts rank 0's)
    out = Path(cfg.out)

    # ---- 2. data -------------------------------------------------------------------------------------------------
    init = check_start(cfg)  # --init: a new run from old weights, encoded with THEIR vocab
    corpus, corpus_path = load_corpus(cfg, choose_vocab(cfg, init), ctx.rank, W, log=say)
    tokenizer = corpus.tokenizer
    train_docs, heldout_docs = split_documents(corpus.num_docs, cfg.heldout_fraction, seed=cfg.seed,
                                                 source=corpus_path)
    leak = init and init_split_warning(init[1].parent, corpus_path, corpus.num_docs, heldout_docs)
    if leak:  # the held-out documents must be unseen by the initial model too
        say(leak)
    masking = DynamicMasking.from_tokenizer(tokenizer, cfg.mask_rate)

    def training_rows(max_len: int) -> PretrainingBatches:
        """Rows of max_len tokens, batch_size·cfg.max_len tokens per step: the small stage's, or a long grown
        stage's (序列长度预热 sequence-length warmup, growth.py:grown_row_length). Each rank receives its 1/W of
        every global batch; rows AND masks depend only on (seed, epoch, step), so W processes see exactly what one
        process would (tests/test_ddp.py), and resuming needs only {epoch, step, max_len}."""
        return PretrainingBatches(corpus, train_docs, max_len, cfg.batch_size * cfg.max_len // max_len, masking,
                                  seed=cfg.seed, pack=cfg.pack, rank=ctx.rank, world_size=W)

    def long_rows(max_len: int) -> tuple:
        """A long grown stage's rows, and (rank 0) its held-out rows and count baselines: (batches, yardsticks)."""
        if not ctx.is_main:
            return training_rows(max_len), (None,) * 4
        return training_rows(max_len), heldout_yardsticks(corpus, train_docs, heldout_docs, cfg, max_len, bigram_counts)

    batches = training_rows(cfg.max_len)
    say(f"corpus {corpus_path}: {corpus.num_docs:,} documents ({len(heldout_docs):,} held out), vocab "
        f"{tokenizer.vocab_size:,}, {batches.num_rows:,} training rows of {cfg.max_len} tokens, "
        f"{batches.steps_per_epoch:,} steps per epoch of {cfg.batch_size} rows")

    # ---- 3. model, optimizer, schedule, precision ----------------------------------------------------------------
    config = cfg.bert_config(tokenizer.vocab_size)
    # 模型生长 growing: with growth_fraction > 0 a small model (H/2, 1 layer) trains the first steps and then grows
    # into `config` (pretrain/growth.py); --init starts from full-size weights, so it has nothing to grow.
    growing = cfg.growth_fraction > 0 and init is None and not started_from_init(cfg)
    model = warm_started_model(small_config(config, 1, SMALL_LAYERS) if growing else config, cfg,
                               train_token_counts(corpus, train_docs)).to(device)
    if init is not None:
        load_init_weights(model, init[0])
        say(f"initialised from {init[0]} (a new run: fresh optimizer and schedule)")
    torch.manual_seed(cfg.seed + ctx.rank)  # from here on, each rank draws its own dropout masks
    # 混合精度 mixed precision: bf16 autocast on recent GPUs, fp16 + GradScaler on older ones, fp32 on CPU.
    amp_dtype = autocast_dtype(device, cfg.precision)
    scaler = make_grad_scaler(device, amp_dtype)

    def wrap(bare: BertForMaskedLM) -> torch.nn.Module:
        """What the loop calls: the model's own input checks off (they would make the host wait for a GPU; the loop
        checks the CPU batch instead), in DDP under torchrun, maybe compiled."""
        bare.bert.check_inputs, bare.mlm_head.check_labels = False, False
        return wrap_for_training(bare, ctx, cfg.compile)

    train_model = wrap(model)
    if ctx.is_main:
        heldout, unigram, bigram_counts, baselines = heldout_yardsticks(corpus, train_docs, heldout_docs, cfg)
        say(f"count baselines on {baselines['baseline_predictions']:,} held-out masked positions: "
            f"{standing(None, baselines)}")
    # MFU's denominator: what a big matmul reaches on THIS machine (a shared CPU is far below its datasheet). A
    # single measurement taken while another process happens to hold the cores reads low and would push MFU past
    # 100%, so it is measured again at every evaluation and the best measurement so far is kept.
    peak_flops = cfg.matmul_peak_gflops * 1e9 or measure_matmul_peak(device, amp_dtype or torch.float32)
    say(f"device {device}, {W} process(es), precision {amp_dtype or torch.float32}, matmul peak "
        f"{peak_flops / 1e9:.0f} GFLOP/s per process")

    # ---- 3b. how many steps: --max-steps, or what --time-budget allows; recorded in the checkpoint ------------
    checkpoint_path, log = out / "checkpoint.pt", MetricsLog(out / "metrics.jsonl")
    plan = recorded_budget(checkpoint_path) if cfg.resume else None  # a --time-budget run's decisions
    eval_record, eval_seconds = {}, 0.0
    if ctx.is_main and not cfg.resume:  # step 0: the untrained model, the curves' starting point
        eval_start = time.monotonic()
        eval_record = evaluate_with_diagnostics(model, heldout, device, amp_dtype, cfg.eval_sequences, baselines)
        eval_seconds = time.monotonic() - eval_start
        say(f"step 0: {describe_evaluation(eval_record, baselines)}")
    if cfg.time_budget and plan is None:  # pretrain/budget.py: a timing probe, then rank 0 decides for all
        plan = budget_max_steps(cfg, model, train_model, wrap, batches, config if growing else None, started,
                                eval_seconds, ctx.is_main, say)
    max_steps = plan.max_steps if plan else cfg.max_steps
    # the last small step: growth_fraction of the run, at most growth_max_small_steps (the small model saturates)
    grow_step = last_small_step(max_steps, cfg.growth_fraction, cfg.growth_max_small_steps) if growing else 0
    if plan:  # the budget's second decision moved it, or its watchdog did (clock.py)
        grow_step = plan.grow_step or plan.grow_early or grow_step

    def stage_schedule(adamw, first_step: int, steps_done: int = 0):
        """学习率预热 warmup, then linear (or cosine) decay to 0, as fractions of the stage after `first_step` (0,
        or grow_step), whatever its length; steps_done > 0 when --time-budget shortens the stage under way."""
        steps = (grow_step if first_step < grow_step else max_steps) - first_step
        return build_scheduler(adamw, round(cfg.warmup_fraction * steps), steps, cfg.schedule, steps_done)

    def stage_optimizer(stage: BertForMaskedLM, first_step: int):
        """AdamW and the schedule of the stage after `first_step`: 权重衰减 weight decay on weight matrices only
        (optim.py), and in the grown stage 差分学习率 differential LRs (growth.py:grown_stage_groups)."""
        groups = (grown_stage_groups(stage, cfg, max_steps - grow_step) if growing and stage.config == config
                  else param_groups(stage, cfg.growth_lr if growing else cfg.lr, cfg.weight_decay))
        table = format_group_table(groups)  # the peak LRs, before the schedule scales them down for warmup
        stage_adamw = build_adamw(groups, betas=(0.9, cfg.adam_beta2), fused=device.type == "cuda")
        return table, stage_adamw, stage_schedule(stage_adamw, first_step)

    table, optimizer, scheduler = stage_optimizer(model, 0)
    say(table)

    # ---- 4. resume -----------------------------------------------------------------------------------------------
    start_step = 0
    run_fingerprint = fingerprint(cfg, *read_digests(corpus), config.to_dict())  # resume is a contract: resume.py
    if cfg.resume:
        if growing and saved_hidden_size(checkpoint_path) == config.hidden_size:  # written after growing
            model = grow(model, config, noise=0.0, seed=cfg.seed)  # the grown shapes; the saved values load next
            _, optimizer, scheduler = stage_optimizer(model, grow_step)
            train_model = wrap(model)
        state = load_checkpoint(checkpoint_path, run_fingerprint, model=model, optimizer=optimizer,
                                scheduler=scheduler, scaler=scaler, rank=ctx.rank, world_size=W)
        if state["data"].get("max_len", cfg.max_len) != batches.max_len:  # saved in a long grown stage
            batches, (heldout, unigram, bigram_counts, baselines) = long_rows(state["data"]["max_len"])
        batches.load_state_dict(state["data"])
        start_step = state["step"]
        say(f"resumed from {checkpoint_path} at step {start_step}")
    if ctx.is_main:  # a fresh run's config, vocab and step-0 record; a resumed run's log cut at its checkpoint
        prepare_out_folder(cfg, log, start_step, corpus.vocab_path, {"step": 0, **eval_record, **baselines})

    # ---- 5. the loop ---------------------------------------------------------------------------------------------
    # Nothing in a step makes the host wait for the GPU: ids and labels are checked on the CPU batch (so the model's
    # own checks are switched off), masked positions are found on the CPU, and the loss, accuracy and an "all
    # finite" record stay on the device until a log or checkpoint step reads them in one go. On a GPU the next
    # batches are built, checked and pinned in a background thread (pretrain/batching.py:Prefetcher).
    def prepare(rank_batch: dict) -> list[dict]:  # k micro-batches of B rows, checked, with their masked positions
        return split_micro_batches(rank_batch, k, config)

    def feed(stage_batches: PretrainingBatches):  # on a GPU, built in a background thread
        return Prefetcher(stage_batches, prepare) if device.type == "cuda" else map(prepare, stage_batches)

    source = feed(batches)
    bar = tqdm(total=max_steps, initial=start_step, disable=not (ctx.is_main and cfg.progress), dynamic_ncols=True)
    window = ThroughputWindow()  # tokens/s and MFU since the last log line
    last_checkpoint, final_eval = start_step, {}
    where = standing(eval_record or None, baselines, window=False) if ctx.is_main else ""  # the bar's standing
    first_nonfinite = torch.zeros((), dtype=torch.long, device=device)  # first step with an inf/NaN (0 = none)
    stage_start = (start_step, time.monotonic())  # where this process's first-stage pace is measured from
    last_stage = stage_start  # ... and the last stage's (reset at growing), for --time-budget's third decision
    deadline = budget_deadline(cfg, started)  # --time-budget's hard stop, should the machine slow down (clock.py)
    step = start_step
    while step < max_steps:  # not a range(): --time-budget's later decisions may move max_steps
        step += 1
        if plan and step % cfg.log_every == 0 and step < max_steps:  # --time-budget's clock (pretrain/clock.py)
            new_max_steps, grow_step, refit = read_clock(step, max_steps, grow_step, plan, deadline, last_stage,
                                                         model.config != config, device, cfg, ctx.is_main, note)
            max_steps = bar.total = new_max_steps
            if refit:  # a decision moved the current stage's end: its schedule now decays to 0 there
                first = grow_step if step > grow_step else 0
                scheduler = stage_schedule(optimizer, first, steps_done=step - 1 - first)
        if step == grow_step + 1 and model.config != config:  # every rank grows the same weights, same noise
            small = (model, train_model)
            model = grow(model, config, noise=GROWTH_NOISE, seed=cfg.seed, free_copies=cfg.growth_free_heads,
                         identity_stack=cfg.growth_stack == "identity")
            train_model = wrap(model)
            if plan and plan.grow_step is None:  # --time-budget's second decision, from the first stage's pace
                max_steps = bar.total = replan_after_growth(plan, cfg, small, (model, train_model), batches,
                                                            grow_step, stage_start, started, ctx.is_main, say)
            row_len, kept_because = grown_row_length(cfg, max_steps - grow_step, config.max_position_embeddings, W * k)
            if kept_because:  # a long stage that cannot read longer rows says why
                note(f"step {step}: the grown stage keeps rows of {cfg.max_len} tokens: {kept_because}")
            if row_len != batches.max_len:  # a long grown stage: longer rows, the same tokens per step
                if isinstance(source, Prefetcher):
                    source.close()
                batches, (heldout, unigram, bigram_counts, baselines) = long_rows(row_len)
                source = feed(batches)
                note(f"step {step}: the grown stage runs {max_steps - grow_step:,} steps, so it reads rows of "
                     f"{row_len} tokens ({batches.batch_size} per step); the held-out rows too (序列长度预热)")
            last_stage = (grow_step, time.monotonic())  # the grown stage's pace is measured from here
            small_optimizer = optimizer
            table, optimizer, scheduler = stage_optimizer(model, grow_step)
            if cfg.growth_carry_optimizer:  # AdamW's moments too, or a fresh state jolts every trained weight
                carry_adam_state(small[0], small_optimizer, model, optimizer, cfg.growth_free_heads)
            grown_to = f"H{config.hidden_size} L{config.num_hidden_layers}"
            note(f"step {step}: grew the model to {grown_to}, a new AdamW and schedule:\n{table}")
            if ctx.is_main:  # loss_curve.png marks it: the diagnostics jump there
                log.write({"step": grow_step, "grew_to": grown_to})
        micro_batches = next(source)  # this rank's G/W rows as k micro-batches, already masked and checked
        counts = [len(mb["prediction_positions"]) for mb in micro_batches]  # M_i per micro-batch
        total = global_prediction_count(counts, device)  # ΣM over micro-batches AND ranks, before any backward
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for i, micro in enumerate(micro_batches):
            micro = move_batch(micro, device)
            # 梯度累积 gradient accumulation: DDP would all-reduce on every backward; no_sync() skips that on all
            # but the last micro-batch, whose backward then all-reduces the accumulated sum once.
            last = i == k - 1
            sync = contextlib.nullcontext() if last or W == 1 else train_model.no_sync()
            with sync:
                with autocast(device, amp_dtype):
                    out_i = train_model(**micro)
                # loss_i is a mean over M_i; weighting by M_i/ΣM (·W under DDP) makes the summed gradient that of
                # the mean over ALL masked tokens of the global batch (see minibert/training/accumulation.py).
                scaler.scale(out_i.loss * loss_weight(counts[i], total, W)).backward()
            targets = micro["labels"].reshape(-1)[micro["prediction_positions"]]  # [M_i]
            loss_sum += out_i.loss.detach().float() * counts[i]
            correct += (out_i.logits.detach().argmax(dim=-1) == targets).sum()
        if step == cfg.simulate_crash_at_step:  # testing: die mid-step, after work the checkpoint doesn't hold
            os.kill(os.getpid(), signal.SIGKILL)
        # 梯度裁剪 gradient clipping of the global norm (Pascanu et al. 2013); with grad_clip 0 only measured.
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
        finite = torch.isfinite(loss_sum)  # fp16: inf gradients are the scaler's business (it skips the step)
        if not scaler.is_enabled():
            finite &= torch.isfinite(grad_norm)
        first_nonfinite = torch.where((first_nonfinite == 0) & ~finite, step, first_nonfinite)
        lr = max(scheduler.get_last_lr())  # this step's LR, --lr's (grown_stage_groups gives trained weights less)
        scaler.step(optimizer)  # skips the update if fp16 gradients overflowed
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)  # 梯度清零: backward ADDS into .grad, so reset after each step

        # ---- logging: tokens/s and MFU count real (non-padding) tokens; FLOPs use the masked-only vocab head
        tokens = W * sum(int(mb["attention_mask"].sum()) if mb["attention_mask"] is not None
                         else mb["input_ids"].numel() for mb in micro_batches)  # CPU tensors; approximately global
        window.add(tokens, tokens * training_flops_per_token(model.config, batches.max_len, total / tokens))
        bar.update(1)
        logged = step % cfg.log_every == 0 or step == max_steps
        checkpointing = step % cfg.checkpoint_every == 0 or step == max_steps
        if logged or checkpointing:  # the host reads the device: this step's metrics and the "all finite" record
            read = torch.stack([loss_sum.double(), correct.double(), first_nonfinite.double()]).tolist()  # one read
            loss_total, correct_total, nonfinite_ranks = all_reduce_sum([read[0], read[1], float(read[2] > 0)], device)
            loss = loss_total / total
            if nonfinite_ranks:
                # Stop BEFORE any checkpoint or export holds the non-finite weights: the one on disk is still good.
                bar.close()
                raise TrainingDiverged(divergence_message(int(read[2]) or step, loss, grad_norm.item(), cfg,
                                                          checkpoint_path, last_checkpoint))
        if logged:
            tokens_per_s, mfu = window.rates(W * peak_flops)
            record = {"step": step, "loss": loss, "mlm_acc": correct_total / total, "lr": lr,
                      "grad_norm": grad_norm.item(), "tokens_per_s": tokens_per_s, "mfu": mfu}
            bar.set_postfix_str(f"loss {loss:.3f} acc {record['mlm_acc']:.3f} lr {record['lr']:.1e} "
                                f"tok/s {record['tokens_per_s']:,.0f} MFU {record['mfu']:.0%} | {where}",
                                refresh=False)
            if ctx.is_main:
                log.write(record)
        if ctx.is_main and (step % cfg.eval_every == 0 or step == max_steps):
            final_eval = evaluate_with_diagnostics(model, heldout, device, amp_dtype, cfg.eval_sequences, baselines)
            log.write({"step": step, **final_eval, **baselines})
            if not cfg.matmul_peak_gflops:  # rank 0's re-measured peak; other ranks only use theirs for the bar
                peak_flops = max(peak_flops, measure_matmul_peak(device, amp_dtype or torch.float32))
            where = standing(final_eval, baselines, window=False)
            note(f"step {step}: {describe_evaluation(final_eval, baselines)}")
        if checkpointing:
            rng_states = gather_rng_states()  # a collective: every rank takes part, rank 0 writes
            if ctx.is_main:
                save_checkpoint(checkpoint_path, run_fingerprint, plan, step=step, model=model, optimizer=optimizer,
                                scheduler=scheduler, scaler=scaler, data_state=batches.state_dict(),
                                rng_states=rng_states)
            last_checkpoint = step
        if logged:  # the next window starts after evaluation and checkpointing, so they don't count as training
            window.restart()
    bar.close()
    if isinstance(source, Prefetcher):
        source.close()

    # ---- 6. final model, count tables, curves, results.json (pretrain/outputs.py) -------------------------------
    result = {}
    if ctx.is_main:
        if not final_eval:  # resumed after the last step: score the final model once more
            final_eval = evaluate_with_diagnostics(model, heldout, device, amp_dtype, cfg.eval_sequences, baselines)
        result = write_outputs(model, cfg, out, corpus, corpus_path, heldout_docs, (unigram, bigram_counts, baselines),
                               {**final_eval, "eval_max_len": heldout.max_len}, max_steps, started, log.path, say)
    shutdown_distributed()
    return result
