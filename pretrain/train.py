"""MLM pretraining of BERT, the whole loop in one file, top to bottom (`python -m pretrain` runs `train`).

    1. processes and device: one process, or one per device under `torchrun` (DDP)
    2. data: corpus -> cached encoding -> split BY DOCUMENT -> batches masked afresh every step (RoBERTa)
    3. model, AdamW parameter groups, warmup then decay, mixed precision
    4. 断点续训 resume: model, optimizer, schedule, RNGs and data position from <out>/checkpoint.pt
    5. the loop: k micro-batches (梯度累积), clip, step; log, evaluate, checkpoint
    6. the final model in minibert format, the loss curve, held-out accuracy next to the unigram baseline

The recipe: MLM only, no next-sentence prediction (RoBERTa, Liu et al. 2019, found NSP does not help), dynamic
masking, sparse MLM head and attention dropout 0 (Cramming, Geiping & Goldstein 2022), a large LR with warmup and
linear decay to 0 (Izsak et al. 2021, "How to Train BERT with an Academic Budget"). Mask rate 0.15 as Devlin et
al. 2019; Wettig et al. 2022 show higher rates (0.3-0.4) can do better, hence --mask-rate.

Dimension legend: G global batch (rows per optimizer step, all processes), W processes, k gradient_accumulation,
B = G / (W·k) rows per micro-batch, T max_len, V vocab, M masked positions.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from minibert import IGNORE_INDEX, BertForMaskedLM
from minibert.checkpoint import save_pretrained
from minibert.training.accumulation import count_predictions, global_prediction_count, loss_weight
from minibert.training.checkpoint import gather_rng_states, load_training_state, save_training_state
from minibert.training.device import autocast, autocast_dtype, make_grad_scaler, move_batch
from minibert.training.distributed import all_reduce_sum, init_distributed, shutdown_distributed
from minibert.training.io import atomic_write_text
from minibert.training.logs import MetricsLog, plot_curves
from minibert.training.mfu import measure_matmul_peak, mfu, training_flops_per_token
from minibert.training.optim import build_adamw, format_group_table, param_groups
from minibert.training.schedule import build_scheduler
from pretrain.batching import PretrainingBatches
from pretrain.config import PretrainConfig
from pretrain import corpus as corpus_module
from pretrain.data import file_digest, prepare_corpus
from pretrain.evaluation import evaluate, split_documents, unigram_baseline
from pretrain.masking import DynamicMasking
from pretrain.growth import grow, small_config
from pretrain.warm_start import (init_decoder_bias_unigram, init_local_attention, init_sinusoidal_positions,
                                 train_token_counts)

EVAL_BATCH_SIZE = 64
LOCAL_ATTENTION_OFFSETS = (-1, 1, -2, 2)  # layer 0's heads start on these neighbours (pretrain/warm_start.py)
GROWTH_NOISE = 1e-3  # std added to the grown weights so the copies can drift apart (pretrain/growth.py)
EVAL_MASK_RATE = 0.15  # evaluate at BERT's rate whatever --mask-rate trains with, so runs stay comparable


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became inf/NaN: the run stops and keeps its last good checkpoint."""


def train(cfg: PretrainConfig) -> dict:
    """Pretrain as `cfg` says. Returns the final held-out metrics and the unigram baseline (rank 0; {} elsewhere)."""
    # ---- 1. processes and device ---------------------------------------------------------------------------------
    ctx = init_distributed(cfg.device)
    device, W, k = ctx.device, ctx.world_size, cfg.gradient_accumulation
    say = print if ctx.is_main else (lambda *args, **kwargs: None)  # only rank 0 talks and writes
    if cfg.batch_size % (W * k):
        raise ValueError(f"--batch-size={cfg.batch_size} (the global batch) must split evenly into {W} process(es) "
                         f"x {k} micro-batch(es); use a multiple of {W * k}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)  # same thread count -> same CPU kernels -> reproducible sums
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the SAME initial weights on every rank (DDP also broadcasts rank 0's)
    out, cache_dir = Path(cfg.out), Path(cfg.cache_dir)

    # ---- 2. data -------------------------------------------------------------------------------------------------
    # The default corpus is named after the generator's source, so an edited generator never reuses an old file.
    generator_digest = file_digest(corpus_module.__file__)[:12]
    corpus_path = Path(cfg.corpus) if cfg.corpus else cache_dir / f"default_corpus-{generator_digest}.tsv"
    if ctx.is_main and cfg.corpus is None and not corpus_path.exists():
        say(f"generating the embedded default corpus into {corpus_path} (once)")
        corpus_module.generate_corpus(corpus_path)
    if ctx.is_main:  # rank 0 encodes; the others then find the cache
        corpus = prepare_corpus(corpus_path, cfg.vocab, cache_dir=cache_dir, log=say)
    if W > 1:
        torch.distributed.barrier()
    if not ctx.is_main:
        corpus = prepare_corpus(corpus_path, cfg.vocab, cache_dir=cache_dir, log=say)
    tokenizer = corpus.tokenizer
    train_docs, heldout_docs = split_documents(corpus.num_docs, cfg.heldout_fraction, seed=cfg.seed)
    masking = DynamicMasking.from_tokenizer(tokenizer, cfg.mask_rate)
    # Each rank receives its 1/W of every global batch; rows AND masks depend only on (seed, epoch, step), so W
    # processes see exactly what one process would (tests/test_ddp.py), and resuming needs only {epoch, step}.
    batches = PretrainingBatches(corpus, train_docs, cfg.max_len, cfg.batch_size, masking, seed=cfg.seed,
                                 pack=cfg.pack, rank=ctx.rank, world_size=W)
    say(f"corpus {corpus_path}: {corpus.num_docs:,} documents ({len(heldout_docs):,} held out), vocab "
        f"{tokenizer.vocab_size:,}, {batches.num_rows:,} training rows of {cfg.max_len} tokens, "
        f"{batches.steps_per_epoch:,} steps per epoch of {cfg.batch_size} rows")

    # ---- 3. model, optimizer, schedule, precision ----------------------------------------------------------------
    config = cfg.bert_config(tokenizer.vocab_size)
    # 模型生长 growing (pretrain/growth.py): with growth_fraction > 0 a small model (H/2, 1 layer) trains steps
    # 1..grow_step, then grows into `config`. Each stage has its own optimizer and warmup-then-decay schedule.
    grow_step = round(cfg.growth_fraction * cfg.max_steps)
    token_counts = train_token_counts(corpus, train_docs)

    def stage_model() -> BertForMaskedLM:
        """The model the run starts with, initialised with the plateau tricks (pretrain/warm_start.py)."""
        fresh = BertForMaskedLM(small_config(config, 1, 1) if grow_step else config)
        if cfg.position_init == "sinusoidal":
            init_sinusoidal_positions(fresh, cfg.position_init_scale)
        if cfg.local_attention_gain:
            init_local_attention(fresh, LOCAL_ATTENTION_OFFSETS[:fresh.config.num_attention_heads],
                                 cfg.local_attention_gain)
        if cfg.decoder_bias_init == "unigram":
            init_decoder_bias_unigram(fresh, token_counts)
        return fresh.to(device)

    def stage_optimizer(stage_model_: BertForMaskedLM, first_step: int):
        """AdamW and its schedule for the stage that starts after `first_step` (0 or grow_step)."""
        lr, last_step = (cfg.growth_lr, grow_step) if first_step < grow_step else (cfg.lr, cfg.max_steps)
        # 权重衰减 weight decay on weight matrices only, not biases/LayerNorm (Devlin et al. 2019; see optim.py).
        groups = param_groups(stage_model_, lr, cfg.weight_decay)
        stage_optim = build_adamw(groups, betas=(0.9, cfg.adam_beta2), fused=device.type == "cuda")
        # 学习率预热 warmup, then linear (or cosine) decay to 0, over this stage's steps.
        steps = last_step - first_step
        return groups, stage_optim, build_scheduler(stage_optim, round(cfg.warmup_fraction * steps), steps,
                                                     cfg.schedule)

    model = stage_model()
    torch.manual_seed(cfg.seed + ctx.rank)  # from here on, each rank draws its own dropout masks
    groups, optimizer, scheduler = stage_optimizer(model, 0)
    say(format_group_table(groups))
    # 混合精度 mixed precision: bf16 autocast on recent GPUs, fp16 + GradScaler on older ones, fp32 on CPU.
    amp_dtype = autocast_dtype(device, cfg.precision)
    scaler = make_grad_scaler(device, amp_dtype)

    # ---- 4. resume -----------------------------------------------------------------------------------------------
    checkpoint_path, log = out / "checkpoint.pt", MetricsLog(out / "metrics.jsonl")
    start_step = 0
    if cfg.resume:
        saved_width = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["model"][
            "bert.embeddings.word_embeddings.weight"].shape[1] if grow_step and checkpoint_path.is_file() else None
        if saved_width == config.hidden_size:
            model = grow(model, config, noise=0.0, seed=cfg.seed)  # saved after growing: the grown shapes first
            _, optimizer, scheduler = stage_optimizer(model, grow_step)
        state = load_training_state(checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler,
                                    scaler=scaler, rank=ctx.rank, world_size=W)
        batches.load_state_dict(state["data"])
        start_step = state["step"]
        if ctx.is_main:  # drop log lines the killed run wrote after its last checkpoint: they will be redone
            kept = [r for r in log.read() if r["step"] <= start_step]
            atomic_write_text(log.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        say(f"resumed from {checkpoint_path} at step {start_step}")
    elif ctx.is_main:
        if checkpoint_path.exists() and not (out / "results.json").exists() and not cfg.overwrite:
            raise ValueError(f"--out {out} holds an unfinished run ({checkpoint_path}); pass --resume to continue "
                             f"it, --overwrite to start over, or another --out")
        out.mkdir(parents=True, exist_ok=True)
        for stale in (log.path, checkpoint_path, out / "results.json"):
            stale.unlink(missing_ok=True)  # a fresh run starts fresh files
        atomic_write_text(out / "pretrain_config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")

    def wrap(bare: BertForMaskedLM) -> torch.nn.Module:
        """DDP all-reduces (averages) gradients during backward; device_ids only for a GPU."""
        wrapped = bare
        if W > 1:
            wrapped = DistributedDataParallel(bare, device_ids=[device.index] if device.type == "cuda" else None)
        return torch.compile(wrapped) if cfg.compile else wrapped

    train_model = wrap(model)
    if ctx.is_main:
        # Evaluation masks show [MASK] at EVERY selected position (no 10% unchanged / 10% random): with 80/10/10 a
        # model that merely copies its input scores 0.1 for free, and the comparison with the unigram baseline
        # (which never sees the answer) would flatter us.
        eval_masking = DynamicMasking.from_tokenizer(tokenizer, EVAL_MASK_RATE, mask_token_fraction=1.0,
                                                     random_token_fraction=0.0)
        heldout = PretrainingBatches(corpus, heldout_docs, cfg.max_len, EVAL_BATCH_SIZE, eval_masking,
                                     seed=cfg.seed, pack=cfg.pack, shuffle=False, drop_last=False)
        baseline = unigram_baseline(corpus, heldout_docs, eval_masking)  # scored as the model is: [MASK] only
    # MFU's denominator: what a big matmul reaches on THIS machine (a shared CPU is far below its datasheet). A
    # single measurement taken while another process happens to hold the cores reads low and would push MFU past
    # 100%, so it is measured again at every evaluation and the best measurement so far is kept.
    peak_flops = cfg.matmul_peak_gflops * 1e9 or measure_matmul_peak(device, amp_dtype or torch.float32)
    say(f"device {device}, {W} process(es), precision {amp_dtype or torch.float32}, matmul peak "
        f"{peak_flops / 1e9:.0f} GFLOP/s per process")

    # ---- 5. the loop ---------------------------------------------------------------------------------------------
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not ctx.is_main, dynamic_ncols=True)
    window = {"tokens": 0, "flops": 0.0, "start": time.perf_counter()}
    last_checkpoint, final_eval = start_step, {}
    B = cfg.batch_size // (W * k)  # rows per micro-batch
    for step in range(start_step + 1, cfg.max_steps + 1):
        if step == grow_step + 1 and grow_step:  # every rank grows the same weights with the same noise
            model = grow(model, config, noise=GROWTH_NOISE, seed=cfg.seed)
            _, optimizer, scheduler = stage_optimizer(model, grow_step)
            train_model = wrap(model)
            tqdm.write(f"step {step}: grew the model to H{config.hidden_size} L{config.num_hidden_layers}")
        rank_batch = next(batches)  # this rank's G/W rows, already masked
        micro_batches = [{name: None if t is None else t[i * B:(i + 1) * B] for name, t in rank_batch.items()}
                         for i in range(k)]
        counts = [count_predictions(mb["labels"]) for mb in micro_batches]  # M_i per micro-batch
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
            targets = micro["labels"][micro["labels"] != IGNORE_INDEX]  # [M_i]
            loss_sum += out_i.loss.detach().float() * counts[i]
            correct += (out_i.logits.detach().argmax(dim=-1) == targets).sum()
        if step == cfg.simulate_crash_at_step:  # testing: die mid-step, after work the checkpoint doesn't hold
            os.kill(os.getpid(), signal.SIGKILL)
        # 梯度裁剪 gradient clipping of the global norm (Pascanu et al. 2013); with grad_clip 0 only measured.
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
        loss_total, correct_total = all_reduce_sum([loss_sum.item(), correct.item()], device)
        loss = loss_total / total
        if not math.isfinite(loss) or (not scaler.is_enabled() and not math.isfinite(grad_norm.item())):
            # Stop BEFORE optimizer.step: the weights, and the checkpoint on disk, are still good.
            bar.close()
            raise TrainingDiverged(
                f"training diverged at step {step}: loss {loss}, gradient norm {grad_norm.item()}; the last good "
                f"checkpoint (step {last_checkpoint}) is kept at {checkpoint_path}. Lower --lr (now {cfg.lr}) or "
                f"lengthen --warmup-fraction (now {cfg.warmup_fraction}) and start again")
        lr = scheduler.get_last_lr()[0]  # the LR this step uses
        scaler.step(optimizer)  # skips the update if fp16 gradients overflowed
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        # ---- logging: tokens/s and MFU count real (non-padding) tokens; FLOPs use the masked-only vocab head
        tokens = W * sum(int(mb["attention_mask"].sum()) if mb["attention_mask"] is not None
                         else mb["input_ids"].numel() for mb in micro_batches)  # approximately global
        window["tokens"] += tokens
        window["flops"] += tokens * training_flops_per_token(model.config, cfg.max_len, total / tokens)
        elapsed = time.perf_counter() - window["start"]
        record = {"step": step, "loss": loss, "mlm_acc": correct_total / total, "lr": lr,
                  "grad_norm": grad_norm.item(), "tokens_per_s": window["tokens"] / elapsed,
                  "mfu": window["flops"] / elapsed / (W * peak_flops)}
        bar.update(1)
        bar.set_postfix_str(f"loss {loss:.3f} acc {record['mlm_acc']:.3f} lr {record['lr']:.1e} "
                            f"tok/s {record['tokens_per_s']:,.0f} MFU {record['mfu']:.0%}", refresh=False)
        logged = step % cfg.log_every == 0 or step == cfg.max_steps
        if ctx.is_main and logged:
            log.write(record)
        if ctx.is_main and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            final_eval = evaluate(model, heldout.epoch_batches(), device, amp_dtype, cfg.eval_sequences)
            log.write({"step": step, **final_eval})
            if not cfg.matmul_peak_gflops:  # rank 0's re-measured peak; other ranks only use theirs for the bar
                peak_flops = max(peak_flops, measure_matmul_peak(device, amp_dtype or torch.float32))
            tqdm.write(f"step {step}: held-out MLM loss {final_eval['eval_loss']:.3f}, accuracy "
                       f"{final_eval['eval_acc']:.3f}, perplexity {final_eval['eval_ppl']:.1f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            rng_states = gather_rng_states()  # a collective: every rank takes part, rank 0 writes
            if ctx.is_main:
                save_training_state(checkpoint_path, step=step, model=model, optimizer=optimizer,
                                    scheduler=scheduler, scaler=scaler, data_state=batches.state_dict(),
                                    rng_states=rng_states)
            last_checkpoint = step
        if logged:  # the next window starts after evaluation and checkpointing, so they don't count as training
            window = {"tokens": 0, "flops": 0.0, "start": time.perf_counter()}
    bar.close()

    # ---- 6. final model, curve, summary --------------------------------------------------------------------------
    result = {}
    if ctx.is_main:
        save_pretrained(model, out / "final", format="minibert", vocab=corpus.vocab_path)
        if cfg.export_hf:
            save_pretrained(model, out / "final_hf", format="hf", vocab=corpus.vocab_path)
        plot_curves(log.path, out / "loss_curve.png", {"train loss": ("step", "loss"),
                                                       "held-out loss": ("step", "eval_loss")},
                    title=f"MLM pretraining, {out.name}")
        if not final_eval:  # resumed after the last step: score the final model once more
            final_eval = evaluate(model, heldout.epoch_batches(), device, amp_dtype, cfg.eval_sequences)
        result = {**final_eval, "unigram_acc": baseline["context_free_accuracy"], "unigram_ppl": baseline["perplexity"]}
        atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
        say(f"held-out MLM accuracy {result['eval_acc']:.3f} vs unigram baseline {result['unigram_acc']:.3f} "
            f"(always predicting token {baseline['token']!r}); perplexity {result['eval_ppl']:.1f} vs unigram "
            f"{baseline['perplexity']:.1f}")
        say(f"model written to {out / 'final'} (model.safetensors, config.json, vocab.txt)")
    shutdown_distributed()
    return result
