"""层次分解位置编码 Hierarchical position embeddings: let a BERT with P learned positions read up to P² tokens.

BERT's position table has P rows (512, or 256 for the Datawhale BERT-mini), so token P+1 has no embedding.
Su Jianlin (苏剑林, 2020, "层次分解位置编码，让BERT可以处理超长文本", kexue.fm/archives/7947) reuses the trained
table instead of learning new rows. Write position i as the pair (i // P, i % P), like a two-digit number in base
P, and build its embedding from two "digit" vectors u:

    u_k    = (p_k − α p_0) / (1 − α)                      for k = 0 .. P−1   (p = the trained table)
    pos(i) = α u[i // P] + (1 − α) u[i % P]                for i = 0 .. P²−1

with α = 0.4 (Su's choice; the course notes name the method, not α). Substituting u gives the equivalent form
used in the code:

    pos(i) = p[i % P] + α / (1 − α) · (p[i // P] − p[0])

For i < P, i // P = 0 and the correction is (p[0] − p[0]) = 0 EXACTLY, also in floating point, so every position
the model was trained on keeps its original embedding bit for bit: the extension changes nothing for short inputs.
Positions ≥ P repeat the familiar "ones digit" p[i % P], shifted by a "tens digit" offset, so position 513 looks
like position 1 in block 1; fine-tuning on long inputs then teaches the model the block offsets.

The table is computed on the fly from the ORIGINAL P×H parameter, so gradients keep training the shared rows and
the state dict keeps its shape (`embeddings.position_embeddings.weight` [P,H]): a checkpoint saved after the
extension loads into a plain model; call `extend_positions_hierarchically` again to read long inputs.

Dimension legend: T sequence length, P original number of positions, H hidden size.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_ALPHA = 0.4  # Su (2020)'s choice


class HierarchicalPositionEmbedding(nn.Module):
    """A drop-in replacement for `nn.Embedding(P, H)` that answers positions 0 .. new_max−1 (new_max ≤ P²).

    Args:
        weight: the trained [P,H] position table; it stays a trainable parameter.
        new_max: the new number of positions (the limit `check_inputs` enforces).
        alpha: the mixing weight α in (0, 1), not 0.5; 0.4 as in Su (2020).
    """

    def __init__(self, weight: torch.Tensor, new_max: int, alpha: float = DEFAULT_ALPHA):
        super().__init__()
        original = weight.shape[0]  # P
        if not 0.0 < alpha < 1.0 or alpha == 0.5:
            # α = 0.5 weighs both digits alike: pos(i) = p[i%P] + p[i//P] − p[0] is symmetric in the two digits, so
            # position (1, 3) = (3, 1) and the extended positions are no longer distinct
            raise ValueError(f"hierarchical positions: alpha={alpha} must be in (0, 1) and not 0.5 (the two digits "
                             f"would be interchangeable); Su (2020) uses 0.4")
        if not original <= new_max <= original * original:
            raise ValueError(f"hierarchical positions: new_max={new_max} must be in [{original}, {original ** 2}] "
                             f"(P={original} trained positions reach at most P²); pick a smaller --max-length")
        self.weight = nn.Parameter(weight.detach().clone())  # [P,H], same name as nn.Embedding's
        self.alpha = alpha
        self.original_positions = original  # P
        self.num_embeddings = new_max  # the core's BertEmbeddings.max_positions reads this

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions: [T] long in [0, new_max). Returns [T,H]."""
        P = self.original_positions
        ones_digit = self.weight[positions % P]  # [T,H] p[i % P]
        tens_digit = self.weight[positions // P]  # [T,H] p[i // P]
        # pos(i) = p[i % P] + α/(1−α) (p[i // P] − p[0]); the difference is exactly 0 for i < P.
        return ones_digit + self.alpha / (1.0 - self.alpha) * (tens_digit - self.weight[0])  # [T,H]

    def extra_repr(self) -> str:
        return f"{self.original_positions} trained -> {self.num_embeddings} positions, alpha={self.alpha}"


def hierarchical_table(weight: torch.Tensor, new_max: int, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """Su's formula written with u, as a reference: [new_max,H] from the [P,H] table.
    Tests check that the module above equals it (and equals `weight` itself below P)."""
    P = weight.shape[0]
    u = (weight - alpha * weight[0]) / (1.0 - alpha)  # [P,H]
    i = torch.arange(new_max)  # [new_max]
    return alpha * u[i // P] + (1.0 - alpha) * u[i % P]  # [new_max,H]


def extend_positions_hierarchically(model: nn.Module, new_max: int, alpha: float = DEFAULT_ALPHA) -> nn.Module:
    """Swap the position table of a loaded model (BertModel, or any model with a `.bert`) in place.

    Call it AFTER loading pretrained weights: it reuses whatever table is there. The input-length limit that
    `check_inputs` enforces follows `embeddings.max_positions`, which becomes `new_max`.
    Returns the model, for chaining.
    """
    bert = model.bert if hasattr(model, "bert") else model
    embeddings = bert.embeddings
    # Both nn.Embedding and an earlier HierarchicalPositionEmbedding keep the trained [P,H] table in `.weight`.
    trained = embeddings.position_embeddings.weight  # [P,H]
    if new_max <= trained.shape[0]:
        return model  # the trained table already covers every position asked for
    embeddings.position_embeddings = HierarchicalPositionEmbedding(trained, new_max, alpha)
    return model
