"""Demo of 掩码语言模型 MLM masking: 15% of the real tokens, replaced 80/10/10 by [MASK] / random / unchanged.
The code it exercises is pretrain/masking.py (DynamicMasking)."""

from __future__ import annotations

import torch

from .common import DemoContext, conclude, show, title

SPECIALS = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}  # a built whitespace vocab's layout


def _corpus(num_rows: int, seq_len: int, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """[CLS] real tokens [SEP] [PAD]...: rows of random length with padding at the end, like a batch."""
    ids = torch.randint(5, vocab_size, (num_rows, seq_len), generator=generator)  # [B,T]
    lengths = torch.randint(4, seq_len - 1, (num_rows,), generator=generator)  # [B] real tokens per row
    positions = torch.arange(seq_len)[None]  # [1,T]
    ids[:, 0] = SPECIALS["[CLS]"]
    ids = torch.where(positions == lengths[:, None] + 1, torch.full_like(ids, SPECIALS["[SEP]"]), ids)
    return torch.where(positions > lengths[:, None] + 1, torch.full_like(ids, SPECIALS["[PAD]"]), ids)


def mlm_masking(ctx: DemoContext) -> dict:
    from pretrain.masking import DynamicMasking  # the pretraining pipeline's own masking

    title("掩码语言模型 MLM masking: choose 15% of real tokens; 80% [MASK], 10% random, 10% unchanged")
    vocab_size = 100
    masking = DynamicMasking(vocab_size, special_token_ids=list(SPECIALS.values()), mask_token_id=SPECIALS["[MASK]"])
    generator = torch.Generator().manual_seed(0)
    ids = _corpus(4000, 64, vocab_size, generator)  # [B,T]
    masked, labels = masking(ids, generator)  # [B,T] each
    example = ids[0, :12].tolist(), masked[0, :12].tolist(), labels[0, :12].tolist()
    print("   row 0 input :", example[0])
    print("   row 0 masked:", example[1])
    print("   row 0 labels:", example[2], "(-100 = not predicted)")
    is_special = torch.zeros(vocab_size, dtype=torch.bool)
    is_special[list(SPECIALS.values())] = True
    special_pos = is_special[ids]  # [B,T]
    selected = labels != -100  # [B,T]
    n = int(selected.sum())
    to_mask = selected & (masked == SPECIALS["[MASK]"])
    unchanged = selected & (masked == ids)
    to_random = selected & ~to_mask & ~unchanged  # a random draw may equal the original: counted as unchanged
    random_ids = masked[to_random]
    rate = n / int((~special_pos).sum())
    stats = {"rate": rate, "mask": int(to_mask.sum()) / n, "random": int(to_random.sum()) / n,
             "unchanged": int(unchanged.sum()) / n, "special_selected": int((selected & special_pos).sum()),
             "special_random": int(is_special[random_ids].sum()), "rows_without": int((~selected.any(1)).sum())}
    show("selected / real tokens", f"{rate:.4f}")
    show("[MASK] / random / unchanged among selected",
         f"{stats['mask']:.3f} / {stats['random']:.3f} / {stats['unchanged']:.3f}")
    show("specials ever selected", stats["special_selected"])
    show("random replacements that are specials", stats["special_random"])
    show("rows with no prediction", stats["rows_without"])
    naive = torch.randint(vocab_size, (100_000,), generator=generator)  # random replacement over the WHOLE vocab
    stats["naive_special_share"] = is_special[naive].float().mean().item()
    show("naive torch.randint(V): share of specials drawn", f"{stats['naive_special_share']:.3f}")
    conclude(f"{rate:.1%} of real tokens are predicted, split {stats['mask']:.0%}/{stats['random']:.0%}/"
             f"{stats['unchanged']:.0%}; [CLS]/[SEP]/[PAD] are never chosen and never drawn as random tokens (a "
             f"naive randint(V) draws them {stats['naive_special_share']:.0%} of the time). The random/unchanged "
             f"20% stop the model from trusting that every non-[MASK] token is correct (Devlin et al. 2019, §3.1)")
    return stats
