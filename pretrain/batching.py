"""Pretraining data, part 2: cut encoded documents into rows, batch, shard across ranks, mask; resumable.

分段 Segmenting (as the course's Datawhale Task 6 does): each document is cut into pieces of `max_len - 2` tokens and
each piece is wrapped as [CLS] piece [SEP]. Two layouts:

- padded (default): one piece per row, padded with [PAD] to max_len; `attention_mask` marks the real tokens. A
  document's FINAL piece shorter than half a piece is dropped (it would be mostly padding, and its document is
  already represented by its earlier pieces). A document shorter than half a piece AS A WHOLE is kept as one short
  row: dropping it would silently remove every short document from the corpus.
- packed (`pack=True`): [CLS] piece [SEP] units (every remainder kept) are laid back to back and the stream is cut
  into rows of exactly max_len, so no compute goes to padding. The stream keeps each document's units in order
  (the DOCUMENTS are shuffled, then the ROWS), so a row that continues a unit continues the same document: RoBERTa's
  FULL-SENTENCES format (Liu et al., 2019, §4.2; Cramming packs the same way). Shuffling the units instead would
  start nearly every row in one document and end it in another, unrelated one: a third less same-document context
  per token, and unlike the held-out rows, which read each document in order. Attention crosses unit boundaries;
  `attention_mask` is None (the model's "no padding" fast path). The stream's last partial row is dropped.

Determinism, sharding and resume: the batch at position (epoch, step) is a pure function of (seed, epoch, step):
  - the epoch's row order is a permutation seeded by (seed, epoch) (packed: the document order, re-packed each
    epoch, then the rows);
  - global batch `step` is rows [step·G, (step+1)·G) of that order (G = global batch size);
  - masking draws from a torch.Generator seeded by (seed, epoch, step), applied to the WHOLE global batch;
  - rank r of w then takes rows [r·G/w, (r+1)·G/w) of it.
So w processes see exactly the rows and masks one process sees at the same global batch (a DDP run matches a
single-process run), and `state_dict()` = {epoch, step} is all a checkpoint needs to resume bit-identically.

Dimension legend: B rows per rank (= G / world_size), G global batch, T max_len, P pieces.
"""
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from minibert.input_checks import check_inputs, check_mlm_labels
from minibert.model import prediction_positions
from pretrain.masking import DynamicMasking


def segment_documents(offsets, doc_ids, max_len, pack):
    """Cuts documents into pieces of at most max_len - 2 tokens (see module docstring for the rules).

    Args:
        offsets: int64 [D+1] document boundaries in the token array.
        doc_ids: the documents to use (e.g. the training split).
        max_len: T, row length including [CLS] and [SEP].
        pack: keep every final remainder (packed layout) instead of dropping short ones.
    Returns:
        (starts, lengths): int64 [P] token-array start and length of every piece, in document order.
    """
    piece = max_len - 2
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    doc_lengths = offsets[doc_ids + 1] - offsets[doc_ids]                      # [D']
    full, remainder = doc_lengths // piece, doc_lengths % piece
    keep_remainder = remainder > 0
    if not pack:  # drop short tails, but keep a short document as a whole
        keep_remainder &= (2 * remainder >= piece) | (full == 0)
    count = full + keep_remainder                                              # pieces per document
    doc_of_piece = np.repeat(np.arange(len(doc_ids)), count)                   # [P]
    index_in_doc = np.arange(len(doc_of_piece)) - np.repeat(np.cumsum(count) - count, count)
    starts = offsets[doc_ids][doc_of_piece] + index_in_doc * piece
    lengths = np.minimum(piece, doc_lengths[doc_of_piece] - index_in_doc * piece)
    return starts, lengths


class PretrainingBatches:
    """Infinite, deterministic, shardable, resumable iterator of masked MLM batches.

    Args:
        corpus: EncodedCorpus (pretrain.data).
        doc_ids: documents to draw from (train or held-out split).
        max_len: T, tokens per row including [CLS]/[SEP] (≤ the model's max_position_embeddings).
        batch_size: G, rows per GLOBAL batch (summed over ranks; gradient accumulation splits each rank's part).
        masking: a DynamicMasking.
        seed: fixes the row order and the masks.
        pack: packed layout instead of padded rows.
        shuffle: permute rows each epoch (False for evaluation: the same rows and masks every time).
        drop_last: drop the epoch's last incomplete global batch (False for evaluation; needs world_size 1).
        rank, world_size: this process's share (DDP); G must divide evenly.
        pin_memory: page-lock batches for non_blocking GPU copies; None = when CUDA is available.
    """

    def __init__(self, corpus, doc_ids, max_len, batch_size, masking, seed=0, pack=False, shuffle=True,
                 drop_last=True, rank=0, world_size=1, pin_memory=None):
        if max_len < 3:
            raise ValueError(f"max_len: got {max_len}, need ≥ 3 ([CLS], one token, [SEP]); use e.g. 128")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch_size: got global batch {batch_size} for world_size {world_size}; it must be a "
                             f"positive multiple of world_size, e.g. {world_size * max(1, batch_size // world_size)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: got {rank} for world_size {world_size}; ranks are 0..{world_size - 1}")
        if not drop_last and world_size > 1:
            raise ValueError("drop_last=False with world_size > 1 would give ranks unequal batches; "
                             "evaluate on one rank (world_size=1)")
        if not isinstance(masking, DynamicMasking):
            raise ValueError(f"masking: got {type(masking).__name__}, need a pretrain.masking.DynamicMasking")
        tokenizer = corpus.tokenizer
        self.tokens, self.masking = corpus.tokens, masking
        self.pad_id, self.cls_id, self.sep_id = tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id
        self.max_len, self.batch_size, self.seed, self.pack = max_len, batch_size, seed, pack
        self.shuffle, self.rank, self.world_size = shuffle, rank, world_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.piece_starts, self.piece_lengths = segment_documents(corpus.offsets, doc_ids, max_len, pack)  # [P]
        self.piece_documents = np.searchsorted(corpus.offsets, self.piece_starts, side="right") - 1  # [P] ascending
        if pack:
            self.num_rows = int((self.piece_lengths + 2).sum()) // max_len   # rows of the packed stream
        else:
            self.num_rows = len(self.piece_starts)                            # one piece per row
        full, partial = divmod(self.num_rows, batch_size)
        self.steps_per_epoch = full + (0 if drop_last or partial == 0 else 1)
        if self.steps_per_epoch == 0 and not drop_last:  # the held-out set: any row would do
            raise ValueError(f"corpus: the {len(doc_ids)} held-out document(s) are too short for one row of "
                             f"--max-len {max_len}; raise --heldout-fraction or use a bigger corpus")
        if self.steps_per_epoch == 0:
            raise ValueError(f"--batch-size {batch_size} (rows per global batch) but the {len(doc_ids)} training "
                             f"document(s) make only {self.num_rows} row(s) of --max-len {max_len}; lower "
                             f"--batch-size or --max-len, or use a bigger corpus")
        self.epoch, self.step = 0, 0
        self._cached_layout = (None, None)  # (epoch, layout): ONE attribute, read and written whole (_epoch_layout)

    # --------------------------------------------------------------------------------------- position
    def state_dict(self):
        """The data position: the NEXT batch to be produced is (epoch, step) of this stream of max_len rows."""
        return {"epoch": self.epoch, "step": self.step, "steps_per_epoch": self.steps_per_epoch, "seed": self.seed,
                "max_len": self.max_len}

    def load_state_dict(self, state):
        if state["steps_per_epoch"] != self.steps_per_epoch or state["seed"] != self.seed:
            raise ValueError(f"data state: checkpoint has {state['steps_per_epoch']} steps/epoch and seed "
                             f"{state['seed']}, this run {self.steps_per_epoch} and {self.seed}; resume with the "
                             "same corpus, vocab, max_len, batch size, pack and seed")
        self.epoch, self.step = state["epoch"], state["step"]

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.batch(self.epoch, self.step)
        self.epoch, self.step = self.position(1)
        return batch

    def position(self, ahead=0):
        """(epoch, step) of the batch `ahead` batches after the next one."""
        epochs, step = divmod(self.step + ahead, self.steps_per_epoch)
        return self.epoch + epochs, step

    def epoch_batches(self):
        """Every batch of epoch 0, in order, without moving the iterator (for evaluation)."""
        for step in range(self.steps_per_epoch):
            yield self.batch(0, step)

    # ------------------------------------------------------------------------------------ batch making
    def batch(self, epoch, step):
        """This rank's part of global batch `step` of `epoch`.

        Returns:
            dict of torch.long tensors: input_ids [B,T] (masked), labels [B,T] (-100 where not predicted),
            token_type_ids [B,T] (zeros), attention_mask [B,T] (padded layout) or None (packed layout).
        """
        order = self._epoch_layout(epoch)
        rows = np.arange(step * self.batch_size, min((step + 1) * self.batch_size, self.num_rows))  # [G]
        if self.pack:
            unit_order, unit_ends, row_order = order
            input_ids = self._packed_rows(row_order[rows], unit_order, unit_ends)
            attention_mask = None
        else:
            input_ids, attention_mask = self._padded_rows(order[rows])
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, 1, epoch, step]).generate_state(1, np.uint64)[0]))
        masked_ids, labels = self.masking(torch.from_numpy(input_ids), generator)  # whole global batch: [G,T]
        share = len(rows) // self.world_size
        mine = slice(self.rank * share, (self.rank + 1) * share)
        batch = {"input_ids": masked_ids[mine], "labels": labels[mine],
                 "token_type_ids": torch.zeros_like(masked_ids[mine]),
                 "attention_mask": None if attention_mask is None else torch.from_numpy(attention_mask[mine])}
        if self.pin_memory:
            batch = {name: None if t is None else t.pin_memory() for name, t in batch.items()}
        return batch

    def _epoch_layout(self, epoch):
        """Padded: the row order (a piece permutation). Packed: (unit order: documents permuted, each one's units in
        order; unit end offsets in the stream; row order: a permutation of the stream's rows).

        Cached per epoch as one (epoch, layout) tuple: on a GPU the Prefetcher's thread and the main thread (the
        --time-budget probe at the growth step) can ask for different epochs at once, and two attributes written
        one after the other could pair one epoch's number with another epoch's order."""
        cached_epoch, layout = self._cached_layout
        if cached_epoch != epoch:
            count = len(self.piece_starts)
            rng = np.random.default_rng([self.seed, 0, epoch])
            if not self.pack:
                layout = rng.permutation(count) if self.shuffle else np.arange(count)
            elif not self.shuffle:
                layout = (np.arange(count), np.cumsum(self.piece_lengths + 2), np.arange(self.num_rows))
            else:
                document_rank = rng.permutation(self.piece_documents[-1] + 1)  # [D] a place for every document
                order = np.argsort(document_rank[self.piece_documents], kind="stable")  # [P] its units stay in order
                layout = (order, np.cumsum(self.piece_lengths[order] + 2), rng.permutation(self.num_rows))
            self._cached_layout = (epoch, layout)
        return layout

    def _padded_rows(self, pieces):
        """[CLS] piece [SEP] [PAD]... rows for the given pieces, gathered with one fancy index on the memmap."""
        starts, lengths = self.piece_starts[pieces], self.piece_lengths[pieces]  # [G]
        columns = np.arange(self.max_len - 2)
        inside = columns[None, :] < lengths[:, None]                               # [G,T-2]
        body = np.asarray(self.tokens[np.where(inside, starts[:, None] + columns, 0)], dtype=np.int64)
        input_ids = np.full((len(pieces), self.max_len), self.pad_id, dtype=np.int64)  # [G,T]
        input_ids[:, 0] = self.cls_id
        input_ids[:, 1:-1] = np.where(inside, body, self.pad_id)
        input_ids[np.arange(len(pieces)), lengths + 1] = self.sep_id
        attention_mask = (np.arange(self.max_len)[None, :] < lengths[:, None] + 2).astype(np.int64)  # [G,T]
        return input_ids, attention_mask

    def _packed_rows(self, rows, unit_order, unit_ends):
        """Rows [r·T, (r+1)·T) of the stream of [CLS] piece [SEP] units, located with one searchsorted."""
        position = rows[:, None] * self.max_len + np.arange(self.max_len)          # [G,T] stream positions
        unit = np.searchsorted(unit_ends, position, side="right")                  # [G,T] unit index in order
        piece = unit_order[unit]
        unit_length = self.piece_lengths[piece] + 2
        offset = position - (unit_ends[unit] - unit_length)                        # [G,T] 0 = [CLS]
        is_cls, is_sep = offset == 0, offset == unit_length - 1
        source = np.where(is_cls | is_sep, 0, self.piece_starts[piece] + offset - 1)
        body = np.asarray(self.tokens[source], dtype=np.int64)                     # [G,T]
        return np.where(is_cls, self.cls_id, np.where(is_sep, self.sep_id, body))


def split_micro_batches(batch, k, config=None):
    """梯度累积 Cut one rank's batch [G/W,T] into k micro-batches [B,T] and add each one's `prediction_positions`
    [M_i], the flat indices of its masked tokens: found here on the CPU, so the GPU never has to tell the host
    how many there are (minibert/model.py:sparse_mlm_logits). Pinned inputs give pinned outputs. With a BertConfig,
    the ids and labels are also checked here, on the CPU, in one clear line (on a GPU a bad id would surface as an
    opaque device-side assert, and checking it there would make the host wait)."""
    B = len(batch["input_ids"]) // k
    parts = []
    for i in range(k):
        part = {name: None if t is None else t[i * B:(i + 1) * B] for name, t in batch.items()}  # views: still pinned
        if config is not None:
            check_inputs(config, part["input_ids"], part["token_type_ids"], part["attention_mask"],
                         config.max_position_embeddings)
            check_mlm_labels(part["labels"], config.vocab_size)
        positions = prediction_positions(part["labels"])  # [M_i]
        part["prediction_positions"] = positions.pin_memory() if part["labels"].is_pinned() else positions
        parts.append(part)
    return parts


class Prefetcher:
    """预取 Prefetching: build the next batches in a background thread while the device trains on this one.

    Masking, gathering rows and pinning run on the CPU; on a GPU they would otherwise sit between two steps while
    the GPU idles. A batch is a pure function of its (epoch, step) (see the module docstring), so the thread simply
    works `depth` positions ahead, and `state_dict()` stays the position of the batch the LOOP takes next: a
    checkpoint never records batches that were prefetched but not trained on.

    Args:
        batches: the PretrainingBatches to read ahead.
        prepare: applied to each batch in the thread as well (e.g. splitting into micro-batches).
        depth: how many batches to hold ready.
    """

    def __init__(self, batches, prepare=lambda batch: batch, depth=2):
        self.batches, self.prepare, self.depth = batches, prepare, depth
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self.ahead = deque()  # futures of the next batches, in order

    def __iter__(self):
        return self

    def __next__(self):
        while len(self.ahead) < self.depth:
            epoch, step = self.batches.position(len(self.ahead))
            self.ahead.append(self.pool.submit(lambda e=epoch, s=step: self.prepare(self.batches.batch(e, s))))
        prepared = self.ahead.popleft().result()
        self.batches.epoch, self.batches.step = self.batches.position(1)
        return prepared

    def close(self):
        """Stop the thread (batches already being built are finished and dropped)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.ahead.clear()
