"""What differs between tasks, in one place: the data reader, the head, the labels, the metric, the predictions.

    task  head                           label_kind  default metric                     predictions file
    cls   BertForSequenceClassification  class       macro_f1 (mcc: cola, acc: sst2)    CSV, `label` column
    cls   ... --multi-label              multi       micro_f1                           CSV, `label` = "0,3"
    pair  BertForSequenceClassification  class       accuracy                           CSV, `label` column
    ner   BertForTokenClassification     tags        f1 (entity level)                  CLUENER JSON lines
    ner   BertForGlobalPointerNER        spans       f1 (entity level)                  CLUENER JSON lines

finetune/train.py (the loop) only calls what is defined here; it never branches on the task.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minibert.heads import BertForGlobalPointerNER, BertForSequenceClassification, BertForTokenClassification
from minibert.tokenizers import WhitespaceTokenizer, WordPieceTokenizer

from . import data, features, ner_data
from .config import FinetuneConfig, flags_set
from .metrics import classification_metrics, entity_metrics, multilabel_metrics

DEFAULT_METRIC = {"tianchi": "macro_f1", "cola": "mcc", "sst2": "accuracy", "pair": "accuracy", "cluener": "f1"}
DEFAULT_FORMAT = {"cls": "tianchi", "pair": "pair", "ner": "cluener"}


@dataclass
class TaskSpec:
    """Everything the loop needs to know about the task, and what `finetune.json` stores to rebuild it."""
    task: str  # cls | pair | ner
    format: str  # a data.FORMATS key
    label_kind: str  # class | multi | tags | spans (features.collate)
    num_labels: int  # classes, BIO tags, or entity types
    label_names: list[str]  # class IDs as strings, BIO tag names, or entity types
    metric: str  # dev metric that picks the best epoch (higher is better)
    head_prefixes: tuple[str, ...]  # parameter-name prefixes that get --head-lr
    class_weights: list[float] | None = None  # [C] loss weight per class (--class-weight balanced), else None

    def to_dict(self) -> dict:
        return {**self.__dict__, "head_prefixes": list(self.head_prefixes)}


# Classes that may appear in no example: a --train-fraction subset can miss a few, but 100,000 unseen classes are a
# stray label (an ID where a class belongs), whose head and confusion matrix would take the machine's memory
MAX_UNSEEN_CLASSES = 100


def columns_of(cfg: FinetuneConfig, format_name: str) -> dict:
    """The format's column rules with the CLI overrides applied."""
    columns = dict(data.FORMATS[format_name])
    for key in ("text_column", "text_b_column", "label_column", "header"):
        if getattr(cfg, key) is not None:
            columns[key] = getattr(cfg, key)
    named = [key for key in ("text_column", "text_b_column", "label_column") if columns[key] is not None]
    same = next(((a, b) for i, a in enumerate(named) for b in named[i + 1:] if columns[a] == columns[b]), None)
    if same:  # a text read as its own label scores a "perfect" model that learnt nothing
        raise data.DataError(f"--{same[0].replace('_', '-')} and --{same[1].replace('_', '-')} are both column "
                             f"{columns[same[0]]} (--format {format_name} with your overrides); each must be its "
                             f"own column: pass the other index for one of them")
    return columns


def load_tokenizer(kind: str, vocab_path: str | Path):
    """whitespace: one vocab entry per space-separated token (ID corpora, characters); wordpiece: real text."""
    if kind == "whitespace":
        return WhitespaceTokenizer.from_file(vocab_path)
    return WordPieceTokenizer.from_file(vocab_path)


def read_examples(cfg: FinetuneConfig, format_name: str, path: str, with_labels: bool = True) -> list:
    if format_name == "cluener":
        return ner_data.read_cluener(path, with_labels=with_labels)
    return data.read_tsv(path, columns_of(cfg, format_name), multi_label=cfg.multi_label, with_labels=with_labels)


def make_spec(cfg: FinetuneConfig, format_name: str, train: list, dev: list) -> tuple[TaskSpec, list[str]]:
    """Validate the labels (train and dev) and decide the label set. Returns (spec, warnings)."""
    warnings = []
    if cfg.task == "ner":
        if cfg.class_weight != "none":
            raise ValueError(f"--class-weight {cfg.class_weight}: for --task cls and pair; drop it for --task ner")
        # the entity types decide the head's outputs
        unused = flags_set(cfg, ("num_labels", "multi_label", "representation", "threshold"))
        if unused:
            raise ValueError(f"{', '.join(unused)}: sentence-classifier settings, unused by --task ner (its labels "
                             f"are the entity types in the data); drop them")
        types, warning = ner_data.entity_types_report(train, dev)
        warnings += [warning] if warning else []
        kind = "spans" if cfg.head == "globalpointer" else "tags"
        names = types if kind == "spans" else features.bio_tag_names(types)
        return TaskSpec("ner", format_name, kind, len(names), names, cfg.metric or "f1",
                        ("global_pointer",) if kind == "spans" else ("classifier",)), warnings
    if flags_set(cfg, ("threshold",)) and not cfg.multi_label:
        raise ValueError(f"--threshold {cfg.threshold}: the decision threshold of --multi-label; a single-label "
                         f"classifier takes the argmax, so drop it (or add --multi-label)")
    # From train AND dev: a --train-fraction / --max-train-examples subset may miss a class the dev set holds
    num_labels = cfg.num_labels or max(data.infer_num_labels(train, cfg.train), data.infer_num_labels(dev, cfg.dev))
    seen = {v for e in train + dev for v in (e.label if isinstance(e.label, list) else [e.label])}
    if num_labels - len(seen) > max(MAX_UNSEEN_CLASSES, 10 * len(seen)):  # before range(num_labels) is built
        where = "--num-labels" if cfg.num_labels else next(
            f"label {num_labels - 1} on line {e.line} of {path}" for e, path in
            [(e, cfg.train) for e in train] + [(e, cfg.dev) for e in dev]
            if num_labels - 1 in (e.label if isinstance(e.label, list) else [e.label]))
        raise data.DataError(f"{where} makes {num_labels:,} classes, but only {len(seen)} distinct labels appear "
                             f"(at most {max(MAX_UNSEEN_CLASSES, 10 * len(seen)):,} classes may go unseen): class "
                             f"IDs count from 0, so fix that label or --num-labels")
    unseen = sorted(set(range(num_labels)) - seen)
    if unseen and not cfg.num_labels:  # e.g. one stray label 20 in a 14-class file makes a 21-class model
        warnings.append(f"warning: {num_labels} classes (the largest label is {num_labels - 1}), but labels "
                        f"{unseen[:8]}{' ...' if len(unseen) > 8 else ''} appear in neither --train nor --dev: fix "
                        f"a stray label, or pass --num-labels to say how many classes there are")
    data.check_class_labels(train, num_labels, cfg.train)
    data.check_class_labels(dev, num_labels, cfg.dev)
    classes = {e.label for e in train} if not cfg.multi_label else set()
    if len(classes) == 1:  # it would "learn" to always say that class, and a dev set of it scores a perfect 1.0
        raise data.DataError(f"{cfg.train}: every training example has label {classes.pop()}, and a classifier needs "
                             f"at least 2 classes to tell apart; check --label-column / --format, or add examples of "
                             f"the other classes")
    warning = data.label_set_report(train, dev)
    warnings += [warning] if warning else []
    kind = "multi" if cfg.multi_label else "class"
    metric = cfg.metric or ("micro_f1" if cfg.multi_label else DEFAULT_METRIC.get(format_name, "accuracy"))
    if cfg.class_weight == "balanced" and cfg.multi_label:
        raise ValueError("--class-weight balanced: single-label classification only; drop it for --multi-label")
    weights = balanced_class_weights([e.label for e in train], num_labels) if cfg.class_weight == "balanced" else None
    return TaskSpec(cfg.task, format_name, kind, num_labels, [str(i) for i in range(num_labels)], metric,
                    ("classifier",), weights), warnings


def balanced_class_weights(labels: list[int], num_labels: int) -> list[float]:
    """类别权重 "balanced" class weights, n / (C · n_c) as in scikit-learn (C: classes present in `labels`), so
    every class carries the same total weight and the weights average 1 over the examples. Macro-F1 counts a class
    of 2 examples as much as one of 200; unweighted, the loss barely notices the rare ones. A class absent from
    `labels` never appears in the training loss; it gets 1."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels)  # [C]
    present = np.count_nonzero(counts)
    return [len(labels) / (present * int(n)) if n else 1.0 for n in counts]


def model_class(cfg: FinetuneConfig, spec: TaskSpec) -> tuple[type, dict]:
    """The head class and its constructor arguments (besides the BertConfig)."""
    if spec.label_kind == "spans":
        return BertForGlobalPointerNER, {"num_labels": spec.num_labels, "head_size": cfg.globalpointer_head_size,
                                         "classifier_dropout": cfg.dropout}
    if spec.label_kind == "tags":
        return BertForTokenClassification, {"num_labels": spec.num_labels, "classifier_dropout": cfg.dropout}
    return BertForSequenceClassification, {"num_labels": spec.num_labels, "representation": cfg.representation,
                                           "multi_label": spec.label_kind == "multi",
                                           "classifier_dropout": cfg.dropout, "class_weights": spec.class_weights}


def build_model(cfg: FinetuneConfig, spec: TaskSpec, model_config) -> torch.nn.Module:
    """A freshly initialised task model (random encoder): --init random, and the shell --load fills."""
    cls, kwargs = model_class(cfg, spec)
    return cls(model_config, **kwargs)


def encode(cfg: FinetuneConfig, spec: TaskSpec, tokenizer, examples: list) -> list[features.Feature]:
    if spec.task == "ner":
        types = spec.label_names if spec.label_kind == "spans" else entity_types(spec)
        scheme = "spans" if spec.label_kind == "spans" else "bio"
        return features.encode_ner(tokenizer, examples, cfg.max_length, types, scheme)
    return features.encode_texts(tokenizer, examples, cfg.max_length, cfg.truncate)


def entity_types(spec: TaskSpec) -> list[str]:
    """Entity types in tag order: B-x names carry them (tags are O, B-t0, I-t0, B-t1, ...)."""
    if spec.label_kind == "spans":
        return spec.label_names
    return [name[2:] for name in spec.label_names[1::2]]


def bio_to_entities(tags: np.ndarray, types: list[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) from a character tag sequence: B-t starts an entity, I-t of the same type extends it.
    A stray I-t (no B-t before it) is ignored, as in strict (IOB2) evaluation."""
    entities, start, current = set(), None, None
    for position, tag in enumerate(tags.tolist() + [0]):  # a final O closes the last entity
        continues = tag > 0 and tag % 2 == 0 and (tag - 2) // 2 == current
        if continues:
            continue
        if current is not None:
            entities.add((types[current], start, position - 1))
        start, current = (position, (tag - 1) // 2) if tag % 2 == 1 else (None, None)
    return entities


def decode(spec: TaskSpec, logits: torch.Tensor, batch_features: list[features.Feature], threshold: float) -> list:
    """Turn one batch's logits into predictions: class IDs, lists of class IDs, or entity sets."""
    if spec.label_kind == "class":
        return logits.argmax(dim=-1).tolist()  # [B]
    if spec.label_kind == "multi":
        chosen = (torch.sigmoid(logits.float()) > threshold).cpu().numpy()  # [B,C]
        return [np.flatnonzero(row).tolist() for row in chosen]
    types = entity_types(spec)
    predictions = []
    if spec.label_kind == "tags":
        tags = logits.argmax(dim=-1).cpu().numpy()  # [B,T]
        for row, f in enumerate(batch_features):
            first = np.flatnonzero(f.token_to_char >= 0)  # token positions of characters, in order
            predictions.append(bio_to_entities(tags[row, first], types))
        return predictions
    hits = (logits > 0).nonzero().cpu().numpy()  # [K,4] rows (example, type, start token, end token)
    predictions = [set() for _ in batch_features]
    for row, k, start, end in hits:
        to_char = batch_features[row].token_to_char
        if to_char[start] >= 0 and to_char[end] >= 0:  # both ends on first sub-tokens of characters
            predictions[row].add((types[k], int(to_char[start]), int(to_char[end])))
    return predictions


def pool_windows(log_probs: torch.Tensor, sources: list[int], num_examples: int) -> list[int]:
    """--truncate windows: one class per example from its windows' log-probabilities [W,C], averaged per example
    (a geometric mean of the windows' distributions: every window votes with its confidence, and a long document
    does not win by having more windows, since the mean divides by the count)."""
    return features.average_windows(log_probs, sources, num_examples).argmax(dim=-1).tolist()  # [X] examples


def gold_labels(spec: TaskSpec, examples: list) -> list:
    if spec.task == "ner":
        return [set(e.entities) for e in examples]  # from the FILE, so truncated entities count as missed
    return [e.label for e in examples]


def compute_metrics(spec: TaskSpec, gold: list, predicted: list) -> dict:
    if spec.task == "ner":
        return entity_metrics(gold, predicted, entity_types(spec))
    if spec.label_kind == "multi":
        def multi_hot(rows):
            matrix = np.zeros((len(rows), spec.num_labels), bool)
            for i, row in enumerate(rows):
                matrix[i, row] = True
            return matrix
        return multilabel_metrics(multi_hot(gold), multi_hot(predicted))
    return classification_metrics(np.array(gold), np.array(predicted), spec.num_labels)


def write_predictions(spec: TaskSpec, path: str | Path, examples: list, predicted: list) -> None:
    """Classification: a CSV with a `label` column, one row per input line (the Tianchi test_a submission
    format). NER: CLUENER JSON lines with the predicted entities."""
    from minibert.training.io import atomic_write_text

    if spec.task == "ner":
        lines = []
        for example, entities in zip(examples, predicted):
            label: dict = {}
            for entity_type, start, end in sorted(entities, key=lambda e: (e[1], e[2])):
                label.setdefault(entity_type, {}).setdefault(example.text[start:end + 1], []).append([start, end])
            lines.append(json.dumps({"text": example.text, "label": label}, ensure_ascii=False))
        atomic_write_text(path, "\n".join(lines) + "\n")
        return
    # The csv module quotes a multi-label cell ("0,3") and writes an empty label set (no class above --threshold)
    # as "": a bare blank line would be skipped by CSV readers, and every later row would shift onto the wrong input.
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["label"])
    writer.writerows([",".join(map(str, p))] if isinstance(p, list) else [p] for p in predicted)
    atomic_write_text(path, table.getvalue())
