"""Task heads for fine-tuning: a small layer on top of the pretrained encoder, trained together with it.

  * BertForSequenceClassification: one label per text (or text pair). The 句向量 sentence vector is the [CLS] state
    (default), the pooler's tanh(W h_[CLS] + b), or the mean over real tokens. Softmax cross-entropy, or sigmoid
    binary cross-entropy per class for multi-label tasks (多标签分类).
  * BertForTokenClassification: one BIO tag per token (序列标注 sequence labelling) for NER.
  * BertForGlobalPointerNER: span scores for NER (globalpointer.py).

Every head returns a TaskOutput whose `loss` is a MEAN over `num_loss_terms` terms (examples, labelled tokens, or
(example, entity type) rows). The training loop needs that count: with gradient accumulation the right loss for
one optimizer step is the sum over every term of every micro-batch divided by the total number of terms, not the
average of the micro-batch means (finetune/train.py).

Labels are checked before they reach cross_entropy: a −100 class label would be silently IGNORED by torch's
default ignore_index, and an out-of-range one crashes with "index 39 is out of bounds" on CPU or an unreadable
device-side assert on CUDA. Here both are one clear ValueError.

Dimension legend: B batch, T sequence length, H hidden size, C number of labels / entity types.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig
from .globalpointer import GlobalPointer, check_span_labels
from .input_checks import IGNORE_INDEX
from .model import BertModel, init_weights

REPRESENTATIONS = ("cls", "pooler", "mean")


@dataclass
class TaskOutput:
    loss: torch.Tensor | None  # scalar: mean over num_loss_terms terms (None without labels)
    logits: torch.Tensor  # [B,C] sequence, [B,T,C] token, [B,C,T,T] span scores
    num_loss_terms: torch.Tensor | int | None = None  # the denominator of that mean


def check_labels(labels: torch.Tensor, num_labels: int, allow_ignore: bool, what: str) -> None:
    """One aminmax over the labels: fail in one line instead of deep inside cross_entropy."""
    values = labels[labels != IGNORE_INDEX] if allow_ignore else labels
    if values.numel() == 0:
        return
    lo, hi = torch.aminmax(values)
    if lo < 0 or hi >= num_labels:
        bad = lo.item() if lo < 0 else hi.item()
        extra = " or -100 (ignored)" if allow_ignore else ""
        raise ValueError(f"{what} labels contain {bad}; they must be integers in [0, num_labels={num_labels}){extra}; "
                         f"fix the data, or set num_labels to the number of classes")


def check_multi_hot(labels: torch.Tensor) -> None:
    """Multi-label targets are probabilities for binary cross-entropy: 1 = has the label, 0 = has not. A 2 or a -1
    would train toward a meaningless target without any error, so they are refused."""
    lo, hi = torch.aminmax(labels.float())
    if lo < 0 or hi > 1:
        raise ValueError(f"multi-label labels contain {lo.item() if lo < 0 else hi.item()}; they must be in [0, 1] "
                         f"(a multi-hot row: 1 for each label the text has)")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Average of the real (non-padding) token states. hidden [B,T,H], attention_mask [B,T] -> [B,H]."""
    if attention_mask is None:
        return hidden.mean(dim=1)  # [B,H]
    mask = attention_mask.to(hidden.dtype)[:, :, None]  # [B,T,1]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [B,H]


def classifier_layers(config: BertConfig, num_labels: int,
                      classifier_dropout: float | None) -> tuple[nn.Dropout, nn.Linear]:
    """The dropout and the new [C,H] linear layer a classification head ends with. The linear layer is the only
    part a checkpoint does not supply, so it gets BERT's own init (truncated normal, bias 0) here."""
    dropout = config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
    classifier = nn.Linear(config.hidden_size, num_labels)  # [C,H]
    init_weights(classifier, config.initializer_range)
    return nn.Dropout(dropout), classifier


class BertForSequenceClassification(nn.Module):
    """文本分类 Text (or text-pair) classification.

    Args:
        config: the encoder's BertConfig.
        num_labels: C classes.
        representation: "cls" (the [CLS] state), "pooler" (tanh(W h_[CLS] + b), trained by NSP in Google's BERT;
            an MLM-only checkpoint has no trained pooler), or "mean" (mean over real tokens).
        multi_label: sigmoid + binary cross-entropy per class instead of softmax cross-entropy.
        classifier_dropout: dropout before the classifier; None uses config.hidden_dropout_prob.
        class_weights: [C] weights of each class's loss terms (single-label only), e.g. "balanced" n / (C·n_c) from
            finetune/tasks.py:balanced_class_weights; None = every example counts 1. Not saved with the weights.
    """

    def __init__(self, config: BertConfig, num_labels: int, representation: str = "cls", multi_label: bool = False,
                 classifier_dropout: float | None = None, class_weights: list[float] | None = None):
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(f"representation={representation!r}: must be one of {REPRESENTATIONS}")
        if num_labels < 1:
            raise ValueError(f"num_labels={num_labels}: a classifier needs at least 1 label")
        self.config = config
        self.check_labels = True  # a loop that checks labels on the CPU batch (finetune/train.py) turns it off
        self.num_labels = num_labels
        self.representation = representation
        self.multi_label = multi_label
        self.bert = BertModel(config, add_pooling_layer=representation == "pooler")
        self.dropout, self.classifier = classifier_layers(config, num_labels, classifier_dropout)  # -, [C,H]
        if class_weights is not None and (multi_label or len(class_weights) != num_labels):
            raise ValueError(f"class_weights: {len(class_weights)} weights for {num_labels} labels"
                             f"{' with multi_label (not supported)' if multi_label else ''}; give one weight per "
                             f"class of a single-label task, or None")
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)  # [C]
        self.register_buffer("class_weights", weights, persistent=False)  # moves with .to(device), not saved

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> TaskOutput:
        """
        Args:
            input_ids, token_type_ids, attention_mask: [B,T] as for BertModel.
            labels: [B] long class IDs in [0, C), or [B,C] 0/1 floats when multi_label.
        Returns:
            TaskOutput with logits [B,C]; loss averaged over the B examples (over B·C terms when multi_label).
        """
        out = self.bert(input_ids, token_type_ids, attention_mask)
        if self.representation == "cls":
            sentence = out.last_hidden_state[:, 0]  # [B,H]: [CLS] is position 0
        elif self.representation == "pooler":
            sentence = out.pooler_output  # [B,H]
        else:
            sentence = mean_pool(out.last_hidden_state, attention_mask)  # [B,H]
        logits = self.classifier(self.dropout(sentence))  # [B,C]
        if labels is None:
            return TaskOutput(loss=None, logits=logits)
        if self.multi_label:
            if labels.shape != logits.shape:
                raise ValueError(f"multi-label labels have shape {tuple(labels.shape)}; expected [batch, "
                                 f"num_labels] = {tuple(logits.shape)} of 0/1")
            if self.check_labels:
                check_multi_hot(labels)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())  # mean over B·C
            return TaskOutput(loss=loss, logits=logits, num_loss_terms=labels.numel())
        if labels.shape != logits.shape[:1] or labels.is_floating_point():  # metadata only: no device sync
            raise ValueError(f"classification labels have shape {tuple(labels.shape)} and dtype {labels.dtype}; "
                             f"expected [batch] = {tuple(logits.shape[:1])} class IDs (torch.long)")
        if self.check_labels:
            check_labels(labels, self.num_labels, allow_ignore=False, what="classification")
        # ignore_index=None would be clearer, but torch wants an int: the labels were checked above, so the
        # default -100 can never silently drop an example here.
        loss = F.cross_entropy(logits.float(), labels, reduction="none")  # [B]
        if self.class_weights is not None:
            # Each example's term times its class's weight, still divided by B: F.cross_entropy(weight=...)
            # divides by the batch's summed weights instead, which would break gradient accumulation's exact
            # n_i / Σn weighting of micro-batches (finetune/train.py).
            loss = loss * self.class_weights[labels]  # [B]
        loss = loss.mean()  # mean over B
        return TaskOutput(loss=loss, logits=logits, num_loss_terms=labels.shape[0])


class BertForTokenClassification(nn.Module):
    """序列标注 Token classification (BIO tags for NER). Labels are -100 on specials, padding and the
    continuation sub-tokens of a word, so each word is scored once, on its first sub-token."""

    def __init__(self, config: BertConfig, num_labels: int, classifier_dropout: float | None = None):
        super().__init__()
        self.config = config
        self.check_labels = True  # a loop that checks labels on the CPU batch (finetune/train.py) turns it off
        self.num_labels = num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout, self.classifier = classifier_layers(config, num_labels, classifier_dropout)  # -, [C,H]

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> TaskOutput:
        """labels: [B,T] tag IDs, -100 where no prediction is scored. Returns logits [B,T,C]; the loss is the
        mean over the labelled tokens."""
        hidden = self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state  # [B,T,H]
        logits = self.classifier(self.dropout(hidden))  # [B,T,C]
        if labels is None:
            return TaskOutput(loss=None, logits=logits)
        if labels.shape != input_ids.shape or labels.is_floating_point():  # metadata only: no device sync
            raise ValueError(f"token classification labels have shape {tuple(labels.shape)} and dtype "
                             f"{labels.dtype}; expected the input_ids shape {tuple(input_ids.shape)} of tag IDs "
                             f"(torch.long, {IGNORE_INDEX} where no tag is scored)")
        if self.check_labels:
            check_labels(labels, self.num_labels, allow_ignore=True, what="token classification")
        # Mean over the labelled tokens: cross_entropy skips the -100 positions itself (its ignore_index), so no
        # boolean gather, whose data-dependent size would make a GPU wait for the host. Sum / max(n, 1): a batch
        # with no labelled token adds 0 under gradient accumulation instead of NaN.
        scored = (labels != IGNORE_INDEX).sum()  # n, a 0-d tensor (no host sync)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum") / scored.clamp(min=1)
        return TaskOutput(loss=loss, logits=logits, num_loss_terms=scored)


class BertForGlobalPointerNER(nn.Module):
    """NER with an Efficient GlobalPointer on top of the encoder (globalpointer.py).

    Args:
        num_labels: C entity types.
        head_size: D of the GlobalPointer (64 in Su's code).
        classifier_dropout: dropout before the span scorer; None uses config.hidden_dropout_prob.
    """

    def __init__(self, config: BertConfig, num_labels: int, head_size: int = 64,
                 classifier_dropout: float | None = None):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.check_labels = True  # a loop that checks labels on the CPU batch (finetune/train.py) turns it off
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout)
        self.global_pointer = GlobalPointer(config.hidden_size, num_labels, head_size)
        self.global_pointer.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> TaskOutput:
        """labels: [B,C,T,T] 0/1, 1 where token span (start, end) is an entity of type c.
        Returns span scores [B,C,T,T] (predict spans with score > 0); the loss is the mean over B·C rows."""
        hidden = self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state  # [B,T,H]
        scores = self.global_pointer(self.dropout(hidden), attention_mask)  # [B,C,T,T]
        if labels is None:
            return TaskOutput(loss=None, logits=scores)
        if labels.shape != scores.shape:
            raise ValueError(f"GlobalPointer labels have shape {tuple(labels.shape)}; expected [batch, types, "
                             f"seq_len, seq_len] = {tuple(scores.shape)}")
        if self.check_labels:
            check_span_labels(labels, attention_mask)
        loss = GlobalPointer.loss(scores, labels)
        return TaskOutput(loss=loss, logits=scores, num_loss_terms=scores.shape[0] * scores.shape[1])
