"""Held-out MLM evaluation: loss, accuracy and perplexity on documents the model never trains on.

Comparable across evaluations: the held-out batches come from a `PretrainingBatches` with shuffle=False, whose
masks are seeded by (seed, step) alone, so every evaluation scores the SAME positions of the SAME rows. A change in
the number is then the model's doing, not the luck of a new mask draw.

Perplexity = exp(mean cross-entropy over the masked positions): "as uncertain as a uniform choice among that many
tokens". The unigram baseline (`unigram_baseline` below) is what a model that ignores context scores; the held-out documents
come from `split_documents`.

Dimension legend: B rows, T max_len, M masked positions, V vocab.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minibert import IGNORE_INDEX
from minibert.training.device import autocast, move_batch
from pretrain.baselines import BigramCounts, score_baselines
from pretrain.batching import PretrainingBatches
from pretrain.masking import DynamicMasking

EVAL_BATCH_SIZE = 64
EVAL_MASK_RATE = 0.15  # evaluate at BERT's rate whatever --mask-rate trains with, so runs stay comparable


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device, amp_dtype: torch.dtype | None,
             max_sequences: int) -> dict:
    """Score `model` on the first batches of `batches` (an iterable of masked batch dicts) until they hold
    `max_sequences` rows: whole batches, so the count is rounded up to a multiple of EVAL_BATCH_SIZE.

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


def split_documents(num_docs, heldout_fraction=0.02, seed=0, source="corpus"):
    """Held-out split BY DOCUMENT (pieces of one document never straddle train and evaluation).

    Args:
        source: the corpus path, for the error message.
    Returns:
        (train_docs, heldout_docs): sorted int64 document indices; a seeded permutation makes the split
        deterministic. At least one document is held out when heldout_fraction > 0.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction: got {heldout_fraction}, must be in [0, 1); use e.g. 0.02")
    num_heldout = max(1, round(heldout_fraction * num_docs)) if heldout_fraction > 0 else 0
    if num_heldout >= num_docs:
        raise ValueError(f"{source}: {num_docs} document(s) leave nothing to train on once --heldout-fraction="
                         f"{heldout_fraction} (at least one document) is held out; pretraining needs a corpus of at "
                         f"least 2 documents (one per line, or one per TSV row)")
    order = np.random.default_rng([seed, 1]).permutation(num_docs)
    return np.sort(order[num_heldout:]), np.sort(order[:num_heldout])


def init_split_warning(init_folder, corpus_path, num_docs: int, heldout_docs) -> str | None:
    """--init from a run on the SAME corpus with another --seed or --heldout-fraction: the new held-out documents
    may be ones the initial model trained on, and held-out accuracy then reads high. Returns the warning, or None.
    The earlier run's split is read from its pretrain_config.json: in the run folder, which holds final/ (or
    checkpoint.pt itself); a model from elsewhere has none, and nothing is said."""
    records = [folder / "pretrain_config.json" for folder in (Path(init_folder), Path(init_folder).parent)]
    record = next((r for r in records if r.is_file()), None)
    if record is None:
        return None
    earlier = json.loads(record.read_text())
    if Path(earlier.get("corpus") or "").resolve() != Path(corpus_path).resolve():
        return None  # another corpus: its documents are not this one's
    trained_on, _ = split_documents(num_docs, earlier["heldout_fraction"], earlier["seed"])
    seen = np.intersect1d(heldout_docs, trained_on).size
    if not seen:
        return None
    return (f"warning: --init {init_folder} was pretrained on {seen:,} of this run's {len(heldout_docs):,} held-out "
            f"documents (its run used --seed {earlier['seed']} --heldout-fraction {earlier['heldout_fraction']}); "
            f"held-out accuracy will read high: pass those two flags to keep its held-out documents held out")


def unigram_baseline(corpus, heldout_docs, masking=None):
    """The score of a model that ignores context: always predict the most frequent training token.

    The masked positions are a uniform sample of the non-special tokens, so when every selected position shows
    [MASK] its expected MLM accuracy is that token's share f of the held-out tokens. With 80/10/10 masking a
    context-free model does better: at the 10% "unchanged" positions it sees the answer, so it can score
    0.8·f + 0.1 without learning anything about context. Compare a model with `context_free_accuracy` when it is
    evaluated with 80/10/10 masks, with `accuracy` when evaluated with [MASK] only (the cleaner test).
    Perplexity: exp(cross-entropy of the held-out tokens under the add-one-smoothed training unigram distribution).

    Args:
        corpus: EncodedCorpus.
        heldout_docs: held-out document indices; every other document counts as training data.
        masking: the evaluation DynamicMasking; None assumes every selected position shows [MASK].
    Returns:
        dict(token_id, token, accuracy, context_free_accuracy, perplexity).
    """
    vocab_size, specials = corpus.tokenizer.vocab_size, corpus.tokenizer.special_ids
    total_counts = np.zeros(vocab_size, np.int64)
    for start in range(0, len(corpus.tokens), 1 << 24):  # 16M tokens at a time: bounded RAM on a big corpus
        total_counts += np.bincount(corpus.tokens[start:start + (1 << 24)], minlength=vocab_size)
    heldout_counts = np.zeros(vocab_size, np.int64)
    for doc in heldout_docs:
        heldout_counts += np.bincount(corpus.tokens[corpus.offsets[doc]:corpus.offsets[doc + 1]],
                                      minlength=vocab_size)
    total_counts[specials] = heldout_counts[specials] = 0  # [UNK], the one special in the cache, is never masked
    train_counts = total_counts - heldout_counts
    if heldout_counts.sum() == 0:
        raise ValueError("heldout_docs: the held-out documents hold no real token; hold out more documents")
    best = int(train_counts.argmax())
    accuracy = float(heldout_counts[best] / heldout_counts.sum())
    context_free = accuracy
    if masking is not None:
        shown_mask, shown_random = masking.mask_token_fraction, masking.random_token_fraction
        shown_original = 1.0 - shown_mask - shown_random
        visible = shown_original + shown_random  # the input token is shown: right if it is the original
        copy_right = (shown_original + shown_random / len(masking.real_token_ids)) / visible if visible else 0.0
        context_free = shown_mask * accuracy + visible * max(accuracy, copy_right)
    smoothed = (train_counts + 1.0) / (train_counts.sum() + vocab_size - len(specials))  # add-one smoothing
    cross_entropy = -(heldout_counts * np.log(smoothed)).sum() / heldout_counts.sum()
    return dict(token_id=best, token=corpus.tokenizer.tokens[best], accuracy=accuracy,
                context_free_accuracy=float(context_free), perplexity=float(np.exp(cross_entropy)))


def heldout_yardsticks(corpus, train_docs, heldout_docs, cfg, max_len: int | None = None, bigram_counts=None):
    """The held-out evaluation batches (rows of max_len, default cfg.max_len), and the count baselines scored on
    exactly their masked positions. bigram_counts: the training counts, when already counted (they do not depend
    on the row length).

    Evaluation masks show [MASK] at EVERY selected position (no 10% unchanged / 10% random): with 80/10/10 a model
    that merely copies its input scores 0.1 for free, and the comparison with the count models (which never see
    the answer) would flatter it. The baselines are scored once: the evaluation positions never change.

    Returns:
        (heldout PretrainingBatches, unigram_baseline dict (its token and perplexity), the training BigramCounts
        (exported for fill_mask), the baselines dict of pretrain/baselines.py:score_baselines).
    """
    masking = DynamicMasking.from_tokenizer(corpus.tokenizer, EVAL_MASK_RATE, mask_token_fraction=1.0,
                                            random_token_fraction=0.0)
    heldout = PretrainingBatches(corpus, heldout_docs, max_len or cfg.max_len, EVAL_BATCH_SIZE, masking, seed=cfg.seed,
                                 pack=cfg.pack, shuffle=False, drop_last=False)
    if bigram_counts is None:  # counted once per run; a long grown stage passes the first count back in
        bigram_counts = BigramCounts.from_corpus(corpus, train_docs)
    baselines = score_baselines(corpus, train_docs, heldout.epoch_batches(), cfg.eval_sequences, bigram_counts)
    return heldout, unigram_baseline(corpus, heldout_docs, masking), bigram_counts, baselines
