"""Writing and reading a fine-tuned model. (Pretrained encoders are read by minibert.checkpoint.load_pretrained:
minibert folders from `make pretrain`, Hugging Face folders and Google TF checkpoints.)

A fine-tuned folder (`<out>/best`) holds the same three files for the WHOLE task model (encoder + head) plus
`finetune.json`: the task, the head, the label names and the input settings, everything `--load` needs to
rebuild the model and predict.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from minibert import BertConfig
from minibert.checkpoint.pretrained import require_finite
from minibert.training.io import atomic_save_safetensors, atomic_write_text

VOCAB_FILES = ("tokenizer.json", "vocab.txt")


class CheckpointMissing(ValueError):
    """A pretrained or fine-tuned folder is missing or incomplete."""


def vocab_file(folder: str | Path) -> Path:
    """tokenizer.json if present (exact WordPiece settings), else vocab.txt."""
    for name in VOCAB_FILES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise CheckpointMissing(f"{folder}: no vocab.txt or tokenizer.json; copy the vocabulary the model was "
                            f"trained with into the folder, or pass --vocab")


def save_finetuned(folder: str | Path, model: torch.nn.Module, vocab: str | Path, info: dict) -> None:
    """Write a fine-tuned model folder. Each file is written atomically (temp file + rename), the weights last,
    so a crash mid-save never leaves a half-written model.safetensors behind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json(folder / "config.json")
    vocab = Path(vocab)
    if vocab.resolve() != (folder / vocab.name).resolve():
        atomic_write_text(folder / vocab.name, vocab.read_text(encoding="utf-8"))
    atomic_write_text(folder / "finetune.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
    atomic_save_safetensors(model.state_dict(), folder / "model.safetensors",
                            metadata={"epoch": str(info.get("epoch")), "task": str(info.get("task"))})


def read_finetuned(folder: str | Path) -> tuple[BertConfig, dict, dict[str, torch.Tensor], Path]:
    """(encoder config, finetune.json, task-model state dict, vocab path) of a folder from save_finetuned."""
    folder = Path(folder)
    if not (folder / "finetune.json").is_file():
        raise CheckpointMissing(f"--load {folder}: no finetune.json; pass the `best` folder of a fine-tuning run")
    try:
        info = json.loads((folder / "finetune.json").read_text(encoding="utf-8"))
        if not isinstance(info, dict) or not isinstance(info.get("spec"), dict) or "config" not in info:
            raise ValueError("finetune.json lacks its \"spec\" or \"config\" entry")
        config = BertConfig.from_json(folder / "config.json")
        state = load_file(str(folder / "model.safetensors"))
    except Exception as error:  # json, safetensors and OS errors alike: one line naming the folder
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointMissing(f"--load {folder}: a broken fine-tuned folder ({reason}); pass the `best` folder "
                                f"of a finished fine-tuning run, or fine-tune again") from None
    for name, tensor in state.items():
        require_finite(tensor, name, f"--load {folder}")
    return config, info, state, vocab_file(folder)

