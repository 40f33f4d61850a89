"""PretrainConfig: every knob of an MLM pretraining run, as one dataclass = the CLI flags = a JSON file.

Three ways to set a field, later ones winning:
    1. the defaults below: the recipe `make pretrain` runs (a small model grown into BERT-mini, on the embedded corpus);
    2. `--config run.json`: a JSON object with any of the fields, e.g. {"lr": 5e-4, "model": {"hidden_size": 128}};
    3. command-line flags: `--lr 5e-4`, and for the model `--model.hidden_size 128` or `--set hidden_size=128`.

The model starts from BertConfig.mini (H256 L4 A4 I1024, Turc et al. 2019), vocab_size from the vocab, then the
`model` overrides apply (BertConfig.apply_overrides checks names and types).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from minibert import BertConfig
from minibert.cli import OneLineParser, cli_type
from minibert.validation import DEVICE, ConfigError, check_fields, read_json_object, rule, unknown_keys
from pretrain.budget import parse_duration
from pretrain.growth import SMALL_LAYERS, small_config


@dataclass
class PretrainConfig:
    # ---- data ----------------------------------------------------------------------------------------------------
    corpus: str | None = field(default=None, metadata=rule(str, optional=True, help=
        "corpus file: Tianchi TSV (header label\\ttext) or one document per line; default: the embedded corpus"))
    vocab: str | None = field(default=None, metadata=rule(str, optional=True, help="vocab.txt to use; default: build one from the corpus"))
    out: str = field(default="runs/pretrain", metadata=rule(str, help="run folder: metrics, checkpoint, final/ model"))
    cache_dir: str = field(default=".cache/pretrain", metadata=rule(str, help=
        "encoded corpora and the generated default corpus (safe to delete)"))
    # 64, not 128: at an equal token budget BERT-mini learned faster with shorter rows (15.8% vs 12.0% held-out
    # accuracy after 1.6M tokens); use 128-512 for a long run on real data (positions beyond max_len stay untrained).
    max_len: int = field(default=64, metadata=rule(int, ge=8, help="tokens per sequence, [CLS] and [SEP] included"))
    pack: bool = field(default=True, metadata=rule(bool, help="pack pieces densely (no padding) instead of one per row"))
    heldout_fraction: float = field(default=0.02, metadata=rule(float, gt=0, lt=0.5, help="share of DOCUMENTS held out for evaluation"))
    # 0.3 rather than BERT's 0.15: twice the predictions per forward pass, which helped in every short run we measured
    # (Wettig et al. 2022, "Should You Mask 15% in Masked Language Modeling?"). Evaluation always masks 15%.
    mask_rate: float = field(default=0.3, metadata=rule(float, gt=0, lt=1, help="share of tokens to predict: 0.15 (BERT) or 0.3"))
    # ---- model ---------------------------------------------------------------------------------------------------
    # No dropout: Cramming (Geiping & Goldstein 2022) found dropout hurts short, single-epoch pretraining. Measured
    # here: held-out MLM accuracy 0.557 without dropout vs 0.422 with hidden dropout 0.1 (same 800 steps), and the
    # step skips its dropout masks (7% of a CPU step). Fine-tuning turns it back on (finetune --encoder-dropout 0.1).
    # Init std 0.03, not BERT's 0.02: in one-thread 10-minute runs it read at least as well on all four corpora
    # measured, and on SST-2 words it left the plateau sooner (0.406 against 0.324 with seed 1). Not higher: at 0.05
    # SST-2 crawled and at 0.06 it never left the plateau (docs/pretrain_lab.md, "The levers one at a time").
    model: dict = field(default_factory=lambda: {"attention_probs_dropout_prob": 0.0, "hidden_dropout_prob": 0.0,
                                                 "initializer_range": 0.03},
                        metadata=rule(dict, help=(
        "BertConfig overrides on top of BERT-mini (the recipe's own: dropout 0, initializer_range 0.03), e.g. "
        "--model.hidden_size 128 or --set num_hidden_layers=2")))
    # ---- leaving the unigram plateau (docs/pretrain.md, "The unigram plateau"): init tricks, then growing -------------
    # On real corpora the default BERT-mini recipe stayed at the unigram accuracy for its whole run (Tianchi 0.043
    # after 300 steps with or without the tricks below). What left the plateau: a 1-layer H128 model with these
    # tricks at lr 3e-3 (0.052 at step 400, 0.128 at 800, 0.165 at 1,500 on Tianchi; bigram 0.192), so the run
    # trains that small model first and then grows it into BERT-mini (pretrain/growth.py). Whether the small model
    # needs the tricks was not isolated on Tianchi (the earlier probes saw it leave the plateau without them, later).
    position_init: str = field(default="sinusoidal", metadata=rule(
        str, "initial position embeddings: random (BERT) or sinusoidal (Vaswani et al. 2017; still learned)",
        choices=("random", "sinusoidal")))
    # 0.1, 5× BERT's word embeddings (0.02): with 0.02 the heads below put only ~0.3 of their weight on their target
    # token (the token's own embedding competes); with 0.1 and gain 2, ~0.9 (measured on a Tianchi batch at init).
    position_init_scale: float = field(default=0.1, metadata=rule(float, gt=0, help=
        "RMS of each entry of the sinusoidal position init (the word embeddings start at initializer_range, 0.03)"))
    local_attention_gain: float = field(default=2.0, metadata=rule(float, ge=0, help=
        "point layer 0's heads at the tokens -1, +1, -2, +2 away at init (sinusoidal positions only); 0 = off"))
    decoder_bias_init: str = field(default="unigram", metadata=rule(
        str, "initial MLM decoder bias: zero (BERT) or unigram (log token frequencies of the training split)",
        choices=("zero", "unigram")))
    # The small model leaves the plateau within a few hundred steps at lr 3e-3 where BERT-mini from the start stayed
    # at 0.043 (Tianchi), and its steps cost ~1/5 of BERT-mini's; a small stage that has not left the plateau grows
    # into a BERT-mini that has not either. 0.95 since 2026-11-27: with AdamW's moments carried across the growth,
    # --time-budget 10m ended at 0.386 on SST-2 words (bigram 0.371) against 0.356 at 0.8 (the small model was still
    # learning when it grew), and at 0.310 on CLUENER characters (bigram 0.269; 0.301 at 0.8 without the carry), but
    # at 0.206 on Tianchi (bigram 0.192; 0.222 at 0.8), where the small model had saturated: docs/pretrain_lab.md,
    # "With the carried moments, a longer small stage".
    growth_fraction: float = field(default=0.95, metadata=rule(float, ge=0, lt=1, help=
        "share of max_steps trained by a small model (H/2, 1 layer) before it grows into the full one; 0 = off"))
    # The small model saturates: CLUENER characters 0.315 held-out after 8,246 small steps, 0.317-0.327 after 20,400
    # (a 60-minute run). 8,000 leaves a 10-minute run on 2 CPU cores nearly as it was (4,958-8,772 small steps) and
    # gives the rest of a longer run to BERT-mini (docs/pretrain_lab.md, "Longer budgets").
    growth_max_small_steps: int = field(default=8000, metadata=rule(int, ge=0, help=
        "at most this many steps for the small model, whatever growth_fraction says; 0 = no cap"))
    # Copying heads gives a grown model 16 local heads and none that looks across the row: measured after a 9-minute
    # run, every head's attention entropy ≤ 0.34 of ln T and its mean distance ≤ 5 tokens. Freeing the copies
    # (pretrain/growth.py:free_copied_heads) left 8 heads with entropy 0.9 and distance ~21 and raised held-out
    # accuracy 0.416 -> 0.44 at the same 5,120 steps (docs/pretrain_lab.md, "Growing frees half of the heads").
    growth_free_heads: bool = field(default=True, metadata=rule(bool, help=
        "on growing, the copied half of each layer's heads starts with uniform (row-wide) attention; the function "
        "is unchanged"))
    # A copied post-LN layer changes the function: held-out accuracy fell 0.32 -> 0.22 (SST-2 words) and 0.27 -> 0.21
    # (CLUENER characters) at the moment of growing, and BERT-mini spent its steps winning that back. Near-identity
    # new layers ended higher at the same steps on all three corpora measured (one seed each): SST-2 0.324 -> 0.338,
    # CLUENER 0.278 -> 0.292, the embedded corpus 0.378 -> 0.400 (docs/pretrain_lab.md, "Growing without the drop").
    growth_stack: str = field(default="identity", metadata=rule(
        str, "the layers stacking adds: copies of the small model's layers (Gong et al. 2019) or near-identity "
        "layers (output maps zeroed)", choices=("copy", "identity")))
    # A fresh AdamW moves every weight by ~LR on its first steps, whatever its gradient: held-out accuracy fell 0.29 ->
    # 0.25 in the 60 steps after growing (SST-2 words); with the small model's moments carried over, 0.29 -> 0.28,
    # and 300 steps after growing 0.304 against 0.288 (docs/pretrain_lab.md, "Carrying AdamW's moments across the
    # growth").
    growth_carry_optimizer: bool = field(default=True, metadata=rule(bool, help=
        "on growing, the grown model's AdamW starts from the small model's moments (tiled like the weights) "
        "instead of a fresh state"))
    growth_lr: float = field(default=3e-3, metadata=rule(float, gt=0, lt=1, help="peak LR of the small model's stage"))
    # A grown stage is LONG when it runs at least long_stage_min_steps steps, and then it reads longer rows and
    # trains every weight at --lr; a SHORT one (every 10-minute run on 2 CPU cores: 183-610 steps) keeps both.
    long_stage_min_steps: int = field(default=2000, metadata=rule(int, ge=1, help=
        "a grown stage this long or longer reads rows of --grown-max-len and trains every weight at --lr"))
    # 序列长度预热 sequence-length warmup (short rows first): a long grown stage reads longer rows, with the same
    # tokens per step. Continuing the 60-minute Tianchi model for 1,200 steps (docs/pretrain_lab.md, "Longer rows for
    # a long grown stage"): 1.35x the bigram on 128-token rows against 1.30x on 64, measured over six mask draws. The
    # new positions start untrained (held-out 0.15 at 128 against 0.24 at 64) and took ~400 steps to catch up, so a
    # short grown stage keeps its rows.
    grown_max_len: int = field(default=128, metadata=rule(int, ge=8, help=
        "rows of a long grown stage (--long-stage-min-steps; batch_size·max_len/grown_max_len rows per step, the "
        "same tokens) if they split evenly over processes and micro-batches; ≤ --max-len = off"))
    # 差分学习率 differential learning rates in a short grown stage: the small model's weights end their stage
    # annealed (LR decayed to 0), and warming them up again to --lr knocks them out of that minimum faster than a
    # few hundred steps win it back. The same small-stage checkpoints grown and trained both ways
    # (docs/pretrain_lab.md, "A short grown stage"), held-out accuracy at the end of the grown stage, carried weights
    # at 1 / 0.1 x --lr: SST-2 words, 183 steps, 0.388 / 0.400; the embedded corpus, 240 steps, 0.466 / 0.473;
    # Tianchi, 480, 0.220 / 0.222.
    growth_carried_lr_scale: float = field(default=0.1, metadata=rule(float, gt=0, le=1, help=
        "in a grown stage shorter than --long-stage-min-steps, the weights the small model trained learn at this "
        "share of --lr, the layers stacking added at --lr (1 = off)"))
    # ---- optimisation --------------------------------------------------------------------------------------------
    # The GLOBAL batch, so a run means the same on 1 CPU or 8 GPUs. 32 rows of 64 tokens: at a fixed token budget,
    # more, smaller steps learned faster than fewer big ones in our short CPU runs.
    batch_size: int = field(default=32, metadata=rule(int, ge=1, help=
        "GLOBAL batch: sequences per optimizer step, summed over processes and accumulation micro-batches"))
    gradient_accumulation: int = field(default=1, metadata=rule(int, ge=1, help="micro-batches per optimizer step (梯度累积)"))
    # 1,000 = 950 cheap steps of the small model + 50 of BERT-mini (growth_fraction above), a quick run; `make
    # pretrain` uses --time-budget instead, which sets max_steps from the measured speed.
    max_steps: int = field(default=1000, metadata=rule(int, ge=1, help="optimizer steps to train (ignored with --time-budget)"))
    time_budget: str = field(default="", metadata=rule(str, help=
        "train for this long instead of --max-steps, e.g. 90s, 10m, 1h (at most 720h): the WHOLE command (set-up, evaluations, "
        "export) fits in it; max_steps is measured after a timing probe, again at the growth step, shortened if the "
        "last stage runs slower than that, and recorded in the checkpoint"))
    lr: float = field(default=1e-3, metadata=rule(float, gt=0, lt=1, help="peak learning rate"))
    warmup_fraction: float = field(default=0.06, metadata=rule(float, ge=0, le=1, help=
        "share of each stage's steps (all of max_steps without growth) for the linear LR warmup (学习率预热); 6% as "
        "Izsak et al. 2021"))
    schedule: str = field(default="linear", metadata=rule(str, "decay after warmup", choices=("linear", "cosine")))
    weight_decay: float = field(default=0.01, metadata=rule(float, ge=0, help="AdamW weight decay on weight matrices (权重衰减)"))
    adam_beta2: float = field(default=0.98, metadata=rule(float, gt=0, lt=1, help="AdamW beta2; 0.98 as RoBERTa for large-LR stability"))
    grad_clip: float = field(default=1.0, metadata=rule(float, ge=0, help="clip the global gradient norm (梯度裁剪); 0 = off"))
    # ---- evaluation, logging, checkpoints ------------------------------------------------------------------------
    eval_every: int = field(default=200, metadata=rule(int, ge=1, help="steps between held-out evaluations"))
    eval_sequences: int = field(default=512, metadata=rule(int, ge=1, help="held-out sequences per evaluation"))
    log_every: int = field(default=10, metadata=rule(int, ge=1, help="steps between metrics.jsonl lines"))
    checkpoint_every: int = field(default=200, metadata=rule(int, ge=1, help="steps between checkpoints (断点续训)"))
    # ---- runtime -------------------------------------------------------------------------------------------------
    seed: int = field(default=0, metadata=rule(int, ge=0, le=2**32 - 1,  # numpy's seed range
                                               help="seeds model init, data order, masking and dropout"))
    device: str = field(default="auto", metadata=rule(str, **DEVICE, help="auto (CUDA if available), cpu, cuda, cuda:N, mps"))
    precision: str = field(default="auto", metadata=rule(
        str, "auto = bf16 (or fp16) autocast on CUDA, fp32 on CPU", choices=("auto", "fp32", "bf16", "fp16")))
    compile: bool = field(default=False, metadata=rule(bool, help="torch.compile the model"))
    num_threads: int = field(default=0, metadata=rule(int, ge=0, help="torch CPU threads; 0 = torch's default"))
    progress: bool = field(default=True, metadata=rule(bool, help="show the tqdm progress bar (--no-progress for "
                                                                  "logs; the evaluation lines print either way)"))
    matmul_peak_gflops: float = field(default=0.0, metadata=rule(float, ge=0, help=
        "MFU denominator per process in GFLOP/s (e.g. a datasheet peak); 0 = measure a matmul at start"))
    init: str | None = field(default=None, metadata=rule(str, optional=True, help=
        "start a NEW run from these weights (a model folder such as runs/pretrain/final, or a run's checkpoint.pt) "
        "with their vocab; fresh optimizer and schedule"))
    resume: bool = field(default=False, metadata=rule(bool, help="continue from <out>/checkpoint.pt exactly"))
    overwrite: bool = field(default=False, metadata=rule(bool, help=
        "start over in an --out that holds a run, finished or not (its files are replaced)"))
    export_hf: bool = field(default=False, metadata=rule(bool, help="also write <out>/final_hf/ in the Hugging Face layout"))
    simulate_crash_at_step: int = field(default=0, metadata=rule(int, ge=0, help=
        "testing only: SIGKILL this process in the middle of this step, to prove --resume continues exactly"))

    def __post_init__(self) -> None:
        check_fields(self, label=flag_name)  # every field's declared type and range (minibert/validation.py)
        if self.time_budget:
            parse_duration(self.time_budget)  # "--time-budget=ten" fails now, in one line
        if self.resume and self.overwrite:  # one keeps the run in --out, the other replaces it: never guess which
            raise ConfigError("--resume continues the run in --out and --overwrite starts it over: pass one of them")
        if self.local_attention_gain and self.position_init != "sinusoidal":
            raise ConfigError(f"--local-attention-gain={self.local_attention_gain} needs --position-init sinusoidal;"
                              " pass --local-attention-gain 0 to keep random positions")
        if "vocab_size" in self.model:
            raise ConfigError("model override vocab_size: it comes from the vocab; pass --vocab instead")
        shape = self.bert_config(vocab_size=100)  # fails now on a bad override
        self.check_shape_fits_recipe(shape)
        positions = shape.max_position_embeddings
        if self.max_len > positions:
            raise ConfigError(f"--max-len={self.max_len} exceeds max_position_embeddings={positions}; lower "
                              f"--max-len or add --model.max_position_embeddings {self.max_len}")

    def check_shape_fits_recipe(self, shape: BertConfig) -> None:
        """Shapes BertConfig accepts but two recipe steps cannot use; refused here, not at the step itself (the
        growth step comes after ~95% of the run)."""
        head_size = shape.hidden_size // shape.num_attention_heads
        if self.local_attention_gain and head_size % 2:  # warm_start.init_local_attention rotates coordinate pairs
            raise ConfigError(f"--local-attention-gain={self.local_attention_gain} rotates pairs of coordinates, so "
                              f"it needs an even head size, not hidden_size {shape.hidden_size} / num_attention_heads "
                              f"{shape.num_attention_heads} = {head_size}; change them, or pass "
                              f"--local-attention-gain 0")
        if self.growth_fraction and self.init is None and not self.resume:
            small_config(shape, 1, SMALL_LAYERS)  # growth.py's own check, now: H, A and I must halve

    def bert_config(self, vocab_size: int) -> BertConfig:
        """BERT-mini for `vocab_size`, with the `model` overrides applied (typed values, checked by BertConfig)."""
        try:
            return BertConfig.mini(vocab_size).replace(**self.model)
        except ConfigError as error:
            raise ConfigError(f"model override: {error}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str | None = None) -> "PretrainConfig":
        """Build from JSON-like values, naming `source` (e.g. the --config file) in any error."""
        unknown_keys(cls, values, source or "config")
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}" if source else str(error)) from None


def flag_name(name: str) -> str:
    """The command-line spelling of a field: gradient_accumulation -> --gradient-accumulation."""
    return "--" + name.replace("_", "-")


class ModelOverride(argparse.Action):
    """`--model.hidden_size 128` and `--set hidden_size=128` both append "hidden_size=128" to one list, so the
    flag given LAST wins, whichever spelling it uses."""

    def __call__(self, parser, namespace, value, option_string=None):
        field_name = option_string.removeprefix("--model.") if option_string.startswith("--model.") else None
        overrides = getattr(namespace, "model_set", [])
        setattr(namespace, "model_set", overrides + [f"{field_name}={value}" if field_name else value])



def build_parser() -> argparse.ArgumentParser:
    """One flag per PretrainConfig field (help text from the field), plus --model.<field> per BertConfig field."""
    model_fields = [f.name for f in fields(BertConfig) if f.name != "vocab_size"]
    parser = OneLineParser(
        prog="python -m pretrain", description="MLM pretraining of a minibert BERT (see docs/pretrain.md).",
        epilog=f"model: --model.FIELD VALUE (or --set FIELD=VALUE) for FIELD in {', '.join(model_fields)}",
        argument_default=argparse.SUPPRESS)  # unset flags stay out of the namespace: the --config file keeps them
    parser.add_argument("--config", help="JSON file with PretrainConfig fields; flags given here override it")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback too")
    for f in fields(PretrainConfig):
        field_rule = f.metadata["rule"]
        shown = "'' (off)" if f.default == "" else f.default  # an empty default, e.g. --time-budget's, shown as such
        default = "" if f.name == "model" else f" (default {shown})"  # the field's, as --help promises
        # argparse %-formats help text: a literal % (as in "6% as Izsak et al.") must be doubled
        flag, meta = flag_name(f.name), {"help": (f.metadata["help"] + default).replace("%", "%%")}
        if field_rule.choices:
            meta["choices"] = field_rule.choices
        if f.name == "model":
            parser.add_argument("--set", dest="model_set", action=ModelOverride, metavar="FIELD=VALUE", **meta)
        elif f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, **meta)
        else:
            parser.add_argument(flag, dest=f.name, type=cli_type(field_rule), metavar=f.name.upper(), **meta)
    for name in model_fields:
        parser.add_argument(f"--model.{name}", dest="model_set", action=ModelOverride, help=argparse.SUPPRESS)
    return parser


def parse_config(argv: list[str] | None = None) -> PretrainConfig:
    """Defaults, then --config JSON, then flags. Raises ConfigError/FileNotFoundError with one line."""
    args = vars(build_parser().parse_args(argv))
    args.pop("debug", None)  # read by minibert/cli.py, not a config field
    values: dict = {}
    source = None
    if "config" in args:
        path = Path(args.pop("config"))
        source = f"--config {path}"
        values = read_json_object(path, source, "pass a JSON file of PretrainConfig fields")
        if not isinstance(values.get("model", {}), dict):
            raise ConfigError(f"{source}: field \"model\" must be a JSON object of BertConfig fields")
    model = {**PretrainConfig().model, **values.get("model", {})}  # JSON model overrides add to the defaults
    for item in args.pop("model_set", []):
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set hidden_size=128")
        key, value = BertConfig.parse_override(item)  # cast by BertConfig's declared rule, like a JSON value
        model[key] = value
    values.update(args)
    values["model"] = model
    return PretrainConfig.from_dict(values, source=source)
