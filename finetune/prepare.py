"""Everything before the first training step: read and validate the data, pick the tokenizer, build the model
and load the pretrained encoder into it (minibert.checkpoint.load_pretrained reads minibert, Hugging Face and
Google TF checkpoints alike). finetune/train.py then runs the loop on what `prepare` returns."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from minibert import BertConfig
from minibert.checkpoint import CheckpointError, load_pretrained
from minibert.checkpoint.pretrained import json_object
from minibert.positions import extend_positions_hierarchically
from minibert.tokenizers import WhitespaceTokenizer
from pretrain.data import MAX_UNKNOWN_SHARE  # one rule for "this vocab does not fit this text", both loops

from . import data, ner_data
from .auxiliary import AuxiliaryMLM, build_auxiliary_mlm
from .baseline import stratified_dev_split, stratified_subset
from .config import FinetuneConfig
from .features import Feature, ner_cut
from .tasks import (DEFAULT_FORMAT, TaskSpec, balanced_class_weights, build_model, compute_metrics, encode, gold_labels,
                    load_tokenizer, make_spec, model_class, read_examples)


@dataclass
class Prepared:
    spec: TaskSpec
    model: torch.nn.Module
    tokenizer: object  # a minibert tokenizer
    vocab_path: Path  # saved next to the fine-tuned model
    train_features: list[Feature]
    dev_features: list[Feature]
    dev_examples: list  # for the gold labels (NER gold comes from the file, not the truncated features)
    train_examples: list  # the (sub)set trained on, untruncated: what the TF-IDF baseline fits
    notes: list[str]  # warnings and remarks to print before training
    auxiliary: AuxiliaryMLM | None = None  # --mlm-weight's loss (finetune/auxiliary.py)


def build_vocab(cfg: FinetuneConfig, format_name: str, examples: list, out_dir: Path) -> Path:
    """--init random without --vocab: a whitespace vocabulary from the training texts (characters for NER)."""
    if (cfg.tokenizer or data.FORMATS[format_name]["tokenizer"]) != "whitespace":
        raise ValueError("--init random with a WordPiece tokenizer needs --vocab (a vocab.txt or tokenizer.json)")
    if format_name == "cluener":
        lines = [" ".join(e.text) for e in examples]  # character-level: every character is a token
    else:
        lines = [e.text + (" " + e.text_b if e.text_b else "") for e in examples]
    tokenizer = WhitespaceTokenizer.build(lines)
    tokenizer.save(out_dir)
    return out_dir / "vocab.txt"


def check_same_vocab(given: Path, own: Path) -> None:
    """--vocab must list the same tokens, in the same order, as the checkpoint's own vocab: row i of the embedding
    table means token i of the vocab it was trained with, so another order silently scrambles every input."""
    if given.suffix != ".txt" or own.suffix != ".txt" or given.read_bytes() == own.read_bytes():
        return
    mine, theirs = given.read_text(encoding="utf-8").split("\n"), own.read_text(encoding="utf-8").split("\n")
    index = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
    raise ValueError(f"--vocab {given} differs from the vocab of --init ({own}) at line {index + 1}: token ids would "
                     f"name other tokens than the model learnt; leave --vocab out to use the checkpoint's")


def unknown_token_check(features: list[Feature], tokenizer, vocab_path: Path, path, what: str = "training",
                        fix: str = "pass the --init (or --vocab) pretrained on this kind of text, or --tokenizer "
                                   "wordpiece for words") -> list[str]:
    """A vocab that does not fit the data turns its tokens into [UNK], and training on them runs without a word
    of complaint to a chance-level score (predicting on them, to one guess for every row). Refuse when most tokens
    are unknown; warn when many are."""
    ids = np.concatenate([f.input_ids for f in features])
    text = ids[~np.isin(ids, [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id])]  # the text's own tokens
    share = float(np.mean(text == tokenizer.unk_id)) if len(text) else 0.0
    if share > MAX_UNKNOWN_SHARE:
        raise data.DataError(f"{path}: {share:.0%} of the {what} tokens are [UNK] under {vocab_path} (at most "
                             f"{MAX_UNKNOWN_SHARE:.0%}); {fix}")
    return [f"warning: {path}: {share:.0%} of the {what} tokens are [UNK] under {vocab_path} (refused above "
            f"{MAX_UNKNOWN_SHARE:.0%}); if the text is meant to fit this vocab, {fix}"] if share > 0.05 else []


def untrained_positions_warning(max_length: int, init: Path) -> list[str]:
    """A pretraining run's encoder has only trained the positions of its rows (make pretrain: 64, or 128 after a
    long grown stage; its results.json says which): fine-tuned on longer inputs, the rest start untrained."""
    record = (init if init.is_dir() else init.parent).parent / "results.json"
    trained = json_object(record).get("eval_max_len")  # {} outside a pretraining run's output: nothing to say
    if not isinstance(trained, int) or max_length <= trained:
        return []
    return [f"warning: --max-length {max_length}, but {init} was pretrained on rows of {trained} tokens ({record}): "
            f"positions {trained}-{max_length - 1} start untrained; --max-length {trained} (with --truncate windows "
            f"for classification, to read whole documents) uses only positions it has learnt"]


def ner_cut_warning(features, examples, max_length: int, path, lost_entities: str | None) -> list[str]:
    """A warning when --max-length cut NER texts (features.ner_cut); lost_entities: what happens to the entities
    past the cut (None for unlabelled --predict input)."""
    cut, lost, line = ner_cut(features, examples)
    if not cut:
        return []
    entities = f", and {lost} entities there are {lost_entities}" if lost and lost_entities else ""
    return [f"warning: {path}: {cut} of {len(examples)} texts are longer than --max-length {max_length} allows (the "
            f"first on line {line}): their characters past it are not tagged{entities}; raise --max-length (past the "
            f"model's positions with --hierarchical-positions) to read them whole"]


def prepare(cfg: FinetuneConfig) -> Prepared:
    """Read, validate and encode the data; build the model and load the pretrained encoder."""
    format_name = cfg.format or DEFAULT_FORMAT[cfg.task]
    pairs = data.FORMATS[format_name].get("text_b_column") is not None  # were cut longest-first, windows ignored
    if cfg.truncate == "windows" and (cfg.task != "cls" or cfg.multi_label or pairs):
        raise ValueError(f"--truncate windows: averages the windows of ONE text for single-label classification; "
                         f"got --task {cfg.task}{' --multi-label' if cfg.multi_label else ''}"
                         f"{f' --format {format_name} (sentence pairs)' if pairs else ''}: use --truncate "
                         f"head, tail or head+tail")
    if cfg.task == "ner" and format_name != "cluener":
        raise ValueError(f"--task ner reads CLUENER JSON lines; got --format {format_name}")
    notes: list[str] = []
    train_examples = read_examples(cfg, format_name, cfg.train)
    if cfg.dev_fraction:  # one labelled file: dev is held out of it first, so no subset below can reach it
        train_examples, dev_examples = stratified_dev_split(train_examples, cfg.dev_fraction)
        if not dev_examples:
            raise ValueError(f"--dev-fraction {cfg.dev_fraction}: {cfg.train} holds {len(train_examples)} "
                             f"example(s), too few to hold any out; pass a --dev file or a larger --train")
        notes.append(f"dev: {len(dev_examples):,} examples held out of {cfg.train} (--dev-fraction "
                     f"{cfg.dev_fraction}, stratified), {len(train_examples):,} left for training")
    else:
        dev_examples = read_examples(cfg, format_name, cfg.dev)
    if cfg.predict:  # read now, as predicting will: a bad file must fail before the training, not after it
        read_examples(cfg, format_name, cfg.predict, with_labels=False)
    if cfg.max_train_examples:
        train_examples = train_examples[:cfg.max_train_examples]
    if cfg.train_fraction:  # few labels: the same seeded, stratified subset for every row of the comparison
        train_examples = stratified_subset(train_examples, cfg.train_fraction, cfg.seed)
    spec, spec_notes = make_spec(cfg, format_name, train_examples, dev_examples)
    notes += spec_notes
    # A --metric typo must fail now, not after the first epoch: score two dev examples against themselves.
    sample = gold_labels(spec, dev_examples[:2])
    metrics = [k for k, v in compute_metrics(spec, sample, sample).items() if isinstance(v, float)]
    if spec.metric not in metrics:
        raise ValueError(f"--metric {spec.metric!r}: not a metric of --task {cfg.task}; choose one of {sorted(metrics)}")
    if cfg.task == "ner":  # BIO tags cannot hold nested spans: refuse them, or drop them when asked to
        policy = cfg.overlapping_spans or ("refuse" if cfg.head == "softmax" else "keep")
        train_examples, note = ner_data.resolve_overlapping_spans(train_examples, policy, cfg.train)
        notes += [note] if note else []
        if cfg.head == "softmax":  # dev keeps its overlaps: gold spans one tag per character can never predict
            kept, _ = ner_data.resolve_overlapping_spans(dev_examples, "drop", cfg.dev)
            missed = sum(len(e.entities) for e in dev_examples) - sum(len(e.entities) for e in kept)
            notes += [f"note: {cfg.dev or cfg.train}: {missed} dev entity span(s) overlap another; the softmax (BIO) "
                      f"head cannot predict them, so they count as missed (--head globalpointer can)"] if missed else []

    out_dir = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)  # the head's (and, for --init random, the encoder's) initial weights
    dropout = ({} if cfg.encoder_dropout is None else
               {"hidden_dropout_prob": cfg.encoder_dropout, "attention_probs_dropout_prob": cfg.encoder_dropout})
    if cfg.init == "random":
        vocab_path = Path(cfg.vocab) if cfg.vocab else build_vocab(cfg, format_name, train_examples, out_dir)
        tokenizer = load_tokenizer(cfg.tokenizer or data.FORMATS[format_name]["tokenizer"], vocab_path)
        init_std = {} if cfg.initializer_range is None else {"initializer_range": cfg.initializer_range}
        model_config = (BertConfig.from_json(cfg.model_config) if cfg.model_config
                        else BertConfig.mini(tokenizer.vocab_size)).replace(**dropout, **init_std)
        model = build_model(cfg, spec, model_config)
    else:
        if cfg.model_config:  # the checkpoint's own config.json decides the shape
            raise ValueError(f"--model-config {cfg.model_config}: the shape of a model trained from scratch, for "
                             f"--init random; --init {cfg.init} brings its own config.json, so drop it")
        if cfg.initializer_range is not None:  # its weights are trained; a new head starts at its config's std
            raise ValueError(f"--initializer-range {cfg.initializer_range}: the init of a model trained from scratch, "
                             f"for --init random; --init {cfg.init} is already trained, so drop it")
        # minibert, Hugging Face or Google TF checkpoints; the coverage report says what was loaded and what
        # (the task head, maybe the pooler) starts from scratch.
        cls, kwargs = model_class(cfg, spec)
        loaded = load_pretrained(cls, cfg.init, config_overrides=dropout, **kwargs)
        model, model_config = loaded.model, loaded.config
        notes.append(loaded.report.format())
        if any(name.startswith("bert.pooler.") for name, _ in loaded.report.fresh):  # an MLM-only encoder's: new,
            spec.head_prefixes += ("bert.pooler",)  # like the head, so it learns at --head-lr, not the encoder's LR
        vocab_path = Path(cfg.vocab) if cfg.vocab else loaded.source.vocab_path
        if vocab_path is None:
            raise CheckpointError(f"--init {cfg.init}: no vocab.txt or tokenizer.json beside the checkpoint; copy "
                                  f"the vocabulary it was trained with there, or pass --vocab")
        if cfg.vocab and loaded.source.vocab_path is not None:
            check_same_vocab(Path(cfg.vocab), loaded.source.vocab_path)
        tokenizer = load_tokenizer(cfg.tokenizer or data.FORMATS[format_name]["tokenizer"], vocab_path)
        notes += untrained_positions_warning(cfg.max_length, Path(cfg.init))
        if cfg.vocab and tokenizer.vocab_size != model_config.vocab_size:
            raise ValueError(f"--vocab {cfg.vocab} has {tokenizer.vocab_size} entries but the model at --init has "
                             f"{model_config.vocab_size} embedding rows; use the vocab.txt it was pretrained with")
    if tokenizer.vocab_size > model_config.vocab_size and cfg.init == "random":
        raise ValueError(f"--model-config {cfg.model_config}: vocab_size {model_config.vocab_size}, but the vocab "
                         f"{vocab_path} has {tokenizer.vocab_size} entries; raise vocab_size to at least that, or "
                         f"leave --model-config out (the default shape is sized to the vocab)")
    if tokenizer.vocab_size > model_config.vocab_size:
        raise ValueError(f"vocab {vocab_path} has {tokenizer.vocab_size} entries but the model's vocab_size is "
                         f"{model_config.vocab_size}; use the vocab.txt the model was pretrained with")
    if cfg.task == "pair" and model_config.type_vocab_size < 2:  # segment B is token type 1 (分段 embeddings)
        source = f"--model-config {cfg.model_config}" if cfg.init == "random" else f"--init {cfg.init}"
        raise ValueError(f"{source}: type_vocab_size {model_config.type_vocab_size}, but --task pair marks segment "
                         f"B with token type 1; use a model with type_vocab_size 2 (BERT's), or --task cls")
    limit = model_config.max_position_embeddings
    if cfg.max_length > limit:
        if not cfg.hierarchical_positions:
            raise ValueError(f"--max-length {cfg.max_length} exceeds the model's {limit} positions; lower it, or "
                             f"pass --hierarchical-positions to extend the table (up to {limit * limit})")
        extend_positions_hierarchically(model, cfg.max_length)
        notes.append(f"hierarchical positions: {limit} trained -> {cfg.max_length} (alpha=0.4)")

    train_features = encode(cfg, spec, tokenizer, train_examples)
    dev_features = encode(cfg, spec, tokenizer, dev_examples)
    if cfg.task == "ner":  # characters past --max-length are never tagged: say how many, not nothing
        notes += ner_cut_warning(train_features, train_examples, cfg.max_length, cfg.train, "dropped from training")
        notes += ner_cut_warning(dev_features, dev_examples, cfg.max_length, cfg.dev or cfg.train, "counted as missed")
    notes += unknown_token_check(train_features, tokenizer, vocab_path, cfg.train)
    if spec.class_weights is not None and cfg.truncate == "windows":
        # The loss sums over WINDOWS: weights counted over documents would give a class of long documents more
        # total weight (2.7x between two Tianchi classes). Counted over the windows, every class weighs the same.
        weights = balanced_class_weights([f.label for f in train_features], spec.num_labels)
        spec = replace(spec, class_weights=weights)
        model.class_weights = torch.tensor(weights, dtype=torch.float32)  # the head's (non-persistent) buffer
    auxiliary, auxiliary_notes = build_auxiliary_mlm(cfg.mlm_weight, cfg.init, model, tokenizer, cfg.seed)
    return Prepared(spec, model, tokenizer, vocab_path, train_features, dev_features, dev_examples, train_examples,
                    notes + auxiliary_notes, auxiliary)
