"""from_pretrained / save_pretrained: load any BERT checkpoint into minibert, and export minibert models.

    model = from_pretrained(BertModel, "downloads/uncased_L-4_H-256_A-4")        # Google TF folder
    model = from_pretrained(BertForMaskedLM, "hf_folder")                         # Hugging Face folder
    save_pretrained(model, "out", format="hf", vocab="downloads/.../vocab.txt")   # for transformers

What a path holds (TF, HF or minibert, and the config and vocab beside it) is found by source.py. Nothing is ever
downloaded.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..config import BertConfig
from . import hf_io
from ..training.io import atomic_save_safetensors, atomic_write_bytes, atomic_write_text
from .convert import apply_plan, minibert_to_hf, plan_conversion
from .errors import CheckpointError
from .report import CoverageReport
from .source import VOCAB_FILES, Source, check_vocab_sizes, open_source

def require_finite(tensor: torch.Tensor, name: str, where) -> None:
    """Refuses a NaN/inf weight, naming it: a model with one would train or predict NaN without a word."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise CheckpointError(f"{where}: tensor {name} holds {bad} NaN/inf value(s) of {tensor.numel()}; the "
                              f"checkpoint is corrupt (or was saved after training diverged): use an earlier one")


HEAD_SETTINGS = ("representation", "multi_label")  # what a classifier's weights do not say about it


def json_object(file: Optional[Path]) -> dict:
    """A JSON file's object, or {} when absent or broken (BertConfig.from_json reports a broken config.json)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8")) if file is not None and file.is_file() else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def saved_head_settings(source: Source) -> dict:
    """How a sequence classifier in `source` was trained, where the checkpoint says so. HF's
    BertForSequenceClassification and Google's run_classifier classify the pooler output (HF's `problem_type` says
    single- or multi-label); a minibert folder has what save_pretrained wrote into config.json, or what the
    fine-tuning run wrote into finetune.json ({} if neither)."""
    config = json_object(source.config_path)
    if source.format != "minibert":
        settings = {"representation": "pooler"}
        if config.get("problem_type") in ("single_label_classification", "multi_label_classification"):
            settings["multi_label"] = config["problem_type"] == "multi_label_classification"
        return settings
    finetune_config = json_object(source.path.parent / "finetune.json").get("config")
    recorded = {}
    for data in (finetune_config if isinstance(finetune_config, dict) else {}, config):
        recorded.update({key: data[key] for key in HEAD_SETTINGS if key in data})
    return recorded


def check_head_settings(model, source: Source) -> None:
    """A classifier trained on one representation ([CLS], mean, pooler) or loss (softmax vs per-label sigmoid)
    would load into another without a complaint, since the weight shapes agree, and score nonsense."""
    for key, saved in saved_head_settings(source).items():
        if getattr(model, key) != saved:
            raise CheckpointError(f"{source.path} holds a classifier trained with {key}={saved!r}; this model "
                                  f"uses {key}={getattr(model, key)!r}: build it with {key}={saved!r}, or drop "
                                  f"the checkpoint's classifier.* tensors")


@dataclass
class LoadResult:
    model: torch.nn.Module
    report: CoverageReport
    source: Source
    config: BertConfig


def load_pretrained(model_cls, path, config: Optional[BertConfig] = None, require_vocab: bool = False,
                    config_overrides: Optional[dict] = None, **model_kwargs) -> LoadResult:
    """Builds `model_cls(config, **model_kwargs)` and fills it from the checkpoint at `path`.

    Args:
      model_cls: BertModel, BertForMaskedLM, BertForPreTraining or any model built on them.
      path: minibert folder, HF folder, TF checkpoint prefix / .index file / folder.
      config: overrides the config.json / bert_config.json found beside the checkpoint.
      require_vocab: fail when no vocab.txt / tokenizer.json is beside the checkpoint.
      config_overrides: fields replaced in the config before the model is built, e.g. the dropout to fine-tune with.

    Returns:
      LoadResult(model in eval mode, coverage report, opened source, config).
    """
    if isinstance(config, dict):
        config = BertConfig.from_dict(config, source="config=")
    elif config is not None and not isinstance(config, BertConfig):
        raise TypeError(f"config={config!r}: expected a BertConfig, a dict of its fields, or None (read the "
                        f"config.json beside the checkpoint)")
    source = open_source(path)
    if config is None:
        if source.config_path is None:
            raise CheckpointError(f"no config.json or bert_config.json next to {source.path}: the model's sizes "
                                  "are unknown; copy the config that came with the checkpoint into that folder")
        config = BertConfig.from_json(source.config_path)
    config = config.replace(**(config_overrides or {}))
    check_vocab_sizes(config, source, require_vocab)
    with torch.device("meta"):  # shapes only: no memory, and no time spent on a random init we overwrite
        skeleton = model_cls(config, **model_kwargs)
    plan = plan_conversion(source.shapes, source.format, {k: tuple(v.shape) for k, v in skeleton.state_dict().items()},
                           config.num_hidden_layers)
    if "classifier.weight" in plan.sources and hasattr(skeleton, "representation"):
        check_head_settings(skeleton, source)
    if plan.report.fresh or any(True for _ in skeleton.buffers()):
        model = model_cls(config, **model_kwargs)  # some tensors keep their init: build it for real
    else:
        model = skeleton.to_empty(device="cpu")  # every parameter is about to be overwritten
    targets = model.state_dict()
    with torch.no_grad():
        for name, tensor in apply_plan(plan, source.read).items():
            if not tensor.is_floating_point():  # copy_ would cast it silently: integer or 0/1 "weights"
                raise CheckpointError(f"{source.path}: tensor {name} is {tensor.dtype}, not a floating-point weight; "
                                      f"the file is damaged or not a model checkpoint: convert the original again")
            require_finite(tensor, name, source.path)
            targets[name].copy_(tensor)  # state_dict tensors share storage with the parameters
    return LoadResult(model.eval(), plan.report, source, config)


def from_pretrained(model_cls, path, config: Optional[BertConfig] = None, **model_kwargs):
    """`load_pretrained(...).model`: the model alone, in eval mode. See load_pretrained."""
    return load_pretrained(model_cls, path, config=config, **model_kwargs).model


def save_pretrained(model, directory, format: str = "minibert", vocab=None) -> Path:
    """Writes `model` to `directory` as minibert names or in the Hugging Face layout. Every file is atomic.

    Args:
      model: a minibert model with a `.config` BertConfig.
      directory: created if needed.
      format: "minibert" (minibert names) or "hf" (HF names + `architectures`, loadable by transformers).
      vocab: path of the vocab.txt / tokenizer.json to copy beside the weights, or a tokenizer with `.save(dir)`.

    Returns:
      the directory.
    """
    # Validate EVERY input before the first byte is written: a refusal never leaves a half-written folder.
    if format not in ("minibert", "hf"):
        raise CheckpointError(f"save_pretrained format={format!r}: expected 'minibert' or 'hf'")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"save_pretrained: {directory} is a file; pass a folder path")
    if isinstance(vocab, (str, Path)):
        vocab = Path(vocab)
        if not vocab.is_file():
            raise CheckpointError(f"vocab file {vocab} not found; pass the vocab.txt the model was trained with")
    elif vocab is not None and not hasattr(vocab, "save"):
        raise CheckpointError(f"save_pretrained vocab={vocab!r}: expected a vocab.txt path or a tokenizer")
    state = model.state_dict()
    for name, tensor in state.items():
        require_finite(tensor, name, f"save_pretrained({directory})")
    architecture = hf_io.hf_architecture(type(model).__name__, state)
    if format == "hf" and architecture == "BertForSequenceClassification" \
            and getattr(model, "representation", "pooler") != "pooler":
        raise CheckpointError(f"cannot export to HF: transformers' BertForSequenceClassification classifies the "
                              f"pooler output, this model uses representation={model.representation!r}; save with "
                              "format='minibert' (weights_convert.py --to minibert), or fine-tune with "
                              "representation='pooler' (python -m finetune --representation pooler)")
    if format == "hf":
        tensors = minibert_to_hf(state, model.config.num_hidden_layers)
        num_labels = state["classifier.weight"].shape[0] if "classifier.weight" in state else 0
        config_dict = hf_io.hf_config_dict(model.config.to_dict(), architecture, num_labels,
                                           getattr(model, "multi_label", False))
    else:
        tensors, config_dict = state, {**model.config.to_dict(), "architectures": [type(model).__name__]}
        if architecture == "BertForSequenceClassification":  # for check_head_settings when it is loaded again
            config_dict.update({key: getattr(model, key) for key in HEAD_SETTINGS if hasattr(model, key)})
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(tensors, directory / hf_io.SAFETENSORS, metadata={"format": "pt"})
    atomic_write_text(directory / "config.json", json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    if isinstance(vocab, Path):  # under the name the loaders look for, whatever the file was called
        files = {("tokenizer.json" if vocab.name.endswith(".json") else "vocab.txt"): vocab}
        if vocab.name in VOCAB_FILES:  # a checkpoint's folder: its other vocab file travels too (HF's slow and
            files.update({n: vocab.parent / n for n in VOCAB_FILES if (vocab.parent / n).is_file()})  # fast loaders)
        for name in VOCAB_FILES:
            if name in files and files[name].resolve() != (directory / name).resolve():
                atomic_write_bytes(directory / name, files[name].read_bytes())
            elif name not in files and (directory / name).is_file():  # an older save's: it would be read first
                (directory / name).unlink()
    elif vocab is not None:
        vocab.save(directory)
    return directory


class PretrainedMixin:
    """Gives a minibert model class `Class.from_pretrained(path, ...)` and `model.save_pretrained(dir, ...)`.

    Usage: `class BertModel(PretrainedMixin, nn.Module)`. Both just call the functions above.
    """

    @classmethod
    def from_pretrained(cls, path, config: Optional[BertConfig] = None, **model_kwargs):
        """Builds this class from a minibert / HF folder or a TF checkpoint (see `from_pretrained`)."""
        return from_pretrained(cls, path, config=config, **model_kwargs)

    def save_pretrained(self, directory, format: str = "minibert", vocab=None) -> Path:
        """Writes this model as minibert or HF files (see `save_pretrained`)."""
        return save_pretrained(self, directory, format=format, vocab=vocab)
