"""THE weight-name table: every minibert parameter, its Hugging Face name and its Google TF name.

Open this file to see the whole correspondence; `convert.py` only applies it.

Naming conventions of the three worlds
--------------------------------------
* minibert   `encoder.layers.3.attention.qkv.weight`   torch nn.Linear weight, [out, in]
* HF         `encoder.layer.3.attention.self.query.weight`  also torch, [out, in]
* Google TF  `bert/encoder/layer_3/attention/self/query/kernel`  TF dense kernel, [in, out]

Transforms, and why:
* `kernel` → `weight`: TF computes y = x·K with K [in, out]; torch computes y = x·Wᵀ with W [out, in].
  Same numbers, so W = Kᵀ (`tf_transpose=True`).
* `gamma`/`beta` → LayerNorm `weight`/`bias`: the scale γ and shift β of Ba et al. 2016 under other names.
* Fused Q/K/V: minibert computes Q, K and V with ONE [3H, H] matrix (Q rows, then K, then V): one big matmul
  instead of three. A row with three source names means "concatenate the three along dim 0" when reading
  and "split into three equal parts" when writing HF.
* `cls/predictions/output_bias` is the MLM output bias [V]. The MLM decoder weight itself is TIED to the word
  embeddings, so no checkpoint world stores a separate copy (HF may; see TIED_TO_WORD_EMBEDDINGS).
* `cls/seq_relationship/output_weights` (NSP) and `output_weights` (run_classifier.py) were created by Google
  with tf.get_variable([num_labels, H]) and used as x·Wᵀ, i.e. already [out, in]: NOT transposed.

Rows in BERT_ROWS are relative to the encoder (`BertModel`): in minibert/HF models that wrap it (MLM,
pretraining, classification) their names get the `bert.` prefix. HEAD_ROWS are top-level names.
`{i}` is the layer index. To support a new task head, add a row to HEAD_ROWS and a reason to FRESH_REASONS.

Dimension legend (shape comments below): V vocabulary, P max positions, TV token types, H hidden, I intermediate
(FFN inner width), C number of labels.
"""

import re
from dataclasses import dataclass
from typing import Tuple

Names = Tuple[str, ...]


@dataclass(frozen=True)
class WeightRow:
    minibert: str        # minibert parameter name; "{i}" stands for the layer index
    hf: Names            # HF name(s); three names = Q, K, V fused into the one minibert tensor
    tf: Names            # Google TF variable name(s), same order as `hf`
    tf_transpose: bool   # TF dense kernel [in, out] → torch weight [out, in]
    part: str            # embeddings | encoder | pooler | mlm | nsp | classifier

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.minibert

    @property
    def in_encoder(self) -> bool:
        """True for BERT_ROWS (names get the `bert.` prefix inside wrapper models)."""
        return self.part in ("embeddings", "encoder", "pooler")


def _row(minibert, hf, tf, part, tf_transpose=False):
    as_tuple = lambda names: (names,) if isinstance(names, str) else tuple(names)
    return WeightRow(minibert, as_tuple(hf), as_tuple(tf), tf_transpose, part)


_L_HF, _L_TF = "encoder.layer.{i}", "bert/encoder/layer_{i}"
_QKV = ("query", "key", "value")

BERT_ROWS = (
    # ---- embeddings: 词嵌入 word, position, token-type (segment), then LayerNorm ----
    _row("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight",
         "bert/embeddings/word_embeddings", "embeddings"),                                    # [V,H]
    _row("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight",
         "bert/embeddings/position_embeddings", "embeddings"),                                # [P,H]
    _row("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight",
         "bert/embeddings/token_type_embeddings", "embeddings"),                              # [TV,H]
    _row("embeddings.layer_norm.weight", "embeddings.LayerNorm.weight", "bert/embeddings/LayerNorm/gamma", "embeddings"),
    _row("embeddings.layer_norm.bias", "embeddings.LayerNorm.bias", "bert/embeddings/LayerNorm/beta", "embeddings"),
    # ---- one transformer block, repeated for i = 0..L-1 ----
    _row("encoder.layers.{i}.attention.qkv.weight",                                           # [3H,H]
         [f"{_L_HF}.attention.self.{p}.weight" for p in _QKV],
         [f"{_L_TF}/attention/self/{p}/kernel" for p in _QKV], "encoder", tf_transpose=True),
    _row("encoder.layers.{i}.attention.qkv.bias",                                             # [3H]
         [f"{_L_HF}.attention.self.{p}.bias" for p in _QKV],
         [f"{_L_TF}/attention/self/{p}/bias" for p in _QKV], "encoder"),
    _row("encoder.layers.{i}.attention.out.weight", f"{_L_HF}.attention.output.dense.weight",  # [H,H]
         f"{_L_TF}/attention/output/dense/kernel", "encoder", tf_transpose=True),
    _row("encoder.layers.{i}.attention.out.bias", f"{_L_HF}.attention.output.dense.bias",
         f"{_L_TF}/attention/output/dense/bias", "encoder"),
    _row("encoder.layers.{i}.attention_norm.weight", f"{_L_HF}.attention.output.LayerNorm.weight",
         f"{_L_TF}/attention/output/LayerNorm/gamma", "encoder"),
    _row("encoder.layers.{i}.attention_norm.bias", f"{_L_HF}.attention.output.LayerNorm.bias",
         f"{_L_TF}/attention/output/LayerNorm/beta", "encoder"),
    _row("encoder.layers.{i}.ffn.up.weight", f"{_L_HF}.intermediate.dense.weight",             # [I,H]
         f"{_L_TF}/intermediate/dense/kernel", "encoder", tf_transpose=True),
    _row("encoder.layers.{i}.ffn.up.bias", f"{_L_HF}.intermediate.dense.bias",
         f"{_L_TF}/intermediate/dense/bias", "encoder"),
    _row("encoder.layers.{i}.ffn.down.weight", f"{_L_HF}.output.dense.weight",                 # [H,I]
         f"{_L_TF}/output/dense/kernel", "encoder", tf_transpose=True),
    _row("encoder.layers.{i}.ffn.down.bias", f"{_L_HF}.output.dense.bias", f"{_L_TF}/output/dense/bias", "encoder"),
    _row("encoder.layers.{i}.ffn_norm.weight", f"{_L_HF}.output.LayerNorm.weight",
         f"{_L_TF}/output/LayerNorm/gamma", "encoder"),
    _row("encoder.layers.{i}.ffn_norm.bias", f"{_L_HF}.output.LayerNorm.bias", f"{_L_TF}/output/LayerNorm/beta", "encoder"),
    # ---- pooler: tanh(W h_[CLS] + b) ----
    _row("pooler.dense.weight", "pooler.dense.weight", "bert/pooler/dense/kernel", "pooler", tf_transpose=True),
    _row("pooler.dense.bias", "pooler.dense.bias", "bert/pooler/dense/bias", "pooler"),
)

HEAD_ROWS = (
    # ---- masked-LM head: transform (dense + act + LayerNorm), tied decoder, own bias ----
    _row("mlm_head.dense.weight", "cls.predictions.transform.dense.weight",
         "cls/predictions/transform/dense/kernel", "mlm", tf_transpose=True),
    _row("mlm_head.dense.bias", "cls.predictions.transform.dense.bias", "cls/predictions/transform/dense/bias", "mlm"),
    _row("mlm_head.layer_norm.weight", "cls.predictions.transform.LayerNorm.weight",
         "cls/predictions/transform/LayerNorm/gamma", "mlm"),
    _row("mlm_head.layer_norm.bias", "cls.predictions.transform.LayerNorm.bias",
         "cls/predictions/transform/LayerNorm/beta", "mlm"),
    _row("mlm_head.bias", "cls.predictions.bias", "cls/predictions/output_bias", "mlm"),        # [V]
    # ---- next-sentence-prediction head on the pooled [CLS]: output_weights is already [out, in] ----
    _row("nsp_head.weight", "cls.seq_relationship.weight", "cls/seq_relationship/output_weights", "nsp"),  # [2,H]
    _row("nsp_head.bias", "cls.seq_relationship.bias", "cls/seq_relationship/output_bias", "nsp"),
    # ---- sequence-classification head (HF BertForSequenceClassification, Google run_classifier.py) ----
    _row("classifier.weight", "classifier.weight", "output_weights", "classifier"),             # [C,H]
    _row("classifier.bias", "classifier.bias", "output_bias", "classifier"),
)

# minibert heads with no Hugging Face / Google counterpart (parameter-name prefix → what they are). A minibert
# checkpoint that has them loads them; from any other source they are freshly initialised; HF export refuses them.
MINIBERT_ONLY_HEADS = {
    "global_pointer.": "GlobalPointer NER head (minibert/globalpointer.py), which HF and Google BERT lack",
}

# Real-world key drift in HF files: old names → today's names (regex, replacement).
HF_RENAMES = (
    (r"\.LayerNorm\.gamma$", ".LayerNorm.weight"),       # pre-2019 pytorch-pretrained-bert names
    (r"\.LayerNorm\.beta$", ".LayerNorm.bias"),
    (r"^cls\.predictions\.decoder\.bias$", "cls.predictions.bias"),  # HF ties decoder.bias to predictions.bias
)

# HF's MLM decoder weight is tied to the word embeddings: when present it must equal them (checked), when absent
# it is "taken from the word embeddings", which is exactly what minibert's tied decoder does.
TIED_TO_WORD_EMBEDDINGS = "cls.predictions.decoder.weight"

# Source tensors that are not model weights: (regex on the source name, reason reported when skipped).
SKIP_RULES = (
    (r"(^|[./])position_ids$", "buffer holding arange(P); minibert computes positions on the fly"),
    (r"(^|[./])token_type_ids$", "buffer of zeros (default segment ids); minibert builds them on the fly"),
    (r"/adam_[mv]$", "Adam optimizer slot (moment estimate): training state, not a model weight"),
    (r"^global_step$", "training step counter, not a model weight"),
    (r"^_CHECKPOINTABLE_OBJECT_GRAPH$", "TF2 object-graph metadata, not a model weight"),
)

# Why a source tensor of a given part is skipped when the TARGET model has no such part.
NOT_IN_TARGET_REASONS = {
    "pooler": "target model has no pooler (built with add_pooling_layer=False, as BertForMaskedLM is)",
    "mlm": "target model has no MLM head (load into BertForMaskedLM / BertForPreTraining to keep it)",
    "nsp": "target model has no NSP head (load into BertForPreTraining to keep it)",
    "classifier": "target model has no classification head",
}

# Why a target parameter of a given part may be freshly initialised when the SOURCE lacks it.
# Parts not listed here (embeddings, encoder) are never allowed to be missing: that is an error.
FRESH_REASONS = {
    "pooler": "source has no pooler (e.g. an MLM-only checkpoint): freshly initialised",
    "mlm": "source has no MLM head: freshly initialised, train it before use",
    "nsp": "source has no NSP head: freshly initialised",
    "classifier": "new task head: freshly initialised, trained during fine-tuning",
}


def skip_reason(source_name: str):
    """The reason a source tensor is not a weight (SKIP_RULES), or None."""
    for pattern, reason in SKIP_RULES:
        if re.search(pattern, source_name):
            return reason
    return None


def hf_canonical_name(name: str) -> str:
    """Applies HF_RENAMES (legacy gamma/beta, decoder.bias alias) to one HF key."""
    for pattern, replacement in HF_RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def minibert_only_head(name: str):
    """The description of the minibert-only head a parameter belongs to (MINIBERT_ONLY_HEADS), or None."""
    return next((what for prefix, what in MINIBERT_ONLY_HEADS.items() if name.startswith(prefix)), None)
