"""Count-based MLM baselines, scored on EXACTLY the held-out masked positions the model is scored on.

A pretrained BERT is only worth its compute if it predicts a masked token better than counting does. Three
count models, from weakest to strongest, all fitted on the TRAINING documents only:

- unigram: always the most frequent training token (knows nothing of context).
- bidirectional bigram: the masked token c between neighbours l and r is
      argmax_c  P(c | l) · P(r | c),   P(b | a) = (n(a, b) + k) / (n(a) + k·V')   with k = 0.1 (add-k smoothing),
  n(a, b) = how often b follows a in a training document, n(a) = Σ_b n(a, b), V' = number of real (non-special)
  tokens. It sees exactly the model's input: a neighbour that is [MASK], a special token ([CLS], [SEP], [PAD],
  [UNK]: a packing boundary shows up as [SEP] [CLS]) or the row's edge drops its factor. With both factors
  dropped it falls back to the unigram guess.
- ±2 window: the most frequent training token seen between the same visible neighbours, trying the widest
  context first: (l2 l1 _ r1 r2), then (l2 l1 _ r1), (l1 _ r1 r2), (l1 _ r1); a context never seen in training
  (or hidden by masks) backs off to the bigram. "Wider context helps" is then the gap window2_acc - bigram_acc.

Keys: a context of n tokens is the integer Σ token_i · V^(n-1-i) in uint64 arithmetic. It is exact while V^n < 2^64
(every vocab up to 65,536 tokens: all uint16 corpora); beyond that it wraps, i.e. it becomes a hash whose rare
collisions would merge two contexts.

Dimension legend: N corpus tokens, V vocab, M evaluated masked positions, P distinct training bigrams,
B rows, T max_len, C counted pairs next to the scored positions.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert import IGNORE_INDEX
from minibert.training.io import atomic_write_bytes, atomic_write_text
from pretrain.corpus import words_table_path

SMOOTHING_K = 0.1                                    # add-k smoothing of the bigram (the definition)
WINDOW_PATTERNS = ((-2, -1, 1, 2), (-2, -1, 1), (-1, 1, 2), (-1, 1))  # widest context first
CHUNK_TOKENS = 1 << 24                               # count 16M corpus tokens at a time: bounded RAM
MAX_SCORES = 1 << 22                                 # bigram scores held at once (positions × V)


def _training_chunks(corpus, train_docs, margin):
    """Yields (tokens int64 [n], doc int64 [n], usable bool [n]) over the corpus in chunks that overlap by
    `margin` tokens, so every window of ±margin lies inside one chunk; usable marks the tokens a chunk owns."""
    is_train = np.zeros(corpus.num_docs, bool)
    is_train[np.asarray(train_docs, dtype=np.int64)] = True
    total = len(corpus.tokens)
    for start in range(0, total, CHUNK_TOKENS):
        lo, hi = max(0, start - margin), min(total, start + CHUNK_TOKENS + margin)
        tokens = np.asarray(corpus.tokens[lo:hi], dtype=np.int64)
        doc = np.searchsorted(corpus.offsets, np.arange(lo, hi), side="right") - 1      # [n] document of a token
        owned = (np.arange(lo, hi) >= start) & (np.arange(lo, hi) < start + CHUNK_TOKENS)
        yield tokens, doc, owned & is_train[doc]


def _shifted(values, offset, fill):
    """values[i + offset] at every i (fill outside): the neighbour `offset` places away."""
    out = np.full_like(values, fill)
    if offset > 0:
        out[:-offset] = values[offset:]
    elif offset < 0:
        out[-offset:] = values[:offset]
    return out


def _context_key(columns, vocab_size):
    """uint64 key of the tuple (columns[0][i], columns[1][i], ...) per position (exact while V^n < 2^64)."""
    key = np.zeros(len(columns[0]), np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            key = key * np.uint64(vocab_size) + column.astype(np.uint64)
    return key


@dataclass
class BigramCounts:
    """Training bigram counts, sparse: keys[p] = left·V + right (sorted), counts[p] = n(left, right).

    Only pairs of real tokens inside one training document are counted. Saved with the exported model
    (`save`/`load`, a small .npz) so that demos can show the bigram guess next to the model's.
    """
    vocab_size: int
    is_special: np.ndarray    # bool [V]
    keys: np.ndarray          # int64 [P] sorted
    counts: np.ndarray        # int64 [P]
    unigram: np.ndarray       # int64 [V] training counts of each real token

    def __post_init__(self):
        V = self.vocab_size
        self.left_totals = np.bincount(self.keys // V, weights=self.counts, minlength=V)  # n(a) [V]
        by_right = np.argsort(self.keys % V * V + self.keys // V, kind="stable")          # (right, left) order
        self.keys_by_right, self.counts_by_right = (self.keys % V * V + self.keys // V)[by_right], self.counts[by_right]
        self.num_real = int((~self.is_special).sum())                                       # V'
        self.unigram_best = int(np.argmax(np.where(self.is_special, -1, self.unigram)))

    @classmethod
    def from_corpus(cls, corpus, train_docs) -> "BigramCounts":
        V = corpus.tokenizer.vocab_size
        is_special = np.zeros(V, bool)
        is_special[corpus.tokenizer.special_ids] = True
        keys, counts, unigram = [], [], np.zeros(V, np.int64)
        for tokens, doc, usable in _training_chunks(corpus, train_docs, margin=1):
            real = usable & ~is_special[tokens]
            unigram += np.bincount(tokens[real], minlength=V)
            right, right_doc = _shifted(tokens, 1, 0), _shifted(doc, 1, -1)
            pair = real & (right_doc == doc) & ~is_special[right]  # the pair belongs to its left token's chunk
            chunk_keys, chunk_counts = np.unique(tokens[pair] * V + right[pair], return_counts=True)
            keys.append(chunk_keys)
            counts.append(chunk_counts)
        merged, inverse = np.unique(np.concatenate(keys), return_inverse=True)  # chunks share pairs: add them up
        merged_counts = np.bincount(inverse, weights=np.concatenate(counts)).astype(np.int64)
        return cls(V, is_special, merged.astype(np.int64), merged_counts, unigram)

    def save(self, path) -> None:
        """An .npz file, written atomically (a reader never sees half of it)."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, vocab_size=self.vocab_size, is_special=self.is_special, keys=self.keys,
                            counts=self.counts, unigram=self.unigram)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path) -> "BigramCounts":
        with np.load(path) as data:
            return cls(int(data["vocab_size"]), data["is_special"], data["keys"], data["counts"], data["unigram"])

    def count(self, left, right) -> np.ndarray:
        """n(left, right) for int64 arrays of equal shape (0 for pairs never seen)."""
        query = left * self.vocab_size + right
        index = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        return np.where(self.keys[index] == query, self.counts[index], 0) if len(self.keys) else np.zeros_like(query)

    def predict(self, left, right, k: float = SMOOTHING_K) -> np.ndarray:
        """Bidirectional-bigram guesses: argmax_c P(c | left) · P(right | c) per position (ties: the lower id).

        Args:
            left, right: int64 [M] neighbour ids; -1 where the neighbour is hidden (masked, special, row edge).
            k: add-k smoothing.
        Returns:
            int64 [M] predicted ids.
        """
        left, right = np.asarray(left, np.int64), np.asarray(right, np.int64)
        rows = max(1, MAX_SCORES // self.vocab_size)  # positions scored at once: a bounded [m,V] matrix
        guesses = np.concatenate([self.scores(left[lo:lo + rows], right[lo:lo + rows], k).argmax(axis=1)
                                  for lo in range(0, len(left), rows)] or [np.zeros(0, np.int64)])
        return np.where((left < 0) & (right < 0), self.unigram_best, guesses)  # no factor left: the unigram guess

    def scores(self, left, right, k: float = SMOOTHING_K) -> np.ndarray:
        """float64 [m,V]: P(c | left) · P(right | c) for every token c, up to a factor that is the same for every c
        (1 / (n(left) + kV')); a hidden neighbour's factor is 1; special tokens score -inf."""
        has_left, has_right = (left >= 0)[:, None], (right >= 0)[:, None]  # [m,1]
        forward = np.where(has_left, self._dense(self.keys, self.counts, left, k), 1.0)            # n(l,c)+k
        backward = self._dense(self.keys_by_right, self.counts_by_right, right, k)                   # n(c,r)+k
        backward = np.where(has_right, backward / (self.left_totals + k * self.num_real), 1.0)      # P(r|c)
        return np.where(self.is_special, -np.inf, forward * backward)

    def _dense(self, sorted_keys, counts, ids, k):
        """[m,V] k + count of (id, c) for keys sorted as id·V + c: each id's block scattered into a dense row."""
        V = self.vocab_size
        ids = np.maximum(ids, 0)
        start, end = np.searchsorted(sorted_keys, ids * V), np.searchsorted(sorted_keys, ids * V + V)  # [m]
        lengths = end - start
        owner = np.repeat(np.arange(len(ids)), lengths)                                            # [C]
        flat = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + start[owner]
        dense = np.full((len(ids), V), k)
        dense[owner, sorted_keys[flat] % V] += counts[flat]
        return dense


def heldout_positions(batches, max_sequences: int, is_special: np.ndarray, reach: int = 2) -> dict:
    """The masked positions `pretrain.evaluation.evaluate` scores, with the neighbours the model sees.

    Args:
        batches: the same iterable of masked batch dicts `evaluate` gets (held-out, [MASK]-only masks).
        max_sequences: the same row limit `evaluate` uses (whole batches: rounded up to a batch multiple).
        is_special: bool [V]; [MASK] and the other specials are hidden neighbours.
        reach: neighbours to collect on each side.
    Returns:
        {"target": int64 [M], offset: int64 [M] for offset in ±1..±reach}: neighbour ids, -1 where hidden.
    """
    targets, neighbours, rows = [], {o: [] for o in range(-reach, reach + 1) if o}, 0
    for batch in itertools.takewhile(lambda _: rows < max_sequences, batches):
        input_ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()             # [B,T]
        visible = np.where(is_special[input_ids], -1, input_ids)  # [MASK], [CLS], [SEP], [PAD] are hidden
        row, column = np.nonzero(labels != IGNORE_INDEX)                                    # [M_b]
        targets.append(labels[row, column])
        for offset in neighbours:
            inside = (column + offset >= 0) & (column + offset < labels.shape[1])
            neighbours[offset].append(np.where(inside, visible[row, np.clip(column + offset, 0, labels.shape[1] - 1)],
                                               -1))
        rows += len(input_ids)
    return {"target": np.concatenate(targets).astype(np.int64),
            **{o: np.concatenate(v).astype(np.int64) for o, v in neighbours.items()}}


def window_predict(corpus, train_docs, positions: dict, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """±2 window guesses: per position, the most frequent training token between the same visible neighbours,
    for the first pattern of WINDOW_PATTERNS whose neighbours are all visible and whose context was seen.

    Returns:
        (guesses int64 [M], pattern int64 [M]: index into WINDOW_PATTERNS that decided, -1 = `fallback` used).
    """
    V = corpus.tokenizer.vocab_size
    is_special = np.zeros(V, bool)
    is_special[corpus.tokenizer.special_ids] = True
    guesses, decided = fallback.copy(), np.full(len(fallback), -1, np.int64)
    for index, pattern in enumerate(WINDOW_PATTERNS):
        wanted = (decided < 0) & np.all([positions[o] >= 0 for o in pattern], axis=0)      # [M]
        if not wanted.any():
            continue
        query_keys = _context_key([positions[o][wanted] for o in pattern], V)
        unique_queries = np.unique(query_keys)                                              # [Q] sorted
        matched = []  # query index · V + centre token, one entry per training occurrence
        for tokens, doc, usable in _training_chunks(corpus, train_docs, margin=max(map(abs, pattern))):
            ok = usable & ~is_special[tokens]
            for o in pattern:
                ok &= _shifted(doc, o, -1) == doc
            key = _context_key([_shifted(tokens, o, 0) for o in pattern], V)[ok]
            slot = np.minimum(np.searchsorted(unique_queries, key), len(unique_queries) - 1)
            hit = unique_queries[slot] == key
            matched.append(slot[hit] * V + tokens[ok][hit])
        pairs, counts = np.unique(np.concatenate(matched), return_counts=True)
        # Most frequent centre per query context (ties: the lower id): sort by context, count descending, id.
        order = np.lexsort((pairs % V, -counts, pairs // V))
        first = order[np.r_[True, (pairs // V)[order][1:] != (pairs // V)[order][:-1]]] if len(order) else order
        best = np.full(len(unique_queries), -1, np.int64)
        best[pairs[first] // V] = pairs[first] % V
        found = best[np.searchsorted(unique_queries, query_keys)]                          # [wanted]
        where = np.flatnonzero(wanted)[found >= 0]
        guesses[where], decided[where] = found[found >= 0], index
    return guesses, decided


def score_baselines(corpus, train_docs, heldout_batches, max_sequences: int, bigram: BigramCounts | None = None
                    ) -> dict:
    """Accuracy of the three count models on the held-out masked positions the model is evaluated on.

    Args:
        corpus: EncodedCorpus; train_docs: the training documents (counts come from these only).
        heldout_batches: the evaluation batches ([MASK]-only masks), as given to `evaluate`.
        max_sequences: `evaluate`'s row limit (--eval-sequences).
        bigram: precomputed BigramCounts of train_docs (computed here if None).
    Returns:
        {"unigram_acc", "bigram_acc", "window2_acc", "window2_coverage" (share decided by a ±2 or ±1 context
        rather than the bigram), "baseline_predictions" (M)}.
    """
    bigram = bigram or BigramCounts.from_corpus(corpus, train_docs)
    positions = heldout_positions(heldout_batches, max_sequences, bigram.is_special)
    target = positions["target"]
    if len(target) == 0:
        raise ValueError("baselines: the held-out batches hold no masked position; raise --heldout-fraction")
    bigram_guess = bigram.predict(positions[-1], positions[1])
    window_guess, decided = window_predict(corpus, train_docs, positions, bigram_guess)
    return {"unigram_acc": float(np.mean(target == bigram.unigram_best)),
            "bigram_acc": float(np.mean(target == bigram_guess)),
            "window2_acc": float(np.mean(target == window_guess)),
            "window2_coverage": float(np.mean(decided >= 0)),
            "baseline_predictions": int(len(target))}


def standing(metrics: dict | None, baselines: dict, window: bool = True) -> str:
    """One line: where the model stands against counting, e.g. `held-out acc 0.31 | ±2 window 0.35 | bigram 0.26 |
    unigram 0.05` (without the model's part when metrics is None, without the window when window=False)."""
    model = f"held-out acc {metrics['eval_acc']:.2f} | " if metrics else ""
    wide = f"±2 window {baselines['window2_acc']:.2f} | " if window else ""
    return f"{model}{wide}bigram {baselines['bigram_acc']:.2f} | unigram {baselines['unigram_acc']:.2f}"


def export_count_tables(folder, counts: BigramCounts, corpus_path, corpus, heldout_docs, max_len: int,
                        rows: int = 4) -> None:
    """What the fill_mask demo (minibert/explain/fill_mask.py) needs, next to an exported model:
    bigram_counts.npz (the training bigram counts), heldout_examples.txt (the first max_len - 2 tokens of the first
    `rows` held-out documents, one a line) and words.tsv (copied from the corpus's id -> word table, when the
    corpus generator wrote one). Each file is written atomically (minibert/training/io.py)."""
    folder = Path(folder)
    counts.save(folder / "bigram_counts.npz")
    tokens = corpus.tokenizer.tokens
    lines = [" ".join(tokens[i] for i in corpus.tokens[corpus.offsets[d]:corpus.offsets[d + 1]][:max_len - 2])
             for d in heldout_docs[:rows]]
    atomic_write_text(folder / "heldout_examples.txt", "".join(line + "\n" for line in lines))
    words = words_table_path(corpus_path)
    if words.is_file():
        atomic_write_bytes(folder / "words.tsv", words.read_bytes())
