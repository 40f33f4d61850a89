"""from_pretrained / save_pretrained: load any BERT checkpoint into minibert, and export minibert models.

    model = from_pretrained(BertModel, "downloads/uncased_L-4_H-256_A-4")        # Google TF folder
    model = from_pretrained(BertForMaskedLM, "hf_folder")                         # Hugging Face folder
    save_pretrained(model, "out", format="hf", vocab="downloads/.../vocab.txt")   # for transformers

A source is detected, never named: a TF checkpoint has a `*.index` file (pass the prefix, the `.index` file or
its folder); a folder with `model.safetensors` (or a shard index, or `pytorch_model.bin`) is minibert when its
keys use minibert's names, HF otherwise. Nothing is ever downloaded.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch

from ..config import BertConfig
from . import hf_io
from ..training.io import atomic_save_safetensors, atomic_write_bytes, atomic_write_text
from .convert import apply_plan, minibert_to_hf, plan_conversion
from .errors import CheckpointError
from .report import CoverageReport
from .tf_bundle import TFCheckpoint

CONFIG_FILES = ("config.json", "bert_config.json")
# tokenizer.json first: it records lower-casing and the rest. A vocab.txt holds only the tokens, and read alone it
# lower-cases (BERT's default), which turns a CASED model's "Paris" into the ids of "paris" without a word.
VOCAB_FILES = ("tokenizer.json", "vocab.txt")


@dataclass
class Source:
    """An opened checkpoint: its format, tensor names/shapes, a tensor reader, and the files beside it."""
    path: Path
    format: str                          # "minibert" | "hf" | "tf"
    shapes: Dict[str, Tuple[int, ...]]
    read: Callable[[str], object]
    config_path: Optional[Path]
    vocab_path: Optional[Path]


def _first_file(folder: Path, names) -> Optional[Path]:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _config_file(folder: Path) -> Optional[Path]:
    """config.json (HF, minibert) or Google's bert_config.json. Both, describing different models, is refused:
    which one the weights were trained with cannot be guessed, and the wrong one loads and runs, just wrongly."""
    found = [folder / name for name in CONFIG_FILES if (folder / name).is_file()]
    if len(found) == 2:
        first, second = (BertConfig.from_json(path).to_dict() for path in found)
        differ = [f"{key} {first[key]!r} vs {second[key]!r}" for key in first if first[key] != second[key]]
        if differ:
            raise CheckpointError(f"{folder}: config.json and bert_config.json disagree ({', '.join(differ[:3])}); "
                                  f"delete the one that does not describe these weights")
    return found[0] if found else None


def _tf_prefix(path: Path) -> Optional[Path]:
    """The TF checkpoint prefix that `path` designates (prefix, .index file, or folder), or None."""
    if path.name.endswith(".index") and path.is_file():
        return path.with_name(path.name[: -len(".index")])
    if path.with_name(path.name + ".index").is_file():
        return path
    if path.is_dir():
        state = path / "checkpoint"  # TF's text file: model_checkpoint_path: "bert_model.ckpt"
        if state.is_file():
            found = re.search(r'^model_checkpoint_path:\s*"(.+)"', state.read_text(encoding="utf-8"), re.M)
            if found and (path / (found.group(1) + ".index")).is_file():
                return path / found.group(1)
        indexes = sorted(path.glob("*.index"))
        if len(indexes) > 1:
            raise CheckpointError(f"{path} holds several TF checkpoints {[p.name for p in indexes]}: pass one prefix")
        if indexes:
            return indexes[0].with_name(indexes[0].name[: -len(".index")])
    return None


def open_source(path) -> Source:
    """Detects the checkpoint format at `path` and opens it (names and shapes only; no weights read yet)."""
    path = Path(path)
    if path.name in ("", ".."):  # "." or "..": the folder's own name is needed to look for a TF prefix beside it
        path = path.resolve()
    if not path.exists() and not path.with_name(path.name + ".index").exists():
        raise CheckpointError(f"checkpoint path {path} does not exist; pass a minibert/HF folder or a TF checkpoint prefix")
    prefix = _tf_prefix(path)
    if prefix is not None and path.is_dir() and hf_io.find_weight_file(path) is not None:
        # e.g. a Google folder that a fine-tuned model was saved back into: picking either one silently would
        # load the weights the user did not mean
        raise CheckpointError(f"{path} holds a TF checkpoint ({prefix.name}) AND {hf_io.find_weight_file(path).name}"
                              f": pass the one you mean, {prefix} or {hf_io.find_weight_file(path)}")
    if prefix is not None:
        bundle = TFCheckpoint(prefix)
        folder = prefix.parent
        return Source(prefix, "tf", {n: t.shape for n, t in bundle.tensors.items()}, bundle.read,
                      _config_file(folder), _first_file(folder, VOCAB_FILES))
    folder = path if path.is_dir() else path.parent
    weight_file = path if path.is_file() else hf_io.find_weight_file(folder)
    if weight_file is None:
        inside = folder / "final"  # a pretraining run's folder: its model is in final/
        hint = f"; it is a run folder: pass {inside}" if hf_io.find_weight_file(inside) else ""
        raise CheckpointError(f"{path} holds no checkpoint: expected a TF .index file or one of "
                              f"{hf_io.WEIGHT_FILES}{hint}")
    weights = hf_io.HFWeights(weight_file)
    is_minibert = any(k.endswith("embeddings.layer_norm.weight") for k in weights.shapes)
    return Source(weight_file, "minibert" if is_minibert else "hf", weights.shapes, weights.read,
                  _config_file(folder), _first_file(folder, VOCAB_FILES))


def vocab_file_size(path: Path) -> int:
    """Entries in a vocab.txt (one token a line) or a tokenizer.json (largest id + 1)."""
    try:
        text = path.read_text(encoding="utf-8")
        if not path.name.endswith(".json"):
            lines = text.split("\n")  # not splitlines(): tokens may contain U+2028 etc.
            return len(lines) - (lines[-1] == "")
        data = json.loads(text)
        ids = list(data["model"]["vocab"].values()) + [t["id"] for t in data.get("added_tokens", [])]
        return max(ids) + 1 if ids else 0
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"vocabulary {path} is unreadable ({type(error).__name__}: {reason}); expected a "
                              f"UTF-8 vocab.txt or a tokenizers tokenizer.json: copy the model's own one "
                              f"there") from None


def check_vocab_sizes(config: BertConfig, source: Source, require_vocab: bool) -> None:
    """Config, checkpoint and vocab file must agree on V; if not, say which one is the odd one out."""
    config_name = source.config_path.name if source.config_path is not None else "config"
    sizes = {f"{config_name} vocab_size": config.vocab_size}
    embedding = next((s for n, s in source.shapes.items() if re.search(r"word_embeddings(\.weight)?$", n)), None)
    if embedding is not None:
        sizes["checkpoint word embeddings rows"] = embedding[0]
    if source.vocab_path is not None:
        sizes[f"{source.vocab_path.name} entries"] = vocab_file_size(source.vocab_path)
    elif require_vocab:
        raise CheckpointError(f"no vocab.txt or tokenizer.json next to {source.path}: the 词表 vocabulary is needed "
                              "to use the model; copy the one it was trained with into that folder")
    values = list(sizes.values())
    if len(set(values)) > 1:
        odd = [name for name, v in sizes.items() if values.count(v) == 1]
        verdict = f"the {odd[0]} disagrees with the other two" if len(odd) == 1 else "they disagree"
        raise CheckpointError(f"vocab size mismatch for {source.path}: "
                              + ", ".join(f"{name}={v}" for name, v in sizes.items())
                              + f"; {verdict}: use the config and vocab the checkpoint was trained with")


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
