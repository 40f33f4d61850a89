"""条件随机场 A minimal linear-chain CRF, to answer the course's "-100 crashes my CRF" question (000 log, lines
107-152). minibert's NER heads (softmax tags, GlobalPointer) need no CRF; this one exists for the demo only.

The trap: token-classification labels use -100 on [CLS], [SEP], padding and continuation sub-tokens, because
cross_entropy skips -100. A CRF does not skip anything: it INDEXES its transition table with the tags, so -100 is
an out-of-range index ("index -100 is out of bounds for dimension 0 with size 39" with 39 tags). The fix is two
things together: map -100 to any valid tag (so indexing works) AND pass a mask (so those positions are not scored).
Mapping to 0 without a mask "runs", but trains the model to predict tag 0 on [CLS]/[SEP]/padding and to learn
transitions that never occur in real text.

Dimension legend: B batch, T sequence length, C number of tags.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model import IGNORE_INDEX
from .common import DemoContext, conclude, error_line, show, title


class LinearChainCRF(nn.Module):
    """score(y) = start[y_1] + Σ_t emission[t, y_t] + Σ_t transition[y_t, y_t+1] + end[y_T] over the positions the
    mask keeps; the loss is log Z − score(gold), Z summing exp(score) over every tag path (the forward algorithm).

    Masked positions are skipped entirely, even in the middle of a sequence (a continuation sub-token): the chain
    jumps from the previous kept position to the next one.
    """

    def __init__(self, num_tags: int):
        super().__init__()
        self.start = nn.Parameter(torch.randn(num_tags) * 0.1)  # [C]
        self.end = nn.Parameter(torch.randn(num_tags) * 0.1)  # [C]
        self.transitions = nn.Parameter(torch.randn(num_tags, num_tags) * 0.1)  # [C,C] from row tag to column tag

    def gold_score(self, emissions: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """emissions [T,C], tags [T] of ONE sequence (already masked). Indexing with a -100 tag raises here."""
        score = self.start[tags[0]] + self.end[tags[-1]]
        score = score + emissions[torch.arange(len(tags)), tags].sum()
        return score + self.transitions[tags[:-1], tags[1:]].sum()

    def log_partition(self, emissions: torch.Tensor) -> torch.Tensor:
        """log Z for emissions [T,C] of ONE sequence: alpha[c] = log-sum over paths ending in tag c."""
        alpha = self.start + emissions[0]  # [C]
        for t in range(1, emissions.shape[0]):
            alpha = torch.logsumexp(alpha[:, None] + self.transitions, dim=0) + emissions[t]  # [C]
        return torch.logsumexp(alpha + self.end, dim=0)

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood. emissions [B,T,C]; tags [B,T] valid tag IDs; mask [B,T] bool or None
        (None scores every position)."""
        mask = torch.ones_like(tags, dtype=torch.bool) if mask is None else mask.bool()
        losses = []
        for e, y, m in zip(emissions, tags, mask):  # one sequence at a time: slow, but easy to check by hand
            losses.append(self.log_partition(e[m]) - self.gold_score(e[m], y[m]))
        return torch.stack(losses).mean()


def crf_mask(ctx: DemoContext) -> dict:
    title("CRF 与 -100: map -100 to a valid tag AND pass a mask; '-100 -> 0' alone trains on [CLS]/[SEP]/[PAD]")
    torch.manual_seed(0)
    num_tags = 39  # the course's tag set: the error message below then matches the log word for word
    crf = LinearChainCRF(num_tags)
    emissions = torch.randn(2, 8, num_tags)  # [B,T,C] what the encoder + a linear layer would give
    # [CLS] w1 w2 ##w2 w3 [SEP] [PAD] [PAD] ; -100 on specials, padding and the continuation piece
    tags = torch.tensor([[IGNORE_INDEX, 3, 4, IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
                         [IGNORE_INDEX, 1, 2, 2, 0, 0, IGNORE_INDEX, IGNORE_INDEX]])
    raw = error_line(lambda: crf(emissions, tags))
    show("CRF fed the -100 labels directly", raw)
    mask = tags != IGNORE_INDEX  # [B,T]
    valid = tags.masked_fill(~mask, 0)  # any valid tag: the mask keeps these positions out of the score
    with torch.no_grad():
        masked = crf(emissions, valid, mask).item()
        reference = torch.stack([crf(emissions[i:i + 1, mask[i]], tags[i:i + 1, mask[i]]) for i in range(2)]).mean()
        zero_no_mask = crf(emissions, valid).item()
    show("-100 -> 0 AND mask: loss", masked)
    show("the same sequences with those positions cut out", reference.item())
    show("-100 -> 0, no mask: loss", zero_no_mask)
    show("positions scored with / without the mask", f"{int(mask.sum())} / {mask.numel()}")
    conclude("a CRF indexes its transition table with the tags, so -100 is an out-of-range index; replace it with a "
             "valid tag AND mask those positions. Without the mask the run does not crash, but every [CLS], [SEP], "
             "[PAD] and ## piece is trained as tag 0 and the transitions learn boundaries that real text never has")
    return {"raw": raw, "masked": masked, "reference": reference.item(), "zero_no_mask": zero_no_mask,
            "scored": int(mask.sum()), "total": mask.numel()}
