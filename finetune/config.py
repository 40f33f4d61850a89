"""FinetuneConfig: every knob of a fine-tuning run in one dataclass, with JSON files and CLI overrides.

Precedence: dataclass defaults < `--config run.json` < command-line flags. Each field becomes a flag with the
same name (`gradient_accumulation` -> `--gradient-accumulation`); booleans get `--flag / --no-flag`. The run
writes the final config to `<out>/finetune_config.json`, so `--config` can replay it exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields

from minibert.cli import OneLineParser, cli_type
from minibert.validation import DEVICE, ConfigError, check_fields, read_json_object, rule, unknown_keys

from .features import TRUNCATE_MODES

TASKS = ("cls", "pair", "ner")


def option(default, help: str, kind: type | None = None, optional: bool = False, **limits):
    """A dataclass field that declares its CLI help, type and allowed values ONCE (minibert/validation.py).

    Args:
        default: the default value; its type is the field's type unless `kind` is given (needed for None).
        limits: gt/ge/lt/le bounds, `choices`, or `pattern`; a None default makes the field optional.
    """
    return field(default=default, metadata=rule(kind or type(default), help, optional=optional or default is None,
                                                **limits))


FORMATS = ("tianchi", "sst2", "cola", "pair", "cluener")


@dataclass
class FinetuneConfig:
    # ---- task and data
    task: str = option("cls", "cls (one text), pair (two texts), ner (entities)", choices=TASKS)
    data: str | None = option(None, "folder holding train.tsv + dev.tsv (train.json + dev.json for ner)", str)
    train: str | None = option(None, "training file; default: --data's, else the task's embedded data", str)
    dev: str | None = option(None, "dev file; default: the task's embedded data", str)
    dev_fraction: float | None = option(None, "no dev file? hold out this share of --train as dev, e.g. 0.1 "
                                              "(stratified by label; the same split for every --seed)", float,
                                        gt=0, lt=1)
    format: str | None = option(None, "tianchi|sst2|cola|pair|cluener (finetune/data.py); default by task", str,
                                choices=FORMATS)
    text_column: int | None = option(None, "override the format's text column (0-based)", int, ge=0)
    text_b_column: int | None = option(None, "override the format's segment-B column (pairs)", int, ge=0)
    label_column: int | None = option(None, "override the format's label column", int, ge=0)
    header: bool | None = option(None, "override whether the TSV has a header line", bool)
    tokenizer: str | None = option(None, "whitespace|wordpiece; default: the format's", str,
                                   choices=("whitespace", "wordpiece"))
    max_train_examples: int | None = option(None, "use only the first N training examples", int, ge=1)
    train_fraction: float | None = option(None, "few labels: a stratified (by label), seeded share of the training "
                                          "examples, e.g. 0.1; the random-init and TF-IDF rows get the same", float,
                                          gt=0, le=1)
    # ---- model
    init: str = option("auto", "pretrained folder (config.json, model.safetensors, vocab.txt), 'random', or "
                               "'auto' (runs/pretrain/final for cls/pair, random for ner; see __main__.py)")
    vocab: str | None = option(None, "vocab.txt (or tokenizer.json); default: the one in --init", str)
    model_config: str | None = option(None, "config.json for --init random; default BertConfig.mini", str)
    initializer_range: float | None = option(None, "--init random: the init std of the encoder and head; default: "
                                             "--model-config's, else BERT's 0.02 (--compare-random's control "
                                             "always starts at BERT's 0.02)", float, gt=0)
    num_labels: int | None = option(None, "number of classes; default: max train label + 1", int, ge=1)
    multi_label: bool = option(False, "several labels per text: BCE loss, micro/macro-F1")
    threshold: float = option(0.5, "multi-label decision threshold on sigmoid(logit)", gt=0, lt=1)
    class_weight: str = option("none", "cls: weight each class's loss terms: none | balanced (n / (C·n_c), as "
                               "scikit-learn's; lifts the rare classes macro-F1 counts fully); random init gets the "
                               "same, the TF-IDF row chooses its own by CV", choices=("none", "balanced"))
    representation: str = option("cls", "sentence vector: cls | pooler | mean (only a pooler classifier exports to "
                                        "transformers' BertForSequenceClassification)",
                                 choices=("cls", "pooler", "mean"))
    head: str = option("softmax", "ner head: softmax (BIO tags) | globalpointer (span scores)",
                       choices=("softmax", "globalpointer"))
    overlapping_spans: str | None = option(None, "ner: overlapping/nested spans in the data: refuse | drop (keep "
                                           "the first of each overlap); default refuse for the softmax head, "
                                           "globalpointer keeps them all", str, choices=("refuse", "drop"))
    globalpointer_head_size: int = option(64, "GlobalPointer query/key width D", ge=1)
    dropout: float | None = option(None, "dropout before the classifier; default the encoder's", float, ge=0, lt=1)
    encoder_dropout: float | None = option(None, "dropout inside the encoder (hidden and attention), e.g. BERT's "
                                           "0.1; default: the checkpoint's config (make pretrain's models say 0: "
                                           "they pretrain without dropout, as Cramming does)", float, ge=0, lt=1)
    mlm_weight: float = option(0.0, "auxiliary MLM loss while fine-tuning (辅助 MLM 损失; GPT-1's auxiliary LM "
                                    "objective): loss = task loss + λ · MLM loss on a 15%-masked copy of each batch, "
                                    "through the checkpoint's MLM head; keeps what pretraining learnt when labels "
                                    "are few (finetune/auxiliary.py); 0 = off", ge=0)
    max_length: int = option(256, "tokens per input including [CLS]/[SEP]", ge=3)
    truncate: str = option("head+tail", "long texts: head | tail | head+tail keep one window; windows reads all of "
                           "it, in max-length windows whose log-probabilities are averaged (classification)",
                           choices=TRUNCATE_MODES)
    hierarchical_positions: bool = option(False, "extend the position table past its limit (α=0.4) when "
                                                 "max_length exceeds it")
    # ---- optimisation
    epochs: int = option(3, "passes over the training data", ge=1)
    max_steps: int | None = option(None, "stop after this many optimizer steps (equal-budget comparisons)", int,
                                   ge=1)
    schedule_steps: int | None = option(None, "length of the LR schedule in optimizer steps (default: the run's "
                                        "own); --compare-random gives random init the pretrained run's, so a run "
                                        "that stopped early is compared on the same LR curve", int, ge=1)
    batch_size: int = option(32, "examples per micro-batch", ge=1)
    gradient_accumulation: int = option(1, "micro-batches per optimizer step (梯度累积)", ge=1)
    eval_batch_size: int = option(64, "examples per evaluation batch", ge=1)
    lr: float = option(5e-5, "peak learning rate of the encoder (with --layer-decay d, layer i of L gets "
                             "lr * d^(L-i))", gt=0, lt=1)
    head_lr: float | None = option(1e-3, "peak learning rate of the task head (差分学习率); none = --lr", float,
                                   gt=0, lt=1, optional=True)
    layer_decay: float | None = option(None, "layer-wise lr decay factor, e.g. 0.8 (none = off)", float, gt=0, le=1)
    weight_decay: float = option(0.01, "AdamW decoupled weight decay (权重衰减), not on biases/LayerNorm", ge=0)
    warmup_ratio: float = option(0.1, "fraction of the steps spent warming up (学习率预热)", ge=0, lt=1)
    schedule: str = option("linear", "decay after warmup: linear | cosine", choices=("linear", "cosine"))
    max_grad_norm: float = option(1.0, "gradient clipping norm (梯度裁剪); 0 = off", ge=0)
    patience: int = option(2, "early stopping: evaluations without dev improvement before stopping; 0 = off", ge=0)
    eval_every: int = option(0, "also evaluate on dev (and keep the best) every N steps within an epoch; 0 = off",
                             ge=0)
    metric: str | None = option(None, "dev metric for early stopping; default by task/format", str)
    seed: int = option(42, "seed for init, dropout and batch order", ge=0, le=2**32 - 1)  # numpy's seed range
    device: str = option("auto", "auto (CUDA if available) | cpu | cuda | cuda:N | mps", **DEVICE)
    precision: str = option("auto", "auto (bf16/fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16",
                            choices=("auto", "fp32", "bf16", "fp16"))
    num_threads: int = option(0, "torch CPU threads; 0 = torch's default (1 can be faster on a busy machine)", ge=0)
    # ---- outputs
    out: str | None = option(None, "output folder; default runs/finetune/<task>", str)
    predict: str | None = option(None, "after training (or with --load), write predictions for this file", str)
    load: str | None = option(None, "a fine-tuned folder (<out>/best): skip training; --predict / --evaluate", str)
    evaluate: str | None = option(None, "with --load: metrics on this labelled file (e.g. an out-of-domain dev)",
                                  str)
    overwrite: bool = option(False, "replace the run already in --out (its best/ model and metrics); without it "
                                    "such a run is refused, so a second `make finetune` cannot delete the first")
    compare_random: bool = option(False, "also fine-tune from random init for the same number of steps")
    compare_tfidf: bool = option(False, "also score TF-IDF + logistic regression (n-grams, C and class weights "
                                        "tuned by CV on train) on the same split (needs scikit-learn: pip install "
                                        "-e '.[baseline]')")
    progress: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self) -> None:
        check_fields(self, label=lambda name: "--" + name.replace("_", "-"))  # each field's declared rule

    @property
    def out_dir(self) -> str:
        return self.out or f"runs/finetune/{self.task}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "FinetuneConfig":
        return dataclasses.replace(self, **changes)



FINETUNE_DESCRIPTION = "Fine-tune a minibert encoder (docs/finetune.md)."


def build_parser(prog: str = "python -m finetune", description: str = FINETUNE_DESCRIPTION) -> argparse.ArgumentParser:
    """The flags of FinetuneConfig; `prog` and `description` let another command that takes them (finetune.probe)
    introduce itself."""
    parser = OneLineParser(prog=prog, description=f"{description} Flags override --config JSON, which overrides "
                                                  f"defaults.")
    parser.add_argument("--config", help="JSON file of FinetuneConfig fields")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the Python traceback too")
    for f in fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        field_rule = f.metadata["rule"]
        if field_rule.kind is bool and f.default is not None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f"{f.metadata['help']} (default {f.default})".replace("%", "%%"))
        else:
            parser.add_argument(flag, type=cli_type(field_rule), default=argparse.SUPPRESS,
                                help=f"{f.metadata['help']} (default {f.default})".replace("%", "%%"))
    return parser


def flags_set(cfg: FinetuneConfig, names) -> list[str]:
    """The flags among `names` (field names) that `cfg` sets away from their defaults, as `--flag-name`s: the
    settings a command would ignore, named in its refusal."""
    defaults = FinetuneConfig()
    return [f"--{name.replace('_', '-')}" for name in names if getattr(cfg, name) != getattr(defaults, name)]


def parse_config(argv: list[str] | None = None, **parser_text) -> FinetuneConfig:
    """defaults < --config JSON < flags. Unknown JSON keys are an error (a typo must not be ignored).
    parser_text: build_parser's prog and description, for --help."""
    args = vars(build_parser(**parser_text).parse_args(argv))
    args.pop("debug", None)
    values = {}
    config_path = args.pop("config", None)
    if config_path:
        values = read_json_object(config_path, f"--config {config_path}",
                                  "pass a JSON file of FinetuneConfig fields (e.g. a finetune_config.json a run wrote)")
        unknown_keys(FinetuneConfig, values, f"--config {config_path}")
        try:
            FinetuneConfig(**values)  # the file alone must be valid: its errors name the file
        except ConfigError as error:
            raise ConfigError(f"--config {config_path}: {error}") from None
    values.update(args)
    return FinetuneConfig(**values)
