"""辅助 MLM 损失 An auxiliary masked-LM loss while fine-tuning (`--mlm-weight`).

GPT-1 (Radford et al. 2018, §3.2) keeps its language-modelling loss on while it fine-tunes, as an auxiliary
objective: loss = task loss + λ · LM loss. Here the LM loss is pretraining's own: each training batch is also
masked afresh (15%, 80/10/10, pretrain/masking.py) and the pretrained MLM head predicts the masked tokens from the
same encoder. Why it helps with few labels: a few hundred classification steps reshape the whole encoder toward
the labels they happen to see, and what pretraining learnt from the unlabelled text (which words go together) is
overwritten; the auxiliary loss keeps asking for it. Measured, it helps a little where labels are few: +0.016
macro-F1 on the embedded corpus at 10% labels (ahead in 11 of 15 runs), nothing at full labels or on Tianchi at 10%
(docs/results.md, "The auxiliary MLM loss"). It costs a second forward and backward per batch.

The head is the checkpoint's MLM head (its decoder is tied to the word embeddings, which the classifier trains
too); a checkpoint without one (random init, an exported classifier) gets a fresh head, which has nothing to keep
and only costs steps. After training the head is dropped: the saved model is the classifier.

Dimension legend: B batch, T sequence length, V vocab, M masked positions.
"""

from __future__ import annotations

import torch

from minibert import BertForMaskedLM
from minibert.checkpoint import load_pretrained
from minibert.model import MLMHead, init_weights, prediction_positions, sparse_mlm_logits
from pretrain.masking import DynamicMasking

MASK_RATE = 0.15  # BERT's: the auxiliary loss asks for pretraining's skill, not for more of it per step


class AuxiliaryMLM:
    """The MLM head, the masking and its own seeded generator (the masks do not disturb the batch order's RNG).

    Args:
        head: an MLMHead; its decoder is the classifier's word-embedding matrix (sparse_mlm_logits ties them).
        masking: DynamicMasking for the tokenizer the data was encoded with.
        weight: λ in loss = task loss + λ · MLM loss.
        seed: seeds the masks, so a run is reproducible.
    """

    def __init__(self, head: MLMHead, masking: DynamicMasking, weight: float, seed: int):
        self.head, self.masking, self.weight = head, masking, weight
        self.generator = torch.Generator().manual_seed(seed)

    def param_group(self, lr: float) -> dict:
        """An AdamW group for the head at the encoder's LR. No weight decay: the head is thrown away after training,
        so decay would only pull it off the pretrained values it is there to keep."""
        return {"params": list(self.head.parameters()), "param_names": ["aux_mlm_head"], "lr": lr,
                "weight_decay": 0.0, "name": "auxiliary MLM head"}

    def mask(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B,T] CPU ids -> masked ids [B,T], labels [B,T] (-100 where nothing is predicted) and their flat
        positions [M], all on the CPU: found there, they cost a GPU step no host sync (as in pretraining)."""
        masked_ids, labels = self.masking(input_ids, self.generator)
        return masked_ids, labels, prediction_positions(labels)

    def loss(self, model: torch.nn.Module, masked: tuple, batch: dict) -> torch.Tensor:
        """The mean MLM loss over the M masked positions, through the classifier's own encoder. `masked` is what
        `mask` returned, moved to the device `batch` is on."""
        masked_ids, labels, positions = masked
        sequence = model.bert(masked_ids, batch["token_type_ids"], batch["attention_mask"]).last_hidden_state  # [B,T,H]
        _, loss, _ = sparse_mlm_logits(model.bert, self.head, sequence, labels, positions)  # logits [M,V] unused
        return loss


def build_auxiliary_mlm(weight: float, init: str, model: torch.nn.Module, tokenizer, seed: int
                        ) -> tuple[AuxiliaryMLM | None, list[str]]:
    """The auxiliary loss of `--mlm-weight weight` (None when 0) and the notes to print about its head."""
    if not weight:
        return None, []
    config, masking = model.bert.config, DynamicMasking.from_tokenizer(tokenizer, MASK_RATE)
    if init != "random":
        loaded = load_pretrained(BertForMaskedLM, init)
        if not any(name.startswith("mlm_head.") for name, _ in loaded.report.fresh):  # the checkpoint has a head
            return (AuxiliaryMLM(loaded.model.mlm_head, masking, weight, seed),
                    [f"--mlm-weight {weight}: the auxiliary MLM loss uses the MLM head of {init}"])
    head = MLMHead(config)
    head.apply(lambda module: init_weights(module, config.initializer_range))
    source = "random init" if init == "random" else f"{init} has no MLM head"
    return (AuxiliaryMLM(head, masking, weight, seed),
            [f"--mlm-weight {weight}: {source}, so the auxiliary MLM loss trains a fresh head (it has no "
             f"pretraining to keep; measured, it slows random init down: docs/results.md, \"The auxiliary MLM "
             f"loss\")"])
