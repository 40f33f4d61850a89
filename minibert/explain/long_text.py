"""Demos of reading texts longer than the position table: head+tail 截断 truncation and 层次分解位置编码
hierarchical position embeddings. The code they exercise is finetune/features.py and minibert/positions.py."""

from __future__ import annotations

import numpy as np
import torch

from ..model import BertModel
from ..positions import DEFAULT_ALPHA, extend_positions_hierarchically, hierarchical_table
from .common import DemoContext, conclude, error_line, max_abs_diff, show, tiny_config, title


def head_tail_truncation(ctx: DemoContext) -> dict:
    from finetune.features import truncate  # the fine-tuning pipeline's own function

    title("长文本截断 head+tail truncation: keep the start AND the end of a long document")
    document = np.arange(1000)  # token positions 0..999 of a 1000-token news article
    budget = 510  # 512 positions minus [CLS] and [SEP]
    kept = {mode: truncate(document, budget, mode) for mode in ("head", "tail", "head+tail")}
    for mode, ids in kept.items():
        gap = np.nonzero(np.diff(ids) != 1)[0]
        pieces = [f"{ids[0]}..{ids[-1]}"] if not len(gap) else [f"{ids[0]}..{ids[gap[0]]}",
                                                                 f"{ids[gap[0] + 1]}..{ids[-1]}"]
        show(f"{mode:10s} keeps {len(ids)} tokens", " + ".join(pieces))
    head = int(np.nonzero(np.diff(kept["head+tail"]) != 1)[0][0]) + 1  # where the kept head ends
    conclude(f"head+tail keeps the first {head} and the last {budget - head} tokens (Sun et al. 2019 found head 128 "
             f"+ tail 382 best): news states its topic in the lead and its conclusion at the end; the middle goes")
    return {**{mode: (int(ids[0]), int(ids[-1]), len(ids)) for mode, ids in kept.items()}, "head_tokens": head}


def hierarchical_positions(ctx: DemoContext) -> dict:
    title("层次分解位置编码 hierarchical positions: P trained positions -> up to P² (Su 2020, α = 0.4)")
    torch.manual_seed(0)
    P = 16
    model = BertModel(tiny_config(max_position_embeddings=P)).eval()
    trained = model.embeddings.position_embeddings.weight.detach().clone()  # [P,H]
    long_ids = torch.randint(5, 100, (1, 40))  # [1,40] longer than P=16
    before = error_line(lambda: model(long_ids))
    short_ids = long_ids[:, :P]
    short_before = model(short_ids).last_hidden_state
    extend_positions_hierarchically(model, new_max=P * P)
    short_after = model(short_ids).last_hidden_state
    long_out = model(long_ids).last_hidden_state  # [1,40,H]
    table_new = model.embeddings.position_embeddings(torch.arange(P * P))  # [P²,H]
    formula = hierarchical_table(trained, P * P, DEFAULT_ALPHA)  # Su's u-form
    print(f"   before: 40 tokens with P={P} -> {before}")
    show("after: 40 tokens, output shape", tuple(long_out.shape))
    show(f"max |new table[:{P}] - trained table| (exact?)", max_abs_diff(table_new[:P], trained))
    show("max |short input before - after extension|", max_abs_diff(short_after, short_before))
    show("max |module - Su's formula α u[i//P] + (1-α) u[i%P]|", max_abs_diff(table_new, formula))
    i = P + 3
    offset = table_new[i] - trained[3]  # position P+3 = "digit 1, digit 3"
    show(f"pos({i}) - p[3] = α/(1-α)(p[1] - p[0])?", max_abs_diff(offset, DEFAULT_ALPHA / (1 - DEFAULT_ALPHA)
                                                                  * (trained[1] - trained[0])))
    conclude(f"positions below P={P} keep their trained vectors bit for bit (diff "
             f"{max_abs_diff(table_new[:P], trained):.0e}), so short inputs are unchanged; position i >= P reuses "
             f"p[i % P] plus an offset built from p[i // P]: a base-P 'two-digit number'. Fine-tune on long inputs "
             f"to teach the model those offsets")
    return {"before": before, "prefix_diff": max_abs_diff(table_new[:P], trained),
            "short_diff": max_abs_diff(short_after, short_before), "formula_diff": max_abs_diff(table_new, formula),
            "long_shape": tuple(long_out.shape)}
