"""Demo of 混合精度 mixed precision's classic attention trap: mask constants that overflow in fp16.

fp16 holds finite values only up to ±65504. An attention mask has to push padded keys' scores "to minus
infinity" without producing an actual -inf: a row whose every entry is -inf has softmax 0/0 = NaN, and one NaN
spreads to the whole batch in the next matmul. The code it exercises is layers.MultiHeadSelfAttention."""

from __future__ import annotations

import torch

from ..model import BertModel
from .common import DemoContext, conclude, error_line, show, table, tiny_config, title

FP16 = torch.float16


def _softmax_rows(scores: torch.Tensor, keep: torch.Tensor, method: str) -> torch.Tensor:
    """Mask scores [R,T] (fp16) where keep [R,T] is False, the way `method` does, then softmax over T."""
    dropped = (~keep).to(FP16)  # [R,T] 1.0 where masked
    fmin = torch.finfo(FP16).min
    if method == "additive -10000":  # google-research/bert, early HF: (1 - mask) * -10000.0
        return (scores + dropped * -10000.0).softmax(-1)
    if method == "additive -1e9":  # many tutorials; in fp16 the product -1e9 rounds to -inf
        return (scores + dropped * -1e9).softmax(-1)
    if method == "additive finfo.min, two masks":  # padding mask + another mask (causal, etc.), both finfo.min
        return (scores + dropped * fmin + dropped * fmin).softmax(-1)
    if method == "masked_fill -inf":
        return scores.masked_fill(~keep, float("-inf")).softmax(-1)
    if method == "masked_fill finfo.min (minibert)":  # REPLACE, never add: nothing can overflow
        return scores.masked_fill(~keep, fmin).softmax(-1)
    raise ValueError(method)


def fp16_mask(ctx: DemoContext) -> dict:
    title("混合精度 fp16 attention masks: which 'minus infinity' survives fp16 (max 65504)")
    show("-10000 stored in fp16", torch.tensor(-1e4).to(FP16).item())
    show("-1e9 stored in fp16", torch.tensor(-1e9).to(FP16).item())
    show("finfo(fp16).min + finfo(fp16).min", (torch.tensor(torch.finfo(FP16).min, dtype=FP16) * 2).item())
    fill = error_line(lambda: torch.zeros(2, dtype=FP16).masked_fill(torch.tensor([True, False]), -1e9))
    print(f"   scores_fp16.masked_fill(mask, -1e9) -> {fill}")
    scores = torch.tensor([[2.0, -3.0, 1.0, 0.5], [2.0, -3.0, 1.0, 0.5]], dtype=FP16)  # [R,T] two query rows
    keep = torch.tensor([[True, True, False, False],  # a normal row: two padded keys
                         [False, False, False, False]])  # a row with NO visible key (an all-padding sequence)
    rows, outcome = [], {}
    for method in ("additive -10000", "additive -1e9", "additive finfo.min, two masks", "masked_fill -inf",
                   "masked_fill finfo.min (minibert)"):
        probs = _softmax_rows(scores, keep, method)  # [R,T]
        normal_nan = bool(probs[0].isnan().any())
        leak = probs[0, 2:].float().sum().item()
        empty_nan = bool(probs[1].isnan().any())
        outcome[method] = {"normal_row_nan": normal_nan, "leak": leak, "empty_row_nan": empty_nan}
        rows.append((method, "all NaN" if normal_nan else f"ok, padded weight {leak:.0f}",
                     "all NaN" if empty_nan else "finite"))
    table(rows, ("fp16 mask method", "normal row (2 padded keys)", "row with no visible key"))
    print("   (with -1e9 the masked slots hold -inf; had the constant been cast to fp16 BEFORE the multiply,")
    print("   the unmasked slots would compute 0 x -inf = NaN and break every row)")
    torch.manual_seed(0)
    model = BertModel(tiny_config()).eval().to(FP16)
    ids = torch.randint(5, 100, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]])  # second sequence is all padding
    fast = model(ids, attention_mask=mask).last_hidden_state
    reference = model(ids, attention_mask=mask, output_attentions=True).last_hidden_state
    finite = bool(torch.isfinite(fast).all() and torch.isfinite(reference).all())
    show("minibert in fp16, all-padding row, both paths finite", finite)
    conclude("-10000 fits fp16 and works; -1e9 becomes -inf (masked_fill refuses it outright) "
             "and finfo.min added twice overflows to -inf, so a row with no visible key is NaN. minibert REPLACES masked scores with "
             "finfo(dtype).min: no overflow, no NaN in any dtype")
    return {"outcome": outcome, "minibert_finite": finite, "masked_fill_1e9": fill}
