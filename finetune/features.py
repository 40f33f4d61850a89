"""From examples to model inputs: 分词 tokenization, 长文本截断 truncation of long texts, label alignment, and batches.

  * Truncation (`--truncate`). Tianchi news documents average ~900 tokens, far beyond a 256/512 window.
    `head` keeps the beginning, `tail` the end, and `head+tail` (default) keeps 128/510 (about a quarter) of the
    budget from the beginning and the rest from the end: Sun et al. 2019 ("How to Fine-Tune BERT for Text
    Classification?", §5.3.1) found head 128 + tail 382 best on long IMDb/Sogou documents, since news puts its
    gist in the lead and its conclusion at the end.
    `windows` keeps EVERYTHING: the text is cut into consecutive windows of max_length - 2 tokens (the last one
    ending at the text's end, overlapping the one before, so no window is a short tail), each window
    is a training example with its document's label, and a document's prediction averages the log-probabilities
    of its windows (tasks.py:pool_windows). The model then reads the whole document, as TF-IDF does; the cost
    is one forward pass per window. Pretraining rows are short (make pretrain: 64), so windows of that length
    also keep every position inside the range the encoder was pretrained on.
  * Pairs are cut longest-first (BERT's `_truncate_seq_pair`): the longer segment loses a token until both fit.
  * NER labels are aligned to the FIRST sub-token of each character; continuation sub-tokens, [CLS], [SEP]
    and padding get −100 so the loss and the metrics ignore them.
  * Batches are length-bucketed: examples of similar length share a batch and each batch is padded only to
    its own longest row (dynamic padding), so short texts don't pay for long ones.

Dimension legend: B batch, T padded sequence length, C classes / entity types, E entities of one example,
n tokens of one example, W windows (of all documents), X examples (documents).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from minibert import IGNORE_INDEX
from minibert.training.accumulation import count_predictions

TRUNCATE_MODES = ("head", "tail", "head+tail", "windows")
HEAD_FRACTION = 128 / 510  # head+tail: Sun et al. 2019 keep 128 of 510 tokens from the start (~1/4)
ENCODE_CHUNK = 4096  # texts per tokenizer call (the Rust backend parallelises inside one call)


@dataclass
class Feature:
    input_ids: np.ndarray  # [n] token IDs with [CLS] ... [SEP]
    token_type_ids: np.ndarray | None  # [n] 0 for segment A, 1 for B; None means all 0
    label: object  # int | list[int] (multi-label) | [n] BIO tag IDs | [E,3] (type, start token, end token)
    token_to_char: np.ndarray | None = None  # NER: [n] character index of each first sub-token, -1 elsewhere
    source: int | None = None  # --truncate windows: index of the example this window was cut from


def truncate(ids: np.ndarray, budget: int, mode: str) -> np.ndarray:
    """Cut a token-ID array to at most `budget` tokens: keep the head, the tail, or both (see module doc)."""
    if len(ids) <= budget:
        return ids
    if mode == "head":
        return ids[:budget]
    if mode == "tail":
        return ids[len(ids) - budget:]
    if mode == "head+tail":
        head = round(budget * HEAD_FRACTION)  # 510 -> exactly 128 (int() would give 127)
        return np.concatenate([ids[:head], ids[len(ids) - (budget - head):]])
    raise ValueError(f"--truncate {mode!r}: must be one of {TRUNCATE_MODES[:3]} (windows: see windows())")


def windows(ids: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive windows of `size` tokens covering all of `ids`; the last one ENDS at the text's end, overlapping
    the one before. Cut at fixed strides, a 63-token text in 62-token windows would leave a 1-token tail window: it
    votes on the document as much as a full one and trains on its label with nothing to read. A text of at most
    `size` tokens is one window (an empty text one empty window, so every example keeps a prediction)."""
    last = max(len(ids) - size, 0)  # where the last window starts
    return [ids[start:start + size] for start in [*range(0, last, size), last]]


def average_windows(values: torch.Tensor, sources: list[int], num_examples: int) -> torch.Tensor:
    """Mean of the rows of `values` [W,...] that belong to each example: sources[w] is window w's example.
    Returns [X,...]; an example without windows gets zeros (encode_texts gives every example at least one)."""
    owner = torch.as_tensor(sources)                                                        # [W]
    totals = torch.zeros(num_examples, *values.shape[1:], dtype=values.dtype).index_add_(0, owner, values)
    counts = torch.bincount(owner, minlength=num_examples).clamp(min=1)                     # [X]
    return totals / counts.reshape(-1, *[1] * (values.dim() - 1)).to(values.dtype)          # [X,...]


def longest_first(length_a: int, length_b: int, budget: int) -> tuple[int, int]:
    """How many tokens of segments A and B survive when the longer one repeatedly loses a token (B on ties),
    in closed form instead of a token-by-token loop."""
    keep_b = min(length_b, max(budget // 2, budget - length_a))
    return min(length_a, budget - keep_b), keep_b


def _token_ids(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token IDs without specials, encoded by the Rust backend in chunks."""
    out = []
    for start in range(0, len(texts), ENCODE_CHUNK):
        out.extend(tokenizer.encode_ids_batch(texts[start:start + ENCODE_CHUNK]))
    return out


def encode_texts(tokenizer, examples, max_length: int, truncate_mode: str, multi_label: bool = False) -> list[Feature]:
    """Single texts, or pairs when examples carry text_b: [CLS] A [SEP] (B [SEP]), with segment IDs 0 then 1.

    With truncate_mode "windows" (single texts only), each example becomes one feature per window, its `source`
    set to the example's index.
    """
    cls_id, sep_id = np.array([tokenizer.cls_id]), np.array([tokenizer.sep_id])
    ids_a = _token_ids(tokenizer, [e.text for e in examples])
    pairs = examples and examples[0].text_b is not None
    ids_b = _token_ids(tokenizer, [e.text_b for e in examples]) if pairs else None
    features = []
    for index, example in enumerate(examples):
        if pairs:
            keep_a, keep_b = longest_first(len(ids_a[index]), len(ids_b[index]), max_length - 3)
            a, b = ids_a[index][:keep_a], ids_b[index][:keep_b]
            input_ids = np.concatenate([cls_id, a, sep_id, b, sep_id])
            token_type_ids = np.concatenate([np.zeros(keep_a + 2, np.int64), np.ones(keep_b + 1, np.int64)])
        elif truncate_mode == "windows":
            for window in windows(ids_a[index], max_length - 2):
                input_ids = np.concatenate([cls_id, window, sep_id]).astype(np.int64)
                features.append(Feature(input_ids, None, example.label, source=index))
            continue
        else:
            input_ids = np.concatenate([cls_id, truncate(ids_a[index], max_length - 2, truncate_mode), sep_id])
            token_type_ids = None
        features.append(Feature(input_ids.astype(np.int64), token_type_ids, example.label))
    return features


def bio_tag_names(types: list[str]) -> list[str]:
    """O, then B-type / I-type for every entity type: tag IDs 0, 1+2k, 2+2k."""
    return ["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]


def encode_ner(tokenizer, examples, max_length: int, types: list[str], scheme: str) -> list[Feature]:
    """Character-level NER encoding (CLUENER): each character is a "word" that becomes 1+ sub-tokens.

    Args:
        scheme: "bio" (labels = [n] tag IDs on first sub-tokens, −100 elsewhere) or "spans" (labels = [E,3]
            rows of (type, start token, end token), both ends on first sub-tokens, for GlobalPointer).
    A character with no sub-token (e.g. a space) becomes [UNK], so character and token positions stay aligned.
    Entities cut off by truncation are dropped from the TRAINING labels (BIO: the characters of one cut through
    get −100, not a wrong "O"); evaluation still counts them as missed.
    """
    type_index = {t: k for k, t in enumerate(types)}
    alphabet = sorted({c for e in examples for c in e.text})
    pieces = {c: (p if len(p) else np.array([tokenizer.unk_id])) for c, p in zip(alphabet, _token_ids(tokenizer, alphabet))}
    features = []
    for example in examples:
        char_pieces = [pieces[c] for c in example.text]
        lengths = np.array([len(p) for p in char_pieces], dtype=np.int64)  # [chars]
        first_token = 1 + np.concatenate([[0], np.cumsum(lengths)[:-1]])  # [chars] after [CLS]
        kept = int(np.searchsorted(np.cumsum(lengths), max_length - 2, side="right"))  # chars that fit
        body = np.concatenate(char_pieces[:kept]) if kept else np.zeros(0, np.int64)
        input_ids = np.concatenate([[tokenizer.cls_id], body, [tokenizer.sep_id]]).astype(np.int64)
        token_to_char = np.full(len(input_ids), -1, np.int64)
        token_to_char[first_token[:kept]] = np.arange(kept)
        inside = [(type_index[t], s, e) for t, s, e in example.entities if e < kept]
        if scheme == "bio":
            char_tags = np.zeros(kept, np.int64)
            for k, s, e in inside:  # a nested entity overwrites the outer one: BIO cannot hold both
                char_tags[s] = 1 + 2 * k
                char_tags[s + 1:e + 1] = 2 + 2 * k
            label = np.full(len(input_ids), IGNORE_INDEX, np.int64)
            label[first_token[:kept]] = char_tags
            for _, s, e in example.entities:  # cut by --max-length: its kept characters are NOT "O", so unlabelled
                if s < kept <= e:
                    label[first_token[s:kept]] = IGNORE_INDEX
        else:
            label = np.array([(k, first_token[s], first_token[e]) for k, s, e in inside], np.int64).reshape(-1, 3)
        features.append(Feature(input_ids, None, label, token_to_char))
    return features


def ner_cut(features: list[Feature], examples: list) -> tuple[int, int, int]:
    """What --max-length cut from NER texts: (texts cut, entities that end past the cut, the first cut text's line;
    0 if none). encode_ner keeps the characters that fit; the rest are never tagged."""
    cut, lost, first = 0, 0, 0
    for feature, example in zip(features, examples):
        kept = int(feature.token_to_char.max()) + 1  # characters read: the last first-piece's index + 1
        if kept < len(example.text):
            cut, first = cut + 1, first or example.line
            lost += sum(end >= kept for _, _, end in example.entities)
    return cut, lost, first


def bucketed_batches(lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0,
                     bucket_batches: int = 50) -> list[np.ndarray]:
    """Index batches of similar-length examples.

    Training (shuffle=True): shuffle, cut into pools of `bucket_batches` batches, sort each pool by length, cut
    it into batches, shuffle the batch order: batches stay random but rows within one batch have similar length.
    Evaluation (shuffle=False): simply sorted by length (the caller restores the original order).
    """
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    pool = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(features: list[Feature], pad_id: int, label_kind: str, num_labels: int) -> dict[str, torch.Tensor]:
    """Pad one batch to its longest row (dynamic padding) and build the label tensor.

    label_kind: "class" [B] | "multi" [B,C] 0/1 | "tags" [B,T] with −100 padding | "spans" [B,C,T,T] 0/1 | "none".
    """
    B, T = len(features), max(len(f.input_ids) for f in features)
    input_ids = np.full((B, T), pad_id, np.int64)
    token_type_ids = np.zeros((B, T), np.int64)
    attention_mask = np.zeros((B, T), np.int64)
    for row, f in enumerate(features):  # one slice copy per row, never a loop over tokens
        n = len(f.input_ids)
        input_ids[row, :n] = f.input_ids
        attention_mask[row, :n] = 1
        if f.token_type_ids is not None:
            token_type_ids[row, :n] = f.token_type_ids
    batch = {"input_ids": torch.from_numpy(input_ids), "token_type_ids": torch.from_numpy(token_type_ids),
             "attention_mask": torch.from_numpy(attention_mask)}
    if label_kind == "class":
        batch["labels"] = torch.tensor([f.label for f in features], dtype=torch.long)  # [B]
    elif label_kind == "multi":
        multi_hot = torch.zeros(B, num_labels)  # [B,C]
        for row, f in enumerate(features):
            multi_hot[row, f.label] = 1.0
        batch["labels"] = multi_hot
    elif label_kind == "tags":
        tags = np.full((B, T), IGNORE_INDEX, np.int64)  # [B,T]
        for row, f in enumerate(features):
            tags[row, :len(f.label)] = f.label
        batch["labels"] = torch.from_numpy(tags)
    elif label_kind == "spans":
        spans = torch.zeros(B, num_labels, T, T)  # [B,C,T,T]
        rows = np.concatenate([np.full(len(f.label), row, np.int64) for row, f in enumerate(features)])  # [ΣE]
        entities = np.concatenate([f.label for f in features]).reshape(-1, 3)  # [ΣE,3]
        index = torch.from_numpy(entities)  # [ΣE,3] (type, start token, end token)
        spans[torch.from_numpy(rows), index[:, 0], index[:, 1], index[:, 2]] = 1.0
        batch["labels"] = spans
    return batch


def count_loss_terms(labels: torch.Tensor, label_kind: str) -> int:
    """n_i of one collated batch: how many terms its head's mean loss averages over (minibert/heads.py), counted
    on the CPU labels BEFORE the forward pass, as gradient accumulation needs (minibert/training/accumulation.py).

    "class" [B]: B examples; "multi" [B,C]: B·C binary terms; "tags" [B,T]: the tokens not labelled −100;
    "spans" [B,C,T,T]: B·C (example, entity type) rows."""
    if label_kind == "tags":
        return count_predictions(labels)
    if label_kind == "spans":
        return labels.shape[0] * labels.shape[1]
    return labels.numel()
