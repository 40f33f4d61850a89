"""Demo 完形填空 fill-mask: what did pretraining teach the model? Its top guesses at masked positions of held-out
text, next to the bidirectional-bigram guess (pretrain/baselines.py) that counting two neighbours gives.

It reads a model folder written by `python -m pretrain` (default runs/pretrain/final; --checkpoint FOLDER for
another), which holds, besides the weights and vocab.txt:
    heldout_examples.txt  a few held-out rows (tokens the model never trained on), one row a line
    bigram_counts.npz     the training bigram counts, for the bigram guess
    words.tsv             optional: `id<TAB>word` lines mapping the corpus's anonymised ids to readable words
                          (the embedded corpus's generator writes one; pretraining copies it here)

Dimension legend: T tokens in a row, V vocab, K top-k.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .common import DemoContext, conclude, show, title

DEFAULT_FOLDER = Path("runs") / "pretrain" / "final"
TOP_K = 3
MASK_EVERY = 7  # mask every 7th token (~15%, BERT's rate), from a seeded offset: the same positions every run


def _read_words(folder: Path) -> dict[str, str]:
    path = folder / "words.tsv"
    if not path.is_file():
        return {}
    pairs = (line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line)
    return {token: word for token, word in pairs}


def fill_mask(ctx: DemoContext) -> dict:
    from minibert import BertForMaskedLM
    from minibert.checkpoint import from_pretrained
    from minibert.tokenizers import WhitespaceTokenizer
    from pretrain.baselines import BigramCounts

    folder = Path(ctx.checkpoint or DEFAULT_FOLDER)
    needed = [folder / name for name in ("config.json", "vocab.txt", "heldout_examples.txt", "bigram_counts.npz")]
    missing = [path.name for path in needed if not path.is_file()]
    if missing and ctx.checkpoint is None:  # `explain all` before any pretraining run: say so, don't fail
        title("完形填空 fill-mask")
        conclude(f"no pretrained model at {folder} yet: run `make pretrain` (it writes it), then this demo again")
        return {"positions": 0}
    if missing:
        raise ValueError(f"fill_mask: {folder} lacks {', '.join(missing)}; run `make pretrain` first (it writes "
                         f"runs/pretrain/final) or pass --checkpoint <the final/ folder of a pretraining run>")
    title(f"完形填空 fill-mask: {folder}, top-{TOP_K} guesses vs the bidirectional bigram")
    model = from_pretrained(BertForMaskedLM, folder).eval()
    tokenizer = WhitespaceTokenizer.from_file(folder / "vocab.txt")
    counts = BigramCounts.load(folder / "bigram_counts.npz")
    words = _read_words(folder)
    name = (lambda i: words.get(tokenizer.tokens[i], tokenizer.tokens[i]))  # readable word, else the raw id
    ids = {token: index for index, token in enumerate(tokenizer.tokens)}
    show("readable words", f"words.tsv, {len(words):,} entries" if words else "none (no words.tsv): raw ids")
    model_right = bigram_right = total = 0
    for row_number, line in enumerate((folder / "heldout_examples.txt").read_text(encoding="utf-8").splitlines()):
        tokens = [ids.get(token, tokenizer.unk_id) for token in line.split()]
        row = torch.tensor([[tokenizer.cls_id, *tokens, tokenizer.sep_id]])                      # [1,T]
        masked_at = torch.arange(1 + row_number % MASK_EVERY, row.shape[1] - 1, MASK_EVERY)      # positions
        inputs = row.clone()
        inputs[0, masked_at] = tokenizer.mask_id
        with torch.no_grad():
            logits = model(inputs).logits[0, masked_at]                                          # [M,V]
        logits[:, tokenizer.special_ids] = -float("inf")  # a guess is a real token
        top = logits.topk(TOP_K, dim=-1).indices                                                 # [M,K]
        # The bigram sees what the model sees: [MASK], [CLS] and [SEP] neighbours drop their factor.
        shown = inputs[0].numpy()
        visible = np.where(counts.is_special[shown], -1, shown)
        guess = counts.predict(visible[masked_at.numpy() - 1], visible[masked_at.numpy() + 1])
        text = ["____" if i in masked_at else name(t) for i, t in enumerate(row[0].tolist())][1:-1]
        print(f"\n   row {row_number}: " + " ".join(text))
        for position, candidates, bigram in zip(masked_at.tolist(), top.tolist(), guess.tolist()):
            answer = row[0, position].item()
            model_right += candidates[0] == answer
            bigram_right += bigram == answer
            total += 1
            guesses = " / ".join(name(c) for c in candidates) + ("  ✓" if candidates[0] == answer else "")
            print(f"     {name(answer):>14}  model: {guesses:<46}  "
                  f"bigram: {name(bigram)}{'  ✓' if bigram == answer else ''}")
    result = {"positions": total, "model_acc": model_right / max(total, 1), "bigram_acc": bigram_right / max(total, 1)}
    print()
    show("top-1 right: model / bigram", f"{result['model_acc']:.2f} / {result['bigram_acc']:.2f} of {total}")
    conclude(f"the model fills {result['model_acc']:.0%} of these blanks with its first guess, counting two "
             f"neighbours {result['bigram_acc']:.0%}; a model that beats the bigram uses more than its neighbours. "
             f"The full comparison, on every held-out masked position, is in results.json (bigram_acc, window2_acc)")
    return result
