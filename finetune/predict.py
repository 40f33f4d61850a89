"""Reload a fine-tuned model (`<out>/best`): predictions for a file (`--predict FILE`), or metrics on another
labelled file (`--evaluate FILE`).

The folder is self-contained: config.json + model.safetensors + vocab + finetune.json (task, head, labels and
the input settings used in training, so the test file is tokenized and truncated exactly like the dev set).
"""

from __future__ import annotations

from pathlib import Path

from minibert.positions import extend_positions_hierarchically
from minibert.training.device import autocast_dtype, pick_device

from .checkpoints import read_finetuned
from .config import FinetuneConfig
from .data import FORMATS, DataError, check_class_labels
from .prepare import Prepared, ner_cut_warning, unknown_token_check
from .tasks import TaskSpec, build_model, encode, entity_types, load_tokenizer, read_examples, write_predictions
from .train import evaluate


def load_finetuned(folder: str | Path, progress: bool | None = None) -> tuple[FinetuneConfig, Prepared]:
    """Rebuild the task model of a fine-tuned folder. Returns (the training config, a Prepared without data).
    progress: this command's --progress / --no-progress (None: the training run's)."""
    model_config, info, state, vocab_path = read_finetuned(folder)
    cfg = FinetuneConfig(**info["config"])
    if progress is not None:
        cfg = cfg.replace(progress=progress)
    spec = TaskSpec(**{**info["spec"], "head_prefixes": tuple(info["spec"]["head_prefixes"])})
    model = build_model(cfg, spec, model_config)
    if cfg.max_length > model_config.max_position_embeddings:  # trained with hierarchical positions
        extend_positions_hierarchically(model, cfg.max_length)
    model.load_state_dict(state)
    tokenizer = load_tokenizer(cfg.tokenizer or FORMATS[spec.format]["tokenizer"], vocab_path)
    return cfg, Prepared(spec, model, tokenizer, vocab_path, [], [], [], [], [])


def predict_file(folder: str | Path, input_path: str | Path, output_folder: str | Path | None = None,
                 device: str = "auto", progress: bool | None = None) -> Path:
    """Predict every line of `input_path` with the model in `folder`.

    Classification writes `label` CSV rows (the Tianchi test_a submission format), NER writes CLUENER JSON lines.
    Returns the output path: predictions.csv / predictions.json in `output_folder` (default: next to `folder`).
    """
    cfg, prepared = load_finetuned(folder, progress)
    spec = prepared.spec
    suffix = ".json" if spec.task == "ner" else ".csv"
    output_path = Path(output_folder or Path(folder).parent) / f"predictions{suffix}"
    examples = read_examples(cfg, spec.format, input_path, with_labels=False)
    features = encode(cfg, spec, prepared.tokenizer, examples)
    warnings = unknown_token_check(features, prepared.tokenizer, prepared.vocab_path, input_path, "input",
                                   "is it the kind of text (the ID space) the model was trained on?")
    if spec.task == "ner":  # the characters past --max-length get no tag at all
        warnings += ner_cut_warning(features, examples, cfg.max_length, input_path, None)
    for warning in warnings:
        print(warning)
    torch_device = pick_device(device)
    model = prepared.model.to(torch_device)
    _, _, predictions = evaluate(model, prepared, cfg, torch_device, autocast_dtype(torch_device, cfg.precision),
                                 features=features, examples=examples, with_labels=False)
    write_predictions(spec, output_path, examples, predictions)
    return output_path


def evaluate_file(folder: str | Path, input_path: str | Path, device: str = "auto",
                  progress: bool | None = None) -> dict:
    """Metrics of the model in `folder` on another labelled file (e.g. CoLA's out-of-domain dev), read, checked
    and encoded exactly like the training run's dev set. Returns the metrics dict plus "loss"."""
    cfg, prepared = load_finetuned(folder, progress)
    spec = prepared.spec
    examples = read_examples(cfg, spec.format, input_path)
    if spec.task != "ner":
        check_class_labels(examples, spec.num_labels, input_path,
                           fix=f"evaluate with a model trained on them (this one has {spec.num_labels} classes)")
    else:  # an entity type the model never learnt has no row to score it with
        known = entity_types(spec)
        unknown = sorted({t for e in examples for t, _, _ in e.entities} - set(known))
        if unknown:
            line = next(e.line for e in examples if any(t in unknown for t, _, _ in e.entities))
            raise DataError(f"{input_path}: entity type(s) {unknown} (first on line {line}) are not among the "
                            f"model's {known}; evaluate with a model trained on them, or drop those entities")
    features = encode(cfg, spec, prepared.tokenizer, examples)
    torch_device = pick_device(device)
    model = prepared.model.to(torch_device)
    loss, metrics, _ = evaluate(model, prepared, cfg, torch_device, autocast_dtype(torch_device, cfg.precision),
                                features=features, examples=examples)
    return {"loss": loss, **metrics}
