"""FinetuneConfig: every knob of a fine-tuning run in one dataclass, with JSON files and CLI overrides.

Precedence: dataclass defaults < `--config run.json` < command-line flags. Each field becomes a flag with the
same name (`gradient_accumulation` -> `--gradient-accumulation`); booleans get `--flag / --no-flag`. The run
writes the final config to `<out>/finetune_config.json`, so `--config` can replay it exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field, fields

TASKS = ("cls", "pair", "ner")


def option(default, help: str, cast=None):
    """A dataclass field that carries its CLI help and value type (`cast`, needed when the default is None)."""
    return field(default=default, metadata={"help": help, "type": cast or type(default)})


@dataclass
class FinetuneConfig:
    # ---- task and data
    task: str = option("cls", "cls (one text), pair (two texts), ner (entities)")
    data: str | None = option(None, "folder holding train.tsv + dev.tsv (train.json + dev.json for ner)", str)
    train: str | None = option(None, "training file; default: --data's, else the task's embedded data", str)
    dev: str | None = option(None, "dev file; default: the task's embedded data", str)
    format: str | None = option(None, "tianchi|sst2|cola|pair|cluener (finetune/data.py); default by task", str)
    text_column: int | None = option(None, "override the format's text column (0-based)", int)
    text_b_column: int | None = option(None, "override the format's segment-B column (pairs)", int)
    label_column: int | None = option(None, "override the format's label column", int)
    header: bool | None = option(None, "override whether the TSV has a header line", bool)
    tokenizer: str | None = option(None, "whitespace|wordpiece; default: the format's", str)
    max_train_examples: int | None = option(None, "use only the first N training examples", int)
    train_fraction: float | None = option(None, "few labels: a stratified (by label), seeded share of the training "
                                          "examples, e.g. 0.1; the random-init and TF-IDF rows get the same", float)
    # ---- model
    init: str = option("auto", "pretrained folder (config.json, model.safetensors, vocab.txt), 'random', or "
                               "'auto' (runs/pretrain/final for cls/pair, random for ner; see __main__.py)")
    vocab: str | None = option(None, "vocab.txt (or tokenizer.json); default: the one in --init", str)
    model_config: str | None = option(None, "config.json for --init random; default BertConfig.mini", str)
    num_labels: int | None = option(None, "number of classes; default: max train label + 1", int)
    multi_label: bool = option(False, "several labels per text: BCE loss, micro/macro-F1")
    threshold: float = option(0.5, "multi-label decision threshold on sigmoid(logit)")
    representation: str = option("cls", "sentence vector: cls | pooler | mean")
    head: str = option("softmax", "ner head: softmax (BIO tags) | globalpointer (span scores)")
    globalpointer_head_size: int = option(64, "GlobalPointer query/key width D")
    dropout: float | None = option(None, "dropout before the classifier; default the encoder's", float)
    encoder_dropout: float | None = option(None, "dropout inside the encoder (hidden and attention), e.g. BERT's "
                                           "0.1; default: the checkpoint's config (make pretrain's models say 0: "
                                           "they pretrain without dropout, as Cramming does)", float)
    max_length: int = option(256, "tokens per input including [CLS]/[SEP]")
    truncate: str = option("head+tail", "long texts: head | tail | head+tail")
    hierarchical_positions: bool = option(False, "extend the position table past its limit (α=0.4) when "
                                                 "max_length exceeds it")
    # ---- optimisation
    epochs: int = option(3, "passes over the training data")
    max_steps: int | None = option(None, "stop after this many optimizer steps (equal-budget comparisons)", int)
    batch_size: int = option(32, "examples per micro-batch")
    gradient_accumulation: int = option(1, "micro-batches per optimizer step (梯度累积)")
    eval_batch_size: int = option(64, "examples per evaluation batch")
    lr: float = option(5e-5, "peak learning rate of the encoder")
    head_lr: float | None = option(1e-3, "peak learning rate of the task head (差分学习率); none = --lr", float)
    layer_decay: float | None = option(None, "layer-wise lr decay factor, e.g. 0.8 (none = off)", float)
    weight_decay: float = option(0.01, "AdamW decoupled weight decay (权重衰减), not on biases/LayerNorm")
    warmup_ratio: float = option(0.1, "fraction of the steps spent warming up (学习率预热)")
    schedule: str = option("linear", "decay after warmup: linear | cosine")
    max_grad_norm: float = option(1.0, "gradient clipping norm (梯度裁剪); 0 = off")
    patience: int = option(2, "early stopping: evaluations without dev improvement before stopping; 0 = off")
    eval_every: int = option(0, "also evaluate on dev (and keep the best) every N steps within an epoch; 0 = off")
    metric: str | None = option(None, "dev metric for early stopping; default by task/format", str)
    seed: int = option(42, "seed for init, dropout and batch order")
    device: str = option("auto", "auto | cpu | cuda")
    precision: str = option("auto", "auto (bf16/fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16")
    num_threads: int = option(0, "torch CPU threads; 0 = torch's default (1 can be faster on a busy machine)")
    # ---- outputs
    out: str | None = option(None, "output folder; default runs/finetune/<task>", str)
    predict: str | None = option(None, "after training (or with --load), write predictions for this file", str)
    load: str | None = option(None, "a fine-tuned folder (<out>/best): skip training; --predict / --evaluate", str)
    evaluate: str | None = option(None, "with --load: metrics on this labelled file (e.g. an out-of-domain dev)",
                                  str)
    compare_random: bool = option(False, "also fine-tune from random init for the same number of steps")
    compare_tfidf: bool = option(False, "also score TF-IDF (1-2-gram) + logistic regression on the same split "
                                        "(needs scikit-learn: pip install -e '.[baseline]')")
    progress: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self) -> None:
        choices = {"task": TASKS, "representation": ("cls", "pooler", "mean"), "head": ("softmax", "globalpointer"),
                   "truncate": ("head", "tail", "head+tail"), "schedule": ("linear", "cosine"),
                   "format": (None, "tianchi", "sst2", "cola", "pair", "cluener"),
                   "tokenizer": (None, "whitespace", "wordpiece")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: must be one of "
                                 f"{[a for a in allowed if a is not None]}")
        positive = ("epochs", "batch_size", "gradient_accumulation", "eval_batch_size", "max_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.max_length < 3:
            raise ValueError(f"--max-length {self.max_length}: needs room for [CLS], [SEP] and text")
        if self.train_fraction is not None and not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train-fraction {self.train_fraction}: must be in (0, 1], e.g. 0.1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"--warmup-ratio {self.warmup_ratio}: must be in [0, 1)")

    @property
    def out_dir(self) -> str:
        return self.out or f"runs/finetune/{self.task}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "FinetuneConfig":
        return dataclasses.replace(self, **changes)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true or false")


def _optional(cast):
    """Cast a CLI string, where 'none' means None (e.g. --head-lr none)."""
    def parse(text: str):
        return None if text.lower() == "none" else cast(text)
    parse.__name__ = cast.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune", description="Fine-tune a minibert encoder "
                                     "(docs/finetune.md). Flags override --config JSON, which overrides defaults.")
    parser.add_argument("--config", help="JSON file of FinetuneConfig fields")
    for f in fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        cast = f.metadata["type"]
        if cast is bool and f.default is not None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f"{f.metadata['help']} (default {f.default})")
        else:
            parser.add_argument(flag, type=_optional(_parse_bool if cast is bool else cast),
                                default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default {f.default})")
    return parser


def parse_config(argv: list[str] | None = None) -> FinetuneConfig:
    """defaults < --config JSON < flags. Unknown JSON keys are an error (a typo must not be ignored)."""
    args = vars(build_parser().parse_args(argv))
    values = {}
    config_path = args.pop("config", None)
    if config_path:
        with open(config_path, encoding="utf-8") as f:
            values = json.load(f)
        known = {f.name for f in fields(FinetuneConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"--config {config_path}: unknown field(s) {unknown}; valid fields: {sorted(known)}")
    values.update(args)
    return FinetuneConfig(**values)
