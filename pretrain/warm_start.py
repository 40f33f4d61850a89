"""Initialisation tricks that shorten the MLM "unigram plateau" (docs/pretrain.md). Architecture unchanged.

A freshly initialised BERT first learns the unigram distribution (predict "，" everywhere), then sits there: to
use context, attention must learn to look at the NEIGHBOURS, and with random position embeddings no query/key
pair can tell "next to me" from "far away" yet. Both tricks below only set initial values of existing
parameters, so the model stays a post-LN BERT that Google/HF tools load.

Dimension legend: V vocab, P max_position_embeddings, H hidden size.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from minibert import BertConfig, BertForMaskedLM

LOCAL_ATTENTION_OFFSETS = (-1, 1, -2, 2)  # layer 0's heads start on these neighbours (init_local_attention)


def sinusoidal_table(num_positions: int, hidden_size: int) -> torch.Tensor:
    """The fixed position code of Vaswani et al. 2017: sin/cos pairs at geometric frequencies. [P,H]

    Its dot product PE(i)·PE(j) depends only on i - j, so one linear map (W_Q W_Kᵀ) can make attention peak at
    "one to the left" for every position: relative-position attention is there from step 0.
    """
    positions = torch.arange(num_positions, dtype=torch.float64)[:, None]  # [P,1]
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(0, hidden_size, 2, dtype=torch.float64)
                            / hidden_size)  # [H/2]
    table = torch.zeros(num_positions, hidden_size, dtype=torch.float64)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies[: hidden_size // 2])
    return table.float()  # [P,H], entries in [-1, 1], RMS 1/sqrt(2)


@torch.no_grad()
def init_sinusoidal_positions(model: BertForMaskedLM, scale: float) -> None:
    """Overwrite the (still learned) position embeddings with the sinusoidal table, RMS `scale` per entry."""
    weight = model.bert.embeddings.position_embeddings.weight  # [P,H]
    weight.copy_(sinusoidal_table(*weight.shape) * (scale * math.sqrt(2.0)))


@torch.no_grad()
def init_decoder_bias_unigram(model: BertForMaskedLM, token_counts: np.ndarray) -> None:
    """MLM decoder bias = log unigram frequencies (add-one smoothed): the model starts AT the plateau
    (predicting the frequency distribution) instead of at ln V, and its first steps need not learn it."""
    counts = torch.as_tensor(token_counts, dtype=torch.float64) + 1.0  # [V]
    log_frequencies = torch.log(counts / counts.sum())
    model.mlm_head.bias.copy_(log_frequencies - log_frequencies.mean())


def train_token_counts(corpus, train_docs) -> np.ndarray:
    """Occurrences of each vocab id in the training documents only (the held-out ones stay unseen). [V]"""
    counts = np.zeros(corpus.tokenizer.vocab_size, np.int64)
    for doc in train_docs:
        counts += np.bincount(corpus.tokens[corpus.offsets[doc]:corpus.offsets[doc + 1]],
                              minlength=len(counts))
    return counts


@torch.no_grad()
def init_local_attention(model: BertForMaskedLM, offsets: tuple[int, ...], gain: float) -> None:
    """Point head h of layer 0 at the token `offsets[h]` places away (-1 = left neighbour), from step 0.

    Needs sinusoidal position embeddings. For one sin/cos pair of frequency ω, PE(i + o) = R(oω) PE(i) with R a
    2×2 rotation, so with the key = the pair itself and the query = the pair rotated by oω, the score q_i·k_j =
    Σ_ω cos((i + o - j) ω) peaks exactly at j = i + o, at every position. Each head uses the D/2 highest-frequency
    pairs (the sharpest peaks); `gain` scales both maps and so the sharpness (the LayerNorm divides the sum of the
    three embeddings by its RMS first). Only the Q and K weights of those heads change: the values, the other
    heads and layers stay random, and all of it stays trainable.
    """
    attention = model.bert.encoder.layers[0].attention
    hidden = attention.qkv.in_features
    heads, head_size = attention.num_heads, attention.head_size
    if len(offsets) > heads:
        raise ValueError(f"local attention offsets {offsets}: layer 0 has only {heads} heads")
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(0, head_size, 2, dtype=torch.float64) / hidden)
    weight = attention.qkv.weight  # [3H,H]: the Q rows, then K, then V; head h owns rows h·D..(h+1)·D of each
    for head, offset in enumerate(offsets):
        query, key = torch.zeros(head_size, hidden, dtype=torch.float64), torch.zeros(head_size, hidden,
                                                                                      dtype=torch.float64)
        angle = offset * frequencies  # [D/2]
        pair = torch.arange(0, head_size, 2)
        key[pair, pair] = key[pair + 1, pair + 1] = gain
        # q = R(oω)·(sin, cos): first row (cos oω, sin oω), second row (-sin oω, cos oω)
        query[pair, pair], query[pair, pair + 1] = gain * torch.cos(angle), gain * torch.sin(angle)
        query[pair + 1, pair], query[pair + 1, pair + 1] = -gain * torch.sin(angle), gain * torch.cos(angle)
        rows = slice(head * head_size, (head + 1) * head_size)
        weight[rows] = query.float()
        weight[hidden:][rows] = key.float()


def warm_started_model(config: BertConfig, cfg, token_counts: np.ndarray) -> BertForMaskedLM:
    """A fresh BertForMaskedLM(config) with the init tricks PretrainConfig `cfg` asks for: sinusoidal positions,
    layer-0 heads pointed at their neighbours, the decoder bias at log unigram frequencies."""
    model = BertForMaskedLM(config)
    if cfg.position_init == "sinusoidal":
        init_sinusoidal_positions(model, cfg.position_init_scale)
    if cfg.local_attention_gain:
        init_local_attention(model, LOCAL_ATTENTION_OFFSETS[:config.num_attention_heads], cfg.local_attention_gain)
    if cfg.decoder_bias_init == "unigram":
        init_decoder_bias_unigram(model, token_counts)
    return model
