"""BertConfig: the hyperparameters of a BERT, with the field names of Google's and Hugging Face's config.json.

Because the names match, a real `bert_config.json` (Google) or `config.json` (HF) loads as it is:

    cfg = BertConfig.from_json("bert-mini/bert_config.json")

Unknown keys (`architectures`, `model_type`, `torch_dtype`, ...) are ignored, so HF's extra bookkeeping doesn't
break loading. Every value is checked when the config is built, so a bad number fails here, in one clear line,
not later as a shape error deep inside attention.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .validation import ConfigError, check_fields, parse_text, read_json_object, rule

ACTIVATIONS = ("gelu", "gelu_new", "relu")


# What a config.json must state: a model's shape, never taken from a default.
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings")


# BERT's init std (Devlin et al. 2019; google-research/bert's modeling.py): every model built here from scratch
# starts at it, unless its config says otherwise (make pretrain's recipe says 0.03: pretrain/config.py).
BERT_INITIALIZER_RANGE = 0.02


@dataclass
class BertConfig:
    # Each field declares its type and range once (minibert/validation.py); __post_init__ enforces them.
    vocab_size: int = field(default=30522, metadata=rule(int, ge=1))  # V: 词表大小 vocabulary size
    hidden_size: int = field(default=768, metadata=rule(int, ge=1))  # H
    num_hidden_layers: int = field(default=12, metadata=rule(int, ge=1))  # L
    num_attention_heads: int = field(default=12, metadata=rule(int, ge=1))  # N; head size D = H / N
    intermediate_size: int = field(default=3072, metadata=rule(int, ge=1))  # I: FFN inner width, 4H in the paper
    # "gelu" (exact erf), "gelu_new" (tanh approx.; see layers.activation), "relu"
    hidden_act: str = field(default="gelu", metadata=rule(str, choices=ACTIVATIONS))
    hidden_dropout_prob: float = field(default=0.1, metadata=rule(float, ge=0, lt=1))
    attention_probs_dropout_prob: float = field(default=0.1, metadata=rule(float, ge=0, lt=1))
    max_position_embeddings: int = field(default=512, metadata=rule(int, ge=1))  # P: rows of the learned position table
    type_vocab_size: int = field(default=2, metadata=rule(int, ge=1))  # segment A/B for token_type_ids
    layer_norm_eps: float = field(default=1e-12, metadata=rule(float, gt=0))  # TF BERT's, inside the square root
    # std of the normal init (BERT's truncated normal, see model.init_weights)
    initializer_range: float = field(default=BERT_INITIALIZER_RANGE, metadata=rule(float, gt=0))
    pad_token_id: int = field(default=0, metadata=rule(int, ge=0))

    def __post_init__(self) -> None:
        check_fields(self, label=lambda name: f"BertConfig.{name}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"BertConfig: hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}; each head gets hidden_size/num_attention_heads dims, "
                f"so pick e.g. num_attention_heads={_a_divisor(self.hidden_size, self.num_attention_heads)}")
        if not self.pad_token_id < self.vocab_size:
            raise ConfigError(f"BertConfig.pad_token_id={self.pad_token_id}: must be in [0, vocab_size={self.vocab_size})")

    @property
    def head_size(self) -> int:
        """D: the width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    # ---- presets -----------------------------------------------------------------------------------------------
    @classmethod
    def mini(cls, vocab_size: int, **overrides) -> "BertConfig":
        """BERT-mini (H256, L4, A4, I1024) of Turc et al. 2019, "Well-Read Students Learn Better"."""
        return cls(vocab_size=vocab_size, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                   intermediate_size=1024, **overrides)

    # ---- JSON in and out ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "BertConfig":
        """Build from a dict, keeping the known keys and ignoring the rest (HF adds `architectures`, etc.).

        Values are taken as they are (no "0.1" -> 0.1 coercion): a wrong type fails naming `source` and the field.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object of BertConfig fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "BertConfig":
        """Read Google's `bert_config.json` or HF's `config.json` (a folder holding one also works)."""
        path = Path(path)
        if path.is_dir():
            candidates = [path / "config.json", path / "bert_config.json"]
            found = [p for p in candidates if p.is_file()]
            if not found:
                raise FileNotFoundError(f"config: no config.json or bert_config.json in folder {path}; "
                                        f"pass the config file itself or a folder that holds one")
            path = found[0]
        values = read_json_object(path, f"config {path}", "pass the path of a BERT config.json")
        if not {"vocab_size", "hidden_size", "num_hidden_layers"} & set(values):  # else: bert-base's defaults
            raise ConfigError(f"config {path} has none of vocab_size, hidden_size, num_hidden_layers (keys: "
                              f"{sorted(values)[:6]}): it is not a BERT config; pass the model's config.json")
        missing = [name for name in SHAPE_FIELDS if name not in values]  # a default there is bert-base's, silently
        if missing:
            raise ConfigError(f"config {path} lacks {', '.join(missing)}: a model's shape is never guessed (the "
                              f"default would be bert-base's); add the value(s) the weights were trained with")
        if values.get("position_embedding_type", "absolute") != "absolute":  # HF's relative_key(_query) variants
            raise ConfigError(f"config {path}: position_embedding_type={values['position_embedding_type']!r}; "
                              f"minibert's BERT has learned absolute positions only, so these weights cannot load")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, path: str | os.PathLike, **extra) -> None:
        """Write config.json atomically (temp file + rename). `extra` adds keys such as HF's `architectures`."""
        from .training.io import atomic_write_text  # imports torch: only when writing

        atomic_write_text(path, json.dumps({**self.to_dict(), **extra}, indent=2, sort_keys=True) + "\n")

    def replace(self, **overrides) -> "BertConfig":
        """A copy with some fields changed; validated again, so a bad override fails here."""
        unknown = set(overrides) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"BertConfig: unknown field(s) {sorted(unknown)}; "
                              f"valid fields are {[f.name for f in fields(self)]}")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def parse_override(cls, item: str) -> tuple[str, object]:
        """One CLI override "FIELD=VALUE" -> (field, value cast by the field's declared rule)."""
        rules = {f.name: f.metadata["rule"] for f in fields(cls)}
        key, sep, text = item.partition("=")
        if not sep or key not in rules:
            raise ConfigError(f"config override {item!r}: expected FIELD=VALUE with FIELD one of {sorted(rules)}")
        try:
            return key, parse_text(rules[key], text)
        except ValueError as error:
            raise ConfigError(f"config override {item!r}: {error}") from None

    def apply_overrides(self, assignments: list[str]) -> "BertConfig":
        """CLI overrides such as ["hidden_size=128", "hidden_act=gelu_new"]; each value is cast to the field's type."""
        return self.replace(**dict(self.parse_override(item) for item in assignments))


def _a_divisor(hidden_size: int, wanted: int) -> int:
    """The divisor of hidden_size closest to the number of heads the user asked for (for the error message)."""
    divisors = [d for d in range(1, hidden_size + 1) if hidden_size % d == 0]
    return min(divisors, key=lambda d: abs(d - wanted))
