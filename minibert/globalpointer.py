"""全局指针 GlobalPointer: 命名实体识别 NER as scoring every span (start, end) directly, with RoPE inside.

A BIO tagger (heads.BertForTokenClassification) labels tokens and must stitch spans back together; nested or
adjacent entities of one type break it. GlobalPointer (Su Jianlin 苏剑林, 2021, kexue.fm/archives/8373) instead
gives every entity type c a score s_c(i, j) for the span that starts at token i and ends at token j, and predicts
every span with s_c(i, j) > 0. This file implements the *Efficient* GlobalPointer (Su 2022,
kexue.fm/archives/8877), which shares one query/key projection across types:

    [q_i; k_i] = W h_i                                   (W: [2D, H], shared by all C types)
    s_c(i, j)  = (R_i q_i)·(R_j k_j) / √D                 "is (i, j) an entity at all?"  (shared)
               + a_c·[q_i; k_i] + b_c·[q_j; k_j]          "does it start / end like a type-c entity?" (per type)

R_i is a 旋转位置编码 rotary position embedding (RoPE, Su et al. 2021, "RoFormer"): it rotates pairs of coordinates by angles
proportional to the position, so (R_i q)·(R_j k) = q·R_{j−i} k depends on the OFFSET j − i only. Without it the
span score would know the distance between start and end only through whatever position information survived in
h; with it, "an entity is usually 2-4 tokens long" is easy to learn. Spans with j < i (the lower triangle) and
spans touching padding are masked out (Su's code: 排除下三角 `add_mask_tril` and `sequence_masking`).

The loss is the 多标签分类交叉熵 multilabel categorical cross-entropy (Su 2020, kexue.fm/archives/7359), which handles the
extreme imbalance (a handful of positive spans among T² candidates) without class weights:

    loss_c = log(1 + Σ_{negative spans} e^{s}) + log(1 + Σ_{positive spans} e^{−s})

Dimension legend: B batch, T sequence length, H hidden size, C entity types, D GlobalPointer head size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Masked spans get this score. Scores are computed in fp32 (see GlobalPointer.forward), where -1e12 is safely
# finite and exp(-1e12) = 0; in fp16 it would overflow to -inf (fp16's largest value is 65504).
MASKED_SCORE = -1e12


def rotary_position_embedding(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE: rotate each coordinate pair (x[2m], x[2m+1]) of position t by the angle t · base^(−2m/D).

    Args:
        x: [B,T,D] queries or keys, D even.
    Returns:
        [B,T,D], the rotated vectors. Rotations preserve length, and dot products of two rotated vectors depend
        only on the difference of their positions.
    """
    T, D = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)  # [D/2]
    angles = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # [T,D/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)  # [T,D/2] each
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # [B,T,D/2] each
    rotated = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)  # [B,T,D/2,2]
    return rotated.flatten(-2)  # [B,T,D], pairs interleaved back in place


def multilabel_categorical_crossentropy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Su's multilabel categorical cross-entropy, one value per row.

    Args:
        scores: [R,K] real scores (masked candidates already at MASKED_SCORE).
        targets: [R,K] 0/1, the positive candidates of each row.
    Returns:
        [R] loss per row: log(1 + Σ_neg e^{s}) + log(1 + Σ_pos e^{−s}).
    """
    targets = targets.to(scores.dtype)
    signed = (1.0 - 2.0 * targets) * scores  # [R,K]: s for negatives, −s for positives
    negatives = signed - targets * 1e12  # [R,K] positives pushed out of the first sum
    positives = signed - (1.0 - targets) * 1e12  # [R,K] negatives pushed out of the second sum
    zero = torch.zeros_like(scores[:, :1])  # [R,1] the "1 +" inside each log, as e^0
    negative_loss = torch.logsumexp(torch.cat([negatives, zero], dim=-1), dim=-1)  # [R]
    positive_loss = torch.logsumexp(torch.cat([positives, zero], dim=-1), dim=-1)  # [R]
    return negative_loss + positive_loss  # [R]


def valid_spans(T: int, attention_mask: torch.Tensor | None, device: torch.device | str) -> torch.Tensor:
    """The spans that can be entities: [1,T,T] (no padding) or [B,T,T] bool, True where end j >= start i and both
    ends are real tokens. Everything else is masked in the scores, and must not be labelled (check_span_labels)."""
    valid = torch.ones(T, T, dtype=torch.bool, device=device).triu()[None]  # [1,T,T] j >= i: upper triangle
    if attention_mask is not None:
        real = attention_mask.bool()  # [B,T]
        valid = valid & real[:, :, None] & real[:, None, :]  # [B,T,T] both ends on real tokens
    return valid


def check_span_labels(labels: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    """One clear line for a span label the loss cannot learn from. labels: [B,C,T,T] 0/1.

    A positive on a masked span (end < start, or an end on padding) sits on the score MASKED_SCORE = -1e12: its
    term e^{1e12} swamps its row's loss, and the row's real entities get no gradient at all. Silent, so refused."""
    B, C, T, _ = labels.shape
    lo, hi = torch.aminmax(labels)
    if lo < 0 or hi > 1:
        raise ValueError(f"GlobalPointer labels contain {lo.item() if lo < 0 else hi.item()}; they must be 0/1 "
                         f"(1 where span (start, end) is an entity of that type)")
    misplaced = (labels > 0) & ~valid_spans(T, attention_mask, labels.device)[:, None]  # [B,C,T,T]
    if misplaced.any():
        b, c, start, end = (int(i) for i in misplaced.nonzero()[0])
        where = "end < start" if end < start else "an end on padding"
        raise ValueError(f"GlobalPointer labels mark span (start {start}, end {end}) of type {c} in example {b}, "
                         f"which has {where}; label spans with start <= end on real tokens only (end inclusive)")


class GlobalPointer(nn.Module):
    """Efficient GlobalPointer span scorer.

    Args:
        hidden_size: H of the encoder.
        num_types: C entity types.
        head_size: D, the width of the shared span query/key (64 in Su's code).
    """

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64):
        super().__init__()
        if head_size % 2:
            raise ValueError(f"GlobalPointer head_size={head_size}: RoPE rotates pairs, so it must be even")
        self.num_types = num_types  # C
        self.head_size = head_size  # D
        self.query_key = nn.Linear(hidden_size, 2 * head_size)  # [2D,H] shared span projection W
        # [2C,2D] per-type start (a_c) / end (b_c), read from [q;k] as in Su's code; the course's 001 reproduction
        # reads them from h ([2C,H]) instead: both train, this one is the published Efficient GlobalPointer
        self.type_scores = nn.Linear(2 * head_size, 2 * num_types)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            hidden: [B,T,H] encoder output.
            attention_mask: [B,T] 1 for real tokens, 0 for padding (None: no padding).
        Returns:
            [B,C,T,T] fp32 span scores; masked spans (end < start, or touching padding) hold MASKED_SCORE.
        """
        B, T, _ = hidden.shape
        projected = self.query_key(hidden)  # [B,T,2D], bf16/fp16 under autocast
        # The span scores are compared with 0 and masked with MASKED_SCORE, so they are computed in fp32 even under
        # mixed precision: autocast would run the matmuls below in bf16 (~3 significant digits) even on fp32 inputs.
        with torch.autocast(hidden.device.type, enabled=False):
            projected = projected.to(self.type_scores.weight.dtype)  # [B,T,2D] the weights' dtype: fp32 under autocast
            query, key = projected.chunk(2, dim=-1)  # [B,T,D] each
            query, key = rotary_position_embedding(query), rotary_position_embedding(key)  # [B,T,D]
            shared = query @ key.transpose(1, 2) / math.sqrt(self.head_size)  # [B,T,T] s(i,j) for all types
            start, end = self.type_scores(projected).chunk(2, dim=-1)  # [B,T,C] each
        scores = (shared[:, None]  # [B,1,T,T]
                  + start.transpose(1, 2)[:, :, :, None]  # [B,C,T,1]: depends on the start i
                  + end.transpose(1, 2)[:, :, None, :])  # [B,C,1,T]: depends on the end j
        valid = valid_spans(T, attention_mask, hidden.device)  # [1 or B,T,T]
        return scores.masked_fill(~valid[:, None], MASKED_SCORE)  # [B,C,T,T]

    @staticmethod
    def loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over the B·C (example, type) rows of the multilabel CE. scores, labels: [B,C,T,T]."""
        B, C = scores.shape[:2]
        return multilabel_categorical_crossentropy(scores.reshape(B * C, -1), labels.reshape(B * C, -1)).mean()
