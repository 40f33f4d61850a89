"""输入检查 Input checks: bad input is ONE clear line, never an IndexError or a CUDA device-side assert.

An out-of-range token ID is an IndexError deep inside nn.Embedding on the CPU and, on a GPU, "device-side assert
triggered" at some later, unrelated line (kernels run asynchronously). So the model checks its inputs first, with
one min/max reduction per tensor, and names the input, the value, the limit and the fix. The training loops run
the same checks on the CPU batch and switch the model's own off (each is a host sync on a GPU).

Dimension legend: B batch, T sequence length, V vocabulary size, M labelled positions.
"""

from __future__ import annotations

import torch

from .config import BertConfig

# 忽略标签 −100 ignore label: labels equal to this are not predicted (torch's cross_entropy default ignore_index)
IGNORE_INDEX = -100
ID_DTYPES = (torch.long, torch.int)  # the index dtypes nn.Embedding accepts


def check_id_range(name: str, ids: torch.Tensor, limit_name: str, limit: int, fix: str) -> None:
    """Every ID must index a row of its embedding table: [0, limit). One min/max reduction, not a loop."""
    lo, hi = torch.aminmax(ids)
    if lo < 0 or hi >= limit:
        bad = lo.item() if lo < 0 else hi.item()
        raise ValueError(f"{name} contains {bad}, outside [0, {limit_name}={limit}); {fix}")


def check_inputs(config: BertConfig, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                 attention_mask: torch.Tensor | None, max_positions: int) -> None:
    """Fail with one clear line on bad input, BEFORE it turns into an IndexError on CPU or an unreadable
    'device-side assert triggered' on CUDA. The range checks cost one min/max reduction per tensor."""
    if input_ids.dtype not in ID_DTYPES:  # float, bool, uint8, int16... nn.Embedding indexes with these only
        raise ValueError(f"input_ids has dtype {input_ids.dtype}; token IDs must be an integer tensor "
                         f"(torch.long), e.g. convert with input_ids.long()")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected [batch, seq_len], "
                         f"e.g. add a batch axis with input_ids.unsqueeze(0)")
    B, T = input_ids.shape
    if B == 0 or T == 0:  # an empty tensor has no min/max: fail here, not inside aminmax
        raise ValueError(f"input_ids has shape {(B, T)}; expected at least one sequence of at least one token")
    if T > max_positions and max_positions == config.max_position_embeddings:  # the plain [P,H] table
        raise ValueError(f"input_ids has sequence length {T} > max_position_embeddings={max_positions}; "
                         f"truncate the input (or use hierarchical positions for longer texts)")
    if T > max_positions:  # the table was extended (positions.py): its limit is not the config's
        raise ValueError(f"input_ids has sequence length {T} > {max_positions}, the limit of the hierarchical "
                         f"position table; truncate the input, or extend it further (at most "
                         f"{config.max_position_embeddings ** 2} positions)")
    check_id_range("input_ids", input_ids, "vocab_size", config.vocab_size,
                   "the tokenizer's vocab and the model config disagree: use the vocab.txt the model was trained with")
    if token_type_ids is not None:
        if token_type_ids.dtype not in ID_DTYPES or token_type_ids.shape != input_ids.shape:
            raise ValueError(f"token_type_ids has shape {tuple(token_type_ids.shape)} and dtype {token_type_ids.dtype}; "
                             f"expected an integer tensor of the input_ids shape {(B, T)}")
        check_id_range("token_type_ids", token_type_ids, "type_vocab_size", config.type_vocab_size,
                       "use 0 for segment A and 1 for segment B")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected the input_ids shape "
                         f"{(B, T)} with 1 for real tokens and 0 for padding")
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        # An ADDITIVE mask (0 keep, -10000 pad), as some code passes, would become its exact inverse under .bool()
        lo, hi = torch.aminmax(attention_mask)
        if lo < 0 or hi > 1:
            raise ValueError(f"attention_mask contains {lo.item() if lo < 0 else hi.item()}; expected 1 for real "
                             f"tokens and 0 for padding (not an additive mask of 0 and -10000)")


def check_mlm_labels(labels: torch.Tensor, vocab_size: int) -> None:
    """One clear line for an MLM label outside [0, V) (an IndexError on CPU, a device-side assert on CUDA).
    labels: [B,T] or [M]. On a GPU tensor this is a host sync: training loops call it on the CPU batch."""
    targets = labels[labels != IGNORE_INDEX]  # [M]
    if targets.numel() == 0:
        return
    check_id_range("labels", targets, "vocab_size", vocab_size,
                   f"use the original token ID at predicted positions and {IGNORE_INDEX} everywhere else")
