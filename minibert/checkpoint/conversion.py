"""Converting a checkpoint to minibert's or Hugging Face's layout, checked, in one call: `convert_checkpoint`.

`weights_convert.py` is only its command line; this module holds the decisions, so Python code can convert without
importing a top-level script. The steps: refuse a DST whose replacement would delete something a conversion did not
write (`check_destination`), pick the minibert class and head arguments that keep every head the source has
(`choose_model`), load (the coverage report), write into a staging folder beside DST, and rename it to DST only
after the self-check passes: finite outputs on a fixed input, and the written folder reloads to the same outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..heads import BertForSequenceClassification, BertForTokenClassification
from ..model import BertForMaskedLM, BertForPreTraining, BertModel
from ..training.io import staging_folder
from .convert import canonical_source_name, parts_present
from .errors import CheckpointError
from .hf_io import WEIGHT_FILES
from .pretrained import from_pretrained, json_object, load_pretrained, save_pretrained, saved_head_settings
from .source import CONFIG_FILES, VOCAB_FILES, open_source

MODEL_CLASSES = {"base": BertModel, "mlm": BertForMaskedLM, "pretraining": BertForPreTraining,
                 "cls": BertForSequenceClassification, "tokens": BertForTokenClassification}
OUTPUT_FILES = {*CONFIG_FILES, *VOCAB_FILES, *WEIGHT_FILES}  # what an earlier conversion's DST may hold


def check_destination(src: Path, dst: Path) -> None:
    """DST is replaced as a whole (staging_folder), so it must be new or an earlier conversion's output: a folder
    holding anything else, the source above all, would be deleted with it."""
    source_folder = src if src.is_dir() else src.parent
    if dst.resolve() == source_folder.resolve() or dst.resolve() == src.resolve():
        raise CheckpointError(f"DST {dst} is the source's own folder: converting in place would overwrite the "
                              f"original; pass another output folder")
    if dst.exists() and not dst.is_dir():
        raise CheckpointError(f"DST {dst} is a file; pass a folder path")
    if dst.resolve() in source_folder.resolve().parents:
        raise CheckpointError(f"DST {dst} contains the source {src}: replacing it would delete the source; pass "
                              f"a new output folder")
    others = sorted(p.name for p in dst.iterdir() if p.name not in OUTPUT_FILES) if dst.is_dir() else []
    if others:
        raise CheckpointError(f"DST {dst} holds {others[:3]}{' ...' if len(others) > 3 else ''}, which a "
                              f"conversion's output never does: it replaces DST as a whole; pass a new folder")


def choose_model(name: str, src: str | Path) -> tuple[type, dict]:
    """The minibert class (and its head's arguments) that `name` (--model) means. auto keeps every head the source
    has: a classifier -> cls (tokens when its config.json's architectures or its finetune.json says token
    classification), else NSP -> pretraining, else MLM -> mlm, else base."""
    if name != "auto" and name not in MODEL_CLASSES:  # the CLI's choices catch this; a Python caller may not
        raise CheckpointError(f"model={name!r}: expected 'auto' or one of {', '.join(MODEL_CLASSES)}")
    source = open_source(src)
    parts = parts_present(source.shapes, source.format)
    if name == "auto":
        architectures = json_object(source.config_path).get("architectures") or []
        spec = json_object(source.path.parent / "finetune.json").get("spec")  # a fine-tuning run's best/ folder
        token_level = ("BertForTokenClassification" in architectures
                       or isinstance(spec, dict) and spec.get("label_kind") == "tags")
        name = (("tokens" if token_level else "cls") if "classifier" in parts else "pretraining" if "nsp" in parts
                else "mlm" if "mlm" in parts else "base")
    if name not in ("cls", "tokens"):
        return MODEL_CLASSES[name], {}
    weights = [shape for tensor, shape in source.shapes.items()
               if canonical_source_name(tensor, source.format) in ("classifier.weight", "output_weights")]
    if not weights:
        raise CheckpointError(f"--model {name}: {source.path} holds no classifier (classifier.weight or TF "
                              f"output_weights); use --model auto")
    kwargs = {"num_labels": weights[0][0]}  # classifier weight [C,H]
    if name == "cls":
        kwargs.update(saved_head_settings(source))
        if "representation" not in kwargs:  # a minibert classifier saved before it was recorded
            if "pooler" not in parts:
                raise CheckpointError(f"{source.path} does not record which representation its classifier reads "
                                      f"([CLS] or mean): load it in Python with from_pretrained("
                                      f"BertForSequenceClassification, ..., representation=...) and save it again")
            kwargs["representation"] = "pooler"
    return MODEL_CLASSES[name], kwargs


def fixed_outputs(model) -> list:
    """The model's output tensors for a fixed batch of 2×8 token IDs (the second row padded)."""
    vocab_size = model.config.vocab_size
    input_ids = (torch.arange(16).reshape(2, 8) * 7 + 1) % vocab_size  # [B,T] = [2,8]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0  # padding: exercises the attention mask
    with torch.no_grad():
        out = model.eval()(input_ids, attention_mask=attention_mask)
    return [v for v in vars(out).values() if isinstance(v, torch.Tensor)]


def self_check(model, model_cls, head_arguments: dict, dst: str | Path) -> str:
    """Finite outputs, and the written DST reloads to the same outputs.

    Returns:
        the line that says so (the largest output magnitude, and that `dst` reloads identically).
    """
    before = fixed_outputs(model)
    if not all(torch.isfinite(t).all() for t in before):
        raise CheckpointError("self-check failed: the converted model gives non-finite outputs on a fixed input; "
                              "the source weights are probably corrupt")
    after = fixed_outputs(from_pretrained(model_cls, dst, **head_arguments))
    if not all(torch.equal(a, b) for a, b in zip(before, after)):
        raise CheckpointError(f"self-check failed: {dst} read back gives different outputs than the converted model")
    largest = max(t.abs().max().item() for t in before)
    return f"self-check: fixed 2x8 input -> outputs finite (max |value| {largest:.4g}); {dst} reloads identically"


def convert_checkpoint(src: str | Path, dst: str | Path, to: str = "minibert", model: str = "auto",
                       verbose: bool = False, log: Callable[[str], None] = print) -> Path:
    """Converts the checkpoint at `src` into the folder `dst`, replacing it only once the copy is checked.

    Args:
        src: TF checkpoint prefix / .index file / folder, or a minibert / HF folder (the format is detected).
            Its config and vocabulary must be beside it.
        dst: output folder: new, or an earlier conversion's output (it is replaced as a whole).
        to: "minibert" or "hf", the layout written.
        model: "auto" (keep every head the source has) or a key of MODEL_CLASSES.
        verbose: list every tensor in the coverage report.
        log: receives each line of progress: the source, the coverage report, the self-check, the result.
    Returns:
        dst, as a Path.
    Raises:
        CheckpointError (a ValueError): a DST that is unsafe to replace, an unreadable or non-finite source, or a
        failed self-check; DST is then left as it was.
    """
    dst = Path(dst)
    check_destination(Path(src), dst)
    model_cls, head_arguments = choose_model(model, src)
    result = load_pretrained(model_cls, src, require_vocab=True, **head_arguments)  # refuses NaN/inf weights
    log(f"{result.source.format} checkpoint {result.source.path} -> minibert {model_cls.__name__}")
    log(result.report.format(verbose=verbose))
    # Write into a temporary sibling folder and rename it into place only after the self-check: a failed or
    # killed conversion never leaves a complete-looking (but wrong) model in DST.
    with staging_folder(dst) as staging:
        save_pretrained(result.model, staging, format=to, vocab=result.source.vocab_path)
        log(self_check(result.model, model_cls, head_arguments, staging).replace(str(staging), str(dst)))
    log(f"wrote {to} layout to {dst}")
    return dst
