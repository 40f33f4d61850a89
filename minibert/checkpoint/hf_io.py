"""Reads Hugging Face weight files safely, and describes a minibert model in HF's config.json terms.

Supported weight files, in order of preference (the first one found in a folder is used):
  model.safetensors                  one file, tensors read lazily
  model.safetensors.index.json       {"weight_map": {name: shard file}}: several safetensors shards
  pytorch_model.bin                  a torch pickle, loaded with weights_only=True
  pytorch_model.bin.index.json       sharded .bin files

Why weights_only=True: a .bin file is a Python pickle, and unpickling can call ANY function (os.system, ...)
named in the file. `torch.load(weights_only=True)` uses a restricted unpickler that only rebuilds tensors and
plain containers; a file that asks for anything else is refused before any of it runs. We turn that refusal
into a clear CheckpointError. Prefer safetensors: it holds no code at all.
"""

import json
import pickle
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX)

Shape = Tuple[int, ...]


def find_weight_file(folder: Path):
    """The weight file a folder holds (see WEIGHT_FILES), or None."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _open_safetensors(path: Path):
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {path}: {str(e).splitlines()[0]} (truncated or not a .safetensors "
                              "file?); download or export it again") from None


def load_torch_bin(path: Path) -> Dict[str, torch.Tensor]:
    """Loads a pytorch_model.bin with the restricted unpickler; refuses pickles that carry code."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch's zip format, or a raw pickle
        raise CheckpointError(f"{path} is not a weight file (it starts with {head!r}, not a torch zip or pickle; a "
                              f"text or JSON file?); pass a model folder, a .safetensors/.bin file or a TF prefix")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line or "global" in line), "")
        raise CheckpointError(f"refusing to load {path}: the pickle asks to run code ({culprit or 'non-tensor object'}), "
                              "which weights_only loading forbids; only load files you trust, preferably .safetensors") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"cannot read {path}: {str(e).splitlines()[0]} (truncated or not a torch file?); "
                              "download or export it again") from None
    if isinstance(state, dict) and {"model", "optimizer"} <= set(state):  # pretrain's checkpoint.pt, or the like
        raise CheckpointError(f"{path} is a training checkpoint (model AND optimizer state, keys "
                              f"{sorted(map(str, state))[:5]}), not a model: pass the model folder its run exported "
                              f"({path.parent / 'final'} for a pretraining run), or resume that run with --resume")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = f" with keys {sorted(map(str, state))[:5]}" if isinstance(state, dict) else ""
        raise CheckpointError(f"{path} does not hold a flat name → tensor dict (a state_dict); got "
                              f"{type(state).__name__}{keys}: save model.state_dict() itself (e.g. "
                              f"torch.save(checkpoint['state_dict'], 'pytorch_model.bin'))")
    return state


class HFWeights:
    """The tensors of a Hugging Face (or minibert) weight file or shard set: names, shapes and a reader.

    Attributes:
      path: the weight file (or index) that was opened.
      shapes: tensor name → shape, known without reading the data for safetensors.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.shapes: Dict[str, Shape] = {}
        self._readers: Dict[str, Callable[[], torch.Tensor]] = {}
        name = self.path.name
        if not self.path.is_file():
            raise CheckpointError(f"weight file {self.path} not found; expected one of {WEIGHT_FILES}")
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads(self.path.read_text(encoding="utf-8"))["weight_map"]
                if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                    raise TypeError(f"'weight_map' is a {type(weight_map).__name__}, not {{tensor name: shard file}}")
            except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
                raise CheckpointError(f"{self.path} is not a shard index with a 'weight_map' ({e!r}); download or "
                                      f"export the checkpoint again") from None
            for shard in sorted(set(weight_map.values())):
                self._add_file(self.path.parent / shard)
            missing = set(weight_map) - set(self.shapes)
            if missing:
                raise CheckpointError(f"{self.path} lists {sorted(missing)[:3]} but their shard files lack them")
        else:
            self._add_file(self.path)

    def _add_file(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointError(f"shard {path} listed in {self.path} not found; download all shards")
        if path.suffix == ".safetensors":
            handle = _open_safetensors(path)
            for key in handle.keys():
                self.shapes[key] = tuple(handle.get_slice(key).get_shape())
                self._readers[key] = lambda key=key, handle=handle, path=path: _get_tensor(handle, key, path)
        else:
            state = load_torch_bin(path)
            for key, tensor in state.items():
                self.shapes[key] = tuple(tensor.shape)
                self._readers[key] = lambda tensor=tensor: tensor

    def read(self, name: str) -> torch.Tensor:
        """One tensor by its name in the file."""
        if name not in self._readers:
            raise CheckpointError(f"tensor {name!r} not in {self.path}")
        return self._readers[name]()


def _get_tensor(handle, key: str, path: Path) -> torch.Tensor:
    try:
        return handle.get_tensor(key)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read tensor {key!r} from {path}: {str(e).splitlines()[0]} (truncated file?)") from None


# minibert classes whose transformers counterpart has the same name (and the same parameter layout).
HF_ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
                    "BertForTokenClassification")


def hf_architecture(class_name: str, state_dict_keys) -> str:
    """The transformers class matching a minibert model: same class name, else read off its parameters."""
    if class_name in HF_ARCHITECTURES:
        return class_name
    keys = set(state_dict_keys)
    if "nsp_head.weight" in keys:
        return "BertForPreTraining"
    if "mlm_head.bias" in keys:
        return "BertForMaskedLM"
    if "classifier.weight" in keys:
        return "BertForSequenceClassification"
    return "BertModel"


def hf_config_dict(config_dict: dict, architecture: str, num_labels: int = 0, multi_label: bool = False) -> dict:
    """config.json for transformers: minibert's fields (already HF names) plus HF's bookkeeping keys."""
    extra = {"architectures": [architecture], "model_type": "bert", "position_embedding_type": "absolute"}
    if num_labels:
        extra["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        extra["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    if architecture == "BertForSequenceClassification":  # without it, transformers scores with a softmax
        extra["problem_type"] = "multi_label_classification" if multi_label else "single_label_classification"
    return {**config_dict, **extra}
