"""What an MLM encoder expects in a document: its head's predicted words, averaged over every token masked once.

A frozen-feature read-out for bench/unlabelled_value.py's `--encoder` rows. Why this and not the mean of the
hidden states: after minutes of MLM a state at an UNMASKED position mostly holds the identity of its own token,
so mean-pooling gives a bag of embeddings that pretraining did not make better than random init's. At a [MASK]
the head has to guess from the context, and its distribution over the vocabulary is where what the encoder
learnt from the unlabelled corpus shows (docs/finetune_lab.md, "Reading the encoder through its MLM head"). The
states at the masked positions do not show it: the topical signal appears only after the head's softmax.

Each document is read in windows of `window` tokens ([CLS] w [SEP]); pass k masks the tokens at positions
p ≡ k (mod passes), so after `passes` passes every token has been masked exactly once and guessed from the
other (passes − 1) / passes of its window.

Dimension legend: D documents, W windows, T window length with [CLS] and [SEP], V vocabulary, M masked positions.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from minibert import BertForMaskedLM


@torch.no_grad()
def predicted_words(model: BertForMaskedLM, tokenizer, texts: list[str], window: int = 62, passes: int = 4,
                    batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """The mean predicted distribution over the vocabulary at the masked positions of each document.

    Args:
        model: a BertForMaskedLM (its MLM head is what is read); put in eval mode here.
        tokenizer: the encoder's tokenizer (minibert.tokenizers), for ids, [CLS]/[SEP]/[MASK] and the specials.
        texts: D documents; each is read whole, in windows of `window` tokens.
        passes: every token is masked once over this many passes (4: 25% of a window masked at a time).
    Returns:
        [D,V] float32; each row sums to 1 (all zeros for a document without a maskable token).
    """
    model.eval()
    vocab_size = model.bert.config.vocab_size
    special = torch.tensor(tokenizer.special_ids)  # never masked: [PAD] [UNK] [CLS] [SEP] [MASK]
    rows, owners = [], []  # each window's ids with [CLS]/[SEP], and the document it comes from
    for doc, text in enumerate(texts):
        ids = tokenizer.encode(text)["input_ids"][1:-1]  # the document's tokens, without [CLS]/[SEP]
        for start in range(0, max(len(ids), 1), window):
            rows.append([tokenizer.cls_id, *ids[start:start + window], tokenizer.sep_id])
            owners.append(doc)
    sums = torch.zeros(len(texts), vocab_size)  # [D,V] summed probabilities
    counts = torch.zeros(len(texts))  # [D] masked positions
    embeddings = model.bert.embeddings.word_embeddings.weight  # [V,H], the tied decoder
    for first in tqdm(range(0, len(rows), batch_size), desc="predicted words", disable=not progress, leave=False):
        batch = rows[first:first + batch_size]
        length = max(len(r) for r in batch)
        ids = torch.full((len(batch), length), tokenizer.pad_id)  # [W,T]
        for i, r in enumerate(batch):
            ids[i, :len(r)] = torch.tensor(r)
        attention = (ids != tokenizer.pad_id).long()  # [W,T]
        maskable = ~torch.isin(ids, special)  # [W,T]
        owner = torch.tensor(owners[first:first + batch_size])  # [W]
        position = torch.arange(length)  # [T]
        for k in range(passes):
            masked = maskable & (position % passes == k)  # [W,T]
            window_of, column = masked.nonzero(as_tuple=True)  # [M], [M]
            hidden = model.bert(ids.masked_fill(masked, tokenizer.mask_id), attention_mask=attention).last_hidden_state
            probs = torch.softmax(model.mlm_head(hidden[window_of, column], embeddings).float(), dim=-1)  # [M,V]
            sums.index_add_(0, owner[window_of], probs)
            counts.index_add_(0, owner[window_of], torch.ones(len(window_of)))
    return (sums / counts.clamp(min=1.0)[:, None]).numpy()  # [D,V]
