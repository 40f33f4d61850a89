"""Dynamic masking (动态掩码) for masked-language-model (MLM) pretraining.

BERT (Devlin et al., 2019, §3.1) selects 15% of the tokens of a sequence for prediction and replaces each selected
token by [MASK] 80% of the time, by a random token 10% of the time, and leaves it unchanged 10% of the time, so the
model cannot rely on seeing [MASK] and must keep a good representation of every input token. RoBERTa (Liu et al.,
2019, §4.1) draws a fresh mask every time a sequence is used ("dynamic masking") instead of fixing it once at
preprocessing; we do the same: masking runs on every batch, driven by a `torch.Generator` the caller seeds, so a
resumed run can reproduce exactly the masks an uninterrupted run would have drawn.

The 15% rate is configurable. Wettig et al. (2022), "Should You Mask 15% in Masked Language Modeling?"
(arXiv:2202.08005) find 40% better for large models, and Cramming (Geiping & Goldstein, 2022) uses 25% under a
small compute budget; `mask_rate=0.3` is our default for short pretraining runs: more predictions per forward pass,
so more learning signal per second.

Traps avoided:
- special tokens ([PAD] [UNK] [CLS] [SEP] [MASK], or any id the caller lists) are never selected: predicting
  [SEP] or padding teaches nothing and padding positions would leak into the loss;
- the 10% random replacements come only from real (non-special) token ids: a random [PAD] or [CLS] in the middle of
  a sentence is an input the model never sees at fine-tuning time;
- every sequence gets at least one prediction, as google-research/bert does (max(1, round(n·rate))): a short row
  could otherwise draw none and teach nothing (the sparse head returns a loss of 0 for M = 0, and a step with no
  prediction at all is refused by minibert/training/accumulation.py:global_prediction_count). A row with no real
  token (a document the vocab does not cover, all [UNK]) gets none: nothing in it can be predicted.

Dimension legend: B batch size, T sequence length, V vocab size.
"""
import torch

from minibert import IGNORE_INDEX  # -100: labels the MLM loss skips


class DynamicMasking:
    """Selects and corrupts MLM positions, fresh on every call.

    Args:
        vocab_size: V; every input id must be in [0, V).
        special_token_ids: ids never selected and never used as random replacements (at least [PAD], [CLS],
            [SEP], [MASK]; [UNK] too, since predicting "unknown" teaches nothing).
        mask_token_id: id of [MASK].
        mask_rate: probability that a non-special token is selected (0.15 as in BERT; 0.3 is the documented
            short-budget option, see module docstring).
        mask_token_fraction: share of selected tokens replaced by [MASK] (0.8).
        random_token_fraction: share replaced by a random real token (0.1); the rest stay unchanged.
    """

    def __init__(self, vocab_size, special_token_ids, mask_token_id, mask_rate=0.15,
                 mask_token_fraction=0.8, random_token_fraction=0.1):
        if not 0.0 < mask_rate < 1.0:
            raise ValueError(f"mask_rate: got {mask_rate}, must be in (0, 1); use 0.15 (BERT), 0.25 (Cramming) or "
                             f"0.3 (our default)")
        if mask_token_fraction < 0 or random_token_fraction < 0 or mask_token_fraction + random_token_fraction > 1:
            raise ValueError(f"mask_token_fraction + random_token_fraction: got {mask_token_fraction} + "
                             f"{random_token_fraction}, each must be ≥ 0 and their sum ≤ 1; use 0.8 and 0.1")
        if mask_token_id not in special_token_ids:
            raise ValueError(f"special_token_ids: [MASK] id {mask_token_id} missing from {sorted(special_token_ids)};"
                             " list every special id, [MASK] included")
        if min(special_token_ids) < 0 or max(special_token_ids) >= vocab_size:
            raise ValueError(f"special_token_ids: {sorted(special_token_ids)} outside the vocab [0, {vocab_size});"
                             " pass the ids of the tokenizer that encoded the corpus")
        self.vocab_size = vocab_size
        self.mask_token_id = mask_token_id
        self.mask_rate = mask_rate
        self.mask_token_fraction = mask_token_fraction
        self.random_token_fraction = random_token_fraction
        self.is_special = torch.zeros(vocab_size, dtype=torch.bool)            # [V] lookup table
        self.is_special[list(special_token_ids)] = True
        self.real_token_ids = torch.nonzero(~self.is_special).flatten()        # [V - number of specials]
        if len(self.real_token_ids) == 0:
            raise ValueError(f"vocab: all {vocab_size} ids are special; a vocab needs real tokens to mask")

    @classmethod
    def from_tokenizer(cls, tokenizer, mask_rate=0.15, **fractions):
        """The usual construction: the tokenizer's vocab size, its five special ids and its [MASK] id.

        For evaluation, `mask_token_fraction=1.0, random_token_fraction=0.0` replaces every selected token by
        [MASK]: accuracy then measures prediction from context alone, comparable with the unigram baseline.
        """
        return cls(tokenizer.vocab_size, tokenizer.special_ids, tokenizer.mask_id, mask_rate, **fractions)

    def __call__(self, input_ids, generator):
        """Masks a batch.

        Args:
            input_ids: torch.long [B,T] on the CPU (masking runs in the data pipeline, before the copy to GPU).
            generator: a CPU `torch.Generator`; its state fully determines the masks.
        Returns:
            masked_ids: torch.long [B,T], the corrupted input.
            labels: torch.long [B,T], the original id at selected positions, IGNORE_INDEX (-100) elsewhere.
        """
        if input_ids.dim() != 2 or input_ids.dtype != torch.long or input_ids.device.type != "cpu":
            raise ValueError(f"input_ids: got {input_ids.dtype} {tuple(input_ids.shape)} on {input_ids.device}, "
                             "need a torch.long [B,T] tensor on the CPU; mask before moving the batch to GPU")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.vocab_size):
            raise ValueError(f"input_ids: ids span [{int(input_ids.min())}, {int(input_ids.max())}], outside the "
                             f"vocab [0, {self.vocab_size}); encode the corpus with the model's vocab.txt")
        maskable = ~torch.take(self.is_special, input_ids)                     # [B,T] bool, a gather per id
        scores = torch.rand(input_ids.shape, generator=generator)              # [B,T] in [0,1)
        selected = maskable & (scores < self.mask_rate)                        # [B,T] Bernoulli(mask_rate)
        # At least one prediction per row: rows that drew none take their maskable position with the highest
        # fresh score, i.e. a uniformly random maskable position.
        empty_rows = ~selected.any(dim=1) & maskable.any(dim=1)                # [B]; all-[UNK] rows stay empty
        tie_break = torch.rand(input_ids.shape, generator=generator).masked_fill(~maskable, -1.0)  # [B,T]
        forced = torch.zeros_like(selected)                                    # [B,T] bool
        forced[torch.arange(len(input_ids)), tie_break.argmax(dim=1)] = True
        selected |= forced & empty_rows[:, None]
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))  # [B,T]
        # 80/10/10: one uniform draw per position decides [MASK] / random / unchanged.
        action = torch.rand(input_ids.shape, generator=generator)              # [B,T]
        to_mask = selected & (action < self.mask_token_fraction)               # [B,T] bool
        to_random = selected & (action >= self.mask_token_fraction) & \
            (action < self.mask_token_fraction + self.random_token_fraction)  # [B,T] bool
        random_ids = torch.take(self.real_token_ids, torch.randint(
            len(self.real_token_ids), input_ids.shape, generator=generator))  # [B,T]
        masked_ids = torch.where(to_mask, torch.full_like(input_ids, self.mask_token_id), input_ids)  # [B,T]
        masked_ids = torch.where(to_random, random_ids, masked_ids)            # [B,T]
        return masked_ids, labels
