"""线性探针 Linear probe: what an encoder already knows about YOUR labels, layer by layer, before fine-tuning.

    python -m finetune.probe --task cls --init runs/pretrain/final --max-length 64 --truncate windows

Each layer's hidden states are mean-pooled over the tokens of a text (and, with `--truncate windows`, averaged over
its windows), frozen, and a logistic regression is fitted on the training split and scored on dev. The same probe
runs on a RANDOM-init encoder of the same shape: random features already separate classes (a random projection of
the embeddings keeps which tokens occur, which is what a bag of words uses), so only the gap to that control says
what pretraining added (Hewitt & Liang 2019 make the same point with "control tasks"; Tenney et al. 2019 probe
BERT's layers). If the pretrained rows are not above the random ones, fine-tuning starts from nothing useful for
these labels, and `--compare-random` will show it too, at the cost of a full fine-tuning run.

Takes every `python -m finetune` flag that chooses data, model and input (`--data`, `--train-fraction`,
`--max-length`, `--truncate`, ...); single-label `--task cls` only. Writes `<out>/probe.json`. Needs scikit-learn
(the `baseline` extra, which `make finetune` installs).

Dimension legend: N texts, W windows, L layers (+1: the embeddings), H hidden size, C classes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from minibert.cli import run_cli
from minibert.config import BERT_INITIALIZER_RANGE
from minibert.training.io import atomic_write_text

from .__main__ import resolve_defaults
from .baseline import sklearn_class_weight
from .config import flags_set, parse_config
from .features import average_windows, collate
from .metrics import classification_metrics
from .prepare import prepare
from .tasks import build_model


@torch.no_grad()
def layer_features(model, features: list, num_texts: int, pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled hidden states of every layer, one row per text (windows averaged). Returns [L+1, N, H]."""
    model.eval()
    pooled = []
    for start in range(0, len(features), batch_size):
        batch = collate(features[start:start + batch_size], pad_id, "none", 0)
        out = model.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                         output_hidden_states=True)
        mask = batch["attention_mask"][..., None].float()                                  # [B,T,1]
        pooled.append(torch.stack([(h * mask).sum(1) / mask.sum(1) for h in out.hidden_states], 1))  # [B,L+1,H]
    per_window = torch.cat(pooled).double()                                                 # [W,L+1,H]
    sources = [i if f.source is None else f.source for i, f in enumerate(features)]         # one window per text
    return average_windows(per_window, sources, num_texts).transpose(0, 1).numpy()          # [L+1,N,H]


def probe_layers(model, prepared, seed: int, class_weight: str = "none") -> list[dict]:
    """One logistic regression per layer on frozen features: fit on train, score on dev. class_weight: "none" or
    "balanced" (--class-weight)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    pad_id = prepared.tokenizer.pad_id
    train = layer_features(model, prepared.train_features, len(prepared.train_examples), pad_id)
    dev = layer_features(model, prepared.dev_features, len(prepared.dev_examples), pad_id)
    train_labels = [e.label for e in prepared.train_examples]
    dev_labels = [e.label for e in prepared.dev_examples]
    rows = []
    for layer in range(train.shape[0]):
        scale = StandardScaler().fit(train[layer])  # hidden sizes differ in scale; the probe should not care
        probe = LogisticRegression(max_iter=2000, random_state=seed,
                                   class_weight=sklearn_class_weight(class_weight))
        probe.fit(scale.transform(train[layer]), train_labels)
        predicted = probe.predict(scale.transform(dev[layer])).tolist()
        metrics = classification_metrics(dev_labels, predicted, prepared.spec.num_labels)
        rows.append({"layer": layer, "macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"]})
    return rows


# The flags of `python -m finetune` a probe has no use for: it trains no encoder and no head, and predicts nothing.
TRAINING_ONLY = ("lr", "head_lr", "layer_decay", "epochs", "max_steps", "batch_size", "gradient_accumulation",
                 "warmup_ratio", "schedule", "schedule_steps", "weight_decay", "max_grad_norm", "patience", "metric",
                 "eval_every", "dropout", "encoder_dropout", "mlm_weight", "representation", "head", "threshold",
                 "globalpointer_head_size", "compare_random", "compare_tfidf", "predict", "evaluate", "load")


def _main(argv: list[str]) -> int:
    parsed = parse_config(
        argv, prog="python -m finetune.probe",
        description="Linear probe on each frozen layer of --init, next to the same probe on a random-init encoder of "
                    "its shape (single-label --task cls; writes <out>/probe.json; docs/finetune.md). Takes the flags "
                    "of python -m finetune that choose data, model and input.")
    ignored = flags_set(parsed, TRAINING_ONLY)
    if ignored:  # given, they would do nothing: say so rather than let the user believe they shaped the probe
        raise ValueError(f"finetune.probe trains nothing and predicts nothing, so {', '.join(ignored)} would be "
                         f"ignored; drop them (the probe reads only the flags that choose data, model and input)")
    cfg, notes = resolve_defaults(parsed)
    if cfg.task != "cls" or cfg.multi_label or cfg.init == "random":
        raise ValueError("finetune.probe compares a pretrained --init with random init on single-label --task cls; "
                         f"got --task {cfg.task} --init {cfg.init}{' --multi-label' if cfg.multi_label else ''}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    prepared = prepare(cfg)
    for note in notes + prepared.notes:  # e.g. a --max-length past the positions the encoder was trained on
        print(note)
    # the control: same shape, vocabulary and inputs; random weights, seeded, at BERT's init std (not the std of a
    # pretraining recipe that the encoder's config.json records: make pretrain's 0.03)
    torch.manual_seed(cfg.seed)
    shape = prepared.model.bert.config.replace(initializer_range=BERT_INITIALIZER_RANGE)
    control = build_model(cfg, prepared.spec, shape)
    rows = {"pretrained": probe_layers(prepared.model, prepared, cfg.seed, cfg.class_weight),
            "random": probe_layers(control, prepared, cfg.seed, cfg.class_weight)}
    print(f"linear probe on frozen, mean-pooled layers: dev macro-F1 ({len(prepared.train_examples):,} train / "
          f"{len(prepared.dev_examples):,} dev texts, --truncate {cfg.truncate}, --max-length {cfg.max_length})")
    print(f"{'layer':>10} | pretrained | random init")
    for mine, theirs in zip(rows["pretrained"], rows["random"]):
        name = "embeddings" if mine["layer"] == 0 else f"layer {mine['layer']}"
        print(f"{name:>10} | {mine['macro_f1']:10.4f} | {theirs['macro_f1']:.4f}")
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(cfg.out_dir) / "probe.json", json.dumps({"init": cfg.init, **rows}, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes as python -m finetune: 0 done, 1 failed while running, 2 bad input, 130 interrupted."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
