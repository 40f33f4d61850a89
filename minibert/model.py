"""The BERT model: embeddings -> L post-LN transformer blocks -> pooler / MLM head (Devlin et al. 2019).

Dimension legend (as in layers.py, plus):
    V  vocabulary size            P  max_position_embeddings
    M  number of positions that carry an MLM label (labels != -100), over the whole batch
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint.pretrained import PretrainedMixin
from .config import BertConfig
from .layers import LayerNorm, TransformerBlock, activation

from .input_checks import IGNORE_INDEX, check_id_range, check_inputs, check_mlm_labels


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # [B,T,H]
    pooler_output: torch.Tensor | None = None  # [B,H], None for a model built without the pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # L+1 tensors [B,T,H]: the embeddings, then each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # L tensors [B,N,T,T]


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor | None  # scalar: mean cross-entropy over the M labelled positions
    logits: torch.Tensor  # [M,V] when labels are given (sparse MLM), else [B,T,V]
    num_predictions: int | None = None  # M, needed to average correctly across accumulation micro-batches


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None  # scalar: MLM + NSP, whichever labels were given; None without labels
    mlm_logits: torch.Tensor  # as MaskedLMOutput.logits
    nsp_logits: torch.Tensor  # [B,2]: is segment B the real next sentence?


class BertEmbeddings(nn.Module):
    """词嵌入 + 位置嵌入 + 段嵌入: word + position + token-type (segment) embeddings, then LayerNorm and dropout.

    token_type_ids tell segment A (0) from segment B (1) in sentence pairs. With one sentence they are all 0,
    and the segment-0 row is simply a learned bias added to every token.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)  # [V,H]
        # LEARNED positions, one row per position (BERT replaced the Transformer's fixed 三角函数位置编码 sinusoidal
        # table): so P is a hard limit, past it only truncation or minibert/positions.py's hierarchical rows help
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)  # [P,H]
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)  # [type_vocab_size,H]: 2
        self.layer_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    @property
    def max_positions(self) -> int:
        return self.position_embeddings.num_embeddings

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """input_ids, token_type_ids: [B,T]. Returns LayerNorm(word + position + segment) [B,T,H], with dropout."""
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # [T]
        x = (self.word_embeddings(input_ids)  # [B,T,H]
             + self.position_embeddings(positions)  # [T,H], broadcast over B
             + self.token_type_embeddings(token_type_ids))  # [B,T,H]
        return self.dropout(self.layer_norm(x))  # [B,T,H]


class BertEncoder(nn.Module):
    """The stack of L identical transformer blocks."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, output_attentions: bool):
        """x: [B,T,H]. Returns (x [B,T,H], L+1 hidden states, L attention probabilities or Nones)."""
        hidden_states, attentions = [x], []
        for block in self.layers:
            x, probs = block(x, key_mask, return_probs=output_attentions)  # [B,T,H], [B,N,T,T] or None
            hidden_states.append(x)
            attentions.append(probs)
        return x, hidden_states, attentions


class BertPooler(nn.Module):
    """pooler_output = tanh(W h_[CLS] + b): the sentence vector NSP was trained on."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)  # [H,H]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B,T,H]
        return torch.tanh(self.dense(x[:, 0]))  # [B,H]: [CLS] is always position 0


class BertModel(PretrainedMixin, nn.Module):
    """The encoder: embeddings, L transformer blocks, and (optionally) the pooler: tanh(W h_[CLS] + b)."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        # the training loops set False after checking the CPU batch (each check is a host sync on a GPU); skipped
        # under torch.compile anyway
        self.check_inputs = True
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> BertOutput:
        """
        Args:
            input_ids: [B,T] token IDs in [0, V).
            token_type_ids: [B,T] segment IDs (0 = A, 1 = B); None means all 0.
            attention_mask: [B,T], 1 for real tokens and 0 for padding; None means no padding.
            output_hidden_states: also return the embeddings and every layer's output.
            output_attentions: also return every layer's [B,N,T,T] attention probabilities (slower reference path).
        Returns:
            BertOutput with last_hidden_state [B,T,H]; pooler_output [B,H] (None when built with
            add_pooling_layer=False); hidden_states, L+1 tensors [B,T,H] (the embeddings, then each layer), and
            attentions, L tensors [B,N,T,T], when asked for.
        """
        if self.check_inputs and not torch.compiler.is_compiling():
            check_inputs(self.config, input_ids, token_type_ids, attention_mask, self.embeddings.max_positions)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # [B,T] one sentence: everything is segment A
        key_mask = None
        if attention_mask is not None:
            # 注意力掩码 attention mask [B,T] -> [B,1,1,T]: broadcasts over heads and query positions, so every
            # query ignores padded KEYS.
            key_mask = attention_mask.bool()[:, None, None, :]

        x = self.embeddings(input_ids, token_type_ids)  # [B,T,H]
        x, hidden_states, attentions = self.encoder(x, key_mask, output_attentions)  # [B,T,H]
        pooled = self.pooler(x) if self.pooler is not None else None  # [B,H]
        return BertOutput(last_hidden_state=x, pooler_output=pooled,
                          hidden_states=tuple(hidden_states) if output_hidden_states else None,
                          attentions=tuple(attentions) if output_attentions else None)


class MLMHead(nn.Module):
    """The masked-LM head: transform (dense, act, LayerNorm), then a 绑定解码器 decoder TIED to the word embeddings.

    Tying (Press & Wolf 2017) reuses the [V,H] input embedding as the output projection: no second V×H matrix,
    and rare tokens' output vectors get gradient through their input use too. The head's own parameters are the
    transform (dense [H,H] and LayerNorm [H]) and the output bias [V]; only the [V,H] decoder matrix is shared.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.act = config.hidden_act
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)  # [H,H]
        self.layer_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))  # [V]
        self.check_labels = True  # a label >= V would be an IndexError on CPU, a device-side assert on CUDA

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """h: [..., H]; word_embeddings: [V,H]. Returns logits [..., V]."""
        h = self.layer_norm(activation(self.act, self.dense(h)))  # [..., H]
        return F.linear(h, word_embeddings, self.bias)  # [..., V] = h Eᵀ + b


def prediction_positions(labels: torch.Tensor) -> torch.Tensor:
    """The flat indices [M] of the labelled positions of labels [B,T], in row-major order. How many there are is
    data-dependent, so on a GPU the host must wait for the answer: compute it on the CPU batch and copy it along."""
    return (labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)  # [M]


def sparse_mlm_logits(bert: BertModel, head: MLMHead, sequence: torch.Tensor, labels: torch.Tensor | None,
                      positions: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """稀疏 MLM 头 The sparse MLM head: run the MLM head only where it is needed.

    With labels, gather the M labelled positions first and project only those onto the vocabulary ("sparse
    MLM", as google-research/bert's gather_indexes and Cramming, Geiping & Goldstein 2022). At 15% masking this
    skips 85% of the [*,H]x[H,V] projection, often the largest matmul in a small BERT.
    positions: [M] flat indices of the labelled positions (prediction_positions), or None to find them here,
    which on a GPU costs a host sync (M decides the shape of everything after the gather).
    Returns (logits [M,V] or [B,T,V], loss or None, M or None).
    """
    vocab = bert.embeddings.word_embeddings.weight  # [V,H], the tied decoder
    if labels is None:
        return head(sequence, vocab), None, None  # [B,T,V]
    if labels.shape != sequence.shape[:2] or labels.dtype != torch.long:  # metadata only: no device sync
        raise ValueError(f"labels have shape {tuple(labels.shape)} and dtype {labels.dtype}; expected the input_ids "
                         f"shape {tuple(sequence.shape[:2])} and torch.long (token IDs, {IGNORE_INDEX} elsewhere)")
    if positions is None:
        if head.check_labels and not torch.compiler.is_compiling():
            check_mlm_labels(labels, vocab.shape[0])
        positions = prediction_positions(labels)  # [M]
    targets = labels.reshape(-1)[positions]  # [M]
    num_predictions = positions.shape[0]
    logits = head(sequence.reshape(-1, sequence.shape[-1])[positions], vocab)  # [M,H] -> [M,V]
    # Mean over the M real predictions only; averaging over padded prediction slots would dilute the loss.
    # Sum / max(M, 1) rather than reduction="mean": a micro-batch with no prediction then adds 0, not NaN.
    loss = F.cross_entropy(logits.float(), targets, reduction="sum") / max(num_predictions, 1)
    return logits, loss, num_predictions


class BertForMaskedLM(PretrainedMixin, nn.Module):
    """BERT + MLM head, as pretrained with masked-language modelling only (RoBERTa, Liu et al. 2019, dropped NSP).

    Built without the pooler: MLM never trains it, and an unused parameter would also break DDP."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.mlm_head = MLMHead(config)
        self.mlm_head.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                prediction_positions: torch.Tensor | None = None) -> MaskedLMOutput:
        """labels: [B,T], the original token ID at positions to predict and -100 elsewhere (or None).
        prediction_positions: [M] their flat indices, computed on the CPU (model.prediction_positions) so that
        a GPU step never waits for the host; None finds them here. The caller then vouches for the labels."""
        sequence = self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state  # [B,T,H]
        logits, loss, num_predictions = sparse_mlm_logits(self.bert, self.mlm_head, sequence, labels,
                                                          prediction_positions)
        return MaskedLMOutput(loss=loss, logits=logits, num_predictions=num_predictions)


class BertForPreTraining(PretrainedMixin, nn.Module):
    """BERT as Google pretrained it: MLM + 下一句预测 next-sentence prediction (NSP) on the pooled [CLS].
    minibert pretrains with MLM only; this class exists so Google checkpoints load with all their heads."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=True)
        self.mlm_head = MLMHead(config)
        self.nsp_head = nn.Linear(config.hidden_size, 2)  # [2,H]
        for module in (self.mlm_head, self.nsp_head):
            module.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None) -> PreTrainingOutput:
        """Google's pretraining objective: MLM + NSP (next-sentence prediction).

        Args:
            input_ids, token_type_ids, attention_mask: as BertModel.forward.
            labels: [B,T] MLM labels: the original token at predicted positions, −100 elsewhere.
            next_sentence_label: [B], 0 = segment B follows A, 1 = B is a random sentence.
        Returns:
            PreTrainingOutput: loss (MLM + NSP, whichever labels were given), mlm_logits ([M,V] with labels, else
            [B,T,V]), nsp_logits [B,2].
        """
        out = self.bert(input_ids, token_type_ids, attention_mask)
        mlm_logits, loss, _ = sparse_mlm_logits(self.bert, self.mlm_head, out.last_hidden_state, labels)
        nsp_logits = self.nsp_head(out.pooler_output)  # [B,2]
        if next_sentence_label is not None:
            # NSP labels are 0 (is next) / 1 (random). Never ignore_index=0 here: class 0 is a real class.
            if next_sentence_label.shape != nsp_logits.shape[:1] or next_sentence_label.is_floating_point():
                raise ValueError(f"next_sentence_label has shape {tuple(next_sentence_label.shape)} and dtype "
                                 f"{next_sentence_label.dtype}; expected [batch] = {tuple(nsp_logits.shape[:1])} "
                                 f"of torch.long")
            check_id_range("next_sentence_label", next_sentence_label, "classes", 2,
                           "use 0 (segment B follows A) or 1 (segment B is random); -100 is not ignored here")
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label)
            loss = nsp_loss if loss is None else loss + nsp_loss
        return PreTrainingOutput(loss=loss, mlm_logits=mlm_logits, nsp_logits=nsp_logits)


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's init: weights ~ truncated normal(0, initializer_range) cut at ±2σ (TF's truncated_normal_initializer),
    biases 0, LayerNorm gamma 1 and beta 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
