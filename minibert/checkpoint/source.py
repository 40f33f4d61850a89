"""What a checkpoint path holds: the format detected (TF bundle, Hugging Face or minibert folder), its config and
vocab files found beside it, and the vocab-size agreement of the three. Nothing is read but names and shapes.

A source is detected, never named: a TF checkpoint has a `*.index` file (pass the prefix, the `.index` file or its
folder); a folder with `model.safetensors` (or a shard index, or `pytorch_model.bin`) is minibert when its keys use
minibert's names, HF otherwise.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from ..config import BertConfig
from . import hf_io
from .errors import CheckpointError
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
