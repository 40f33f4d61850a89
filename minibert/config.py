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
from dataclasses import dataclass, fields
from pathlib import Path

ACTIVATIONS = ("gelu", "gelu_new", "relu")


@dataclass
class BertConfig:
    vocab_size: int = 30522  # V: 词表大小 vocabulary size
    hidden_size: int = 768  # H
    num_hidden_layers: int = 12  # L
    num_attention_heads: int = 12  # N; head size D = H / N
    intermediate_size: int = 3072  # I: FFN inner width, 4H in the paper
    hidden_act: str = "gelu"  # "gelu" (exact erf), "gelu_new" (tanh approx.; see layers.activation), "relu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512  # P: rows of the learned position table
    type_vocab_size: int = 2  # segment A/B for token_type_ids
    layer_norm_eps: float = 1e-12  # TF BERT's epsilon, inside the square root
    initializer_range: float = 0.02  # std of the normal init (BERT's truncated normal, see model.init_weights)
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        positive_ints = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                         "intermediate_size", "max_position_embeddings", "type_vocab_size")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"BertConfig.{name}={value!r}: must be a positive integer")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"BertConfig: hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}; each head gets hidden_size/num_attention_heads dims, "
                f"so pick e.g. num_attention_heads={_a_divisor(self.hidden_size, self.num_attention_heads)}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act={self.hidden_act!r}: must be one of {ACTIVATIONS}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"BertConfig.{name}={p}: must be in [0, 1)")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"BertConfig.layer_norm_eps={self.layer_norm_eps}: must be > 0")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_token_id={self.pad_token_id}: must be in [0, vocab_size={self.vocab_size})")

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
    def from_dict(cls, d: dict) -> "BertConfig":
        """Build from a dict, keeping the known keys and ignoring the rest (HF adds `architectures`, etc.)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

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
        if not path.is_file():
            raise FileNotFoundError(f"config: file {path} does not exist; pass the path of a config.json")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"config: {path} is not valid JSON ({e}); check the file is a config.json") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, path: str | os.PathLike, **extra) -> None:
        """Write config.json atomically (temp file + rename). `extra` adds keys such as HF's `architectures`."""
        text = json.dumps({**self.to_dict(), **extra}, indent=2, sort_keys=True) + "\n"
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def replace(self, **overrides) -> "BertConfig":
        """A copy with some fields changed; validated again, so a bad override fails here."""
        unknown = set(overrides) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"BertConfig: unknown field(s) {sorted(unknown)}; "
                             f"valid fields are {[f.name for f in fields(self)]}")
        return dataclasses.replace(self, **overrides)

    def apply_overrides(self, assignments: list[str]) -> "BertConfig":
        """CLI overrides such as ["hidden_size=128", "hidden_act=gelu_new"]; each value is cast to the field's type."""
        # Cast by the DECLARED type, not the current value's: a config.json may hold `0` (an int) for a float
        # field, and int("0.1") would then reject a valid override.
        casts = {"int": int, "float": float, "str": str}  # annotations are strings (from __future__)
        types = {f.name: casts[f.type] for f in fields(self)}
        changes = {}
        for item in assignments:
            key, sep, value = item.partition("=")
            if not sep or key not in types:
                raise ValueError(f"config override {item!r}: expected FIELD=VALUE with FIELD one of {sorted(types)}")
            try:
                changes[key] = types[key](value)
            except ValueError:
                raise ValueError(f"config override {item!r}: {value!r} is not a valid {types[key].__name__}") from None
        return self.replace(**changes)


def _a_divisor(hidden_size: int, wanted: int) -> int:
    """The divisor of hidden_size closest to the number of heads the user asked for (for the error message)."""
    divisors = [d for d in range(1, hidden_size + 1) if hidden_size % d == 0]
    return min(divisors, key=lambda d: abs(d - wanted))
