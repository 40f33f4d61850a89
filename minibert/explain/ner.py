"""Demo of 全局指针 GlobalPointer for 命名实体识别 NER, with 旋转位置编码 RoPE inside.
The code it exercises is minibert/globalpointer.py."""

from __future__ import annotations

import math

import torch

from ..globalpointer import MASKED_SCORE, GlobalPointer, multilabel_categorical_crossentropy, rotary_position_embedding
from .common import DemoContext, conclude, show, title


def global_pointer(ctx: DemoContext) -> dict:
    title("全局指针 GlobalPointer: score every span (start i, end j) per entity type, RoPE inside")
    torch.manual_seed(0)
    D = 8
    q, k = torch.randn(1, 1, D), torch.randn(1, 1, D)  # [1,1,D] one query and one key vector
    # RoPE makes the score depend only on the OFFSET j - i: place the same q, k at (2, 5) and at (10, 13).
    def score(i: int, j: int, length: int = 16) -> float:
        queries = torch.zeros(1, length, D)  # [1,T,D]: q at position i, zeros elsewhere
        keys = torch.zeros(1, length, D)  # [1,T,D]: k at position j
        queries[0, i], keys[0, j] = q[0, 0], k[0, 0]
        return (rotary_position_embedding(queries)[0, i] @ rotary_position_embedding(keys)[0, j]).item()

    s_25, s_1013, s_27 = score(2, 5), score(10, 13), score(2, 7)
    show("s(2,5) / s(10,13): same offset 3", f"{s_25:.5f} / {s_1013:.5f}")
    show("s(2,7): offset 5", f"{s_27:.5f}")
    show("without RoPE every pair scores q·k", f"{(q[0, 0] @ k[0, 0]).item():.5f}")
    T, C = 6, 2  # six tokens, two entity types
    head = GlobalPointer(hidden_size=16, num_types=C, head_size=D)
    hidden = torch.randn(1, T, 16)  # [B,T,H] stand-in for the encoder output
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])  # the last token is padding
    scores = head(hidden, mask)  # [B,C,T,T]
    masked = scores[0, 0] <= MASKED_SCORE / 2  # [T,T]
    print("   type-0 span table (x = masked: end < start, or touching padding; . = a real candidate):")
    for i in range(T):
        print("      start", i, " ".join("x" if masked[i, j] else "." for j in range(T)))
    candidates = int((~masked).sum())
    show("candidate spans for 5 real tokens (5·6/2)", candidates)
    labels = torch.zeros(1, C, T, T)
    labels[0, 0, 1, 2] = 1  # one type-0 entity spanning tokens 1..2
    loss = GlobalPointer.loss(scores, labels)
    # Su's loss = log(1 + Σ_neg e^s) + log(1 + Σ_pos e^-s): check it by hand for type 0.
    s0 = scores[0, 0][~masked]  # [candidates]
    positive = labels[0, 0][~masked].bool()
    by_hand_0 = math.log(1 + s0[~positive].exp().sum().item()) + math.log(1 + (-s0[positive]).exp().sum().item())
    by_hand_1 = math.log(1 + scores[0, 1][~masked].exp().sum().item())  # type 1 has no entity
    show("loss / by hand (mean over the 2 types)", f"{loss.item():.5f} / {(by_hand_0 + by_hand_1) / 2:.5f}")
    predicted = (scores[0] > 0).nonzero().tolist()  # spans with a positive score are the prediction
    show("untrained prediction (type, start, end) with s > 0", predicted[:4] + (["..."] if len(predicted) > 4 else []))
    conclude(f"a span is one cell s_c(i,j) of a [C,T,T] table: only the upper triangle over real tokens is scored "
             f"({candidates} candidates), decoding is 's > 0', and RoPE makes s(2,5) = s(10,13) "
             f"({abs(s_25 - s_1013):.0e} apart): the score sees the span length, not just the two tokens")
    single = multilabel_categorical_crossentropy(s0[None], positive[None].float())[0].item()
    return {"same_offset_diff": abs(s_25 - s_1013), "other_offset_diff": abs(s_25 - s_27),
            "candidates": candidates, "loss": loss.item(), "by_hand": (by_hand_0 + by_hand_1) / 2,
            "type0_loss": single, "type0_by_hand": by_hand_0}
