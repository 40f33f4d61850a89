"""Applies the mapping table (mapping.py) to real checkpoints, and accounts for every tensor.

Conversion runs in two steps so that mistakes surface before any weight is read:
  1. `plan_conversion` looks only at NAMES and SHAPES: it decides, for every source tensor, whether it is
     consumed (and by which minibert parameter) or skipped (and why), and for every target parameter whether
     it is loaded or freshly initialised (and why). Anything unexplained, any shape mismatch → CheckpointError.
  2. `apply_plan` reads the needed tensors (TF optimizer slots are never even read) and applies the transforms.
`minibert_to_hf` is the reverse direction for export.
"""

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import mapping
from .errors import CheckpointError
from .report import CoverageReport

Shape = Tuple[int, ...]
BERT_PREFIX = "bert."  # where wrapper models (MLM, pretraining, classification) keep the encoder
# A training wrapper's prefix on EVERY key: a state_dict saved from the wrapper instead of the model inside it
WRAPPER_PREFIXES = {"module.": "DistributedDataParallel / DataParallel (save model.module.state_dict())",
                    "_orig_mod.": "torch.compile (save the model you passed to torch.compile)"}
FORMATS = ("minibert", "hf", "tf")


def _source_names(row: mapping.WeightRow, source_format: str) -> Tuple[str, ...]:
    return {"minibert": (row.minibert,), "hf": row.hf, "tf": row.tf}[source_format]


def expand_rows(num_layers: int):
    """Yields (relative minibert name, row, layer index or None) for every parameter of an L-layer BERT."""
    for row in mapping.BERT_ROWS + mapping.HEAD_ROWS:
        for i in (range(num_layers) if row.per_layer else [None]):
            yield row.minibert.format(i=i), row, i


def _strip_prefix(name: str) -> str:
    return name[len(BERT_PREFIX):] if name.startswith(BERT_PREFIX) else name


def _full_target_name(row: mapping.WeightRow, relative: str, wrapped: bool) -> str:
    return BERT_PREFIX + relative if wrapped and row.in_encoder else relative


def _expected_shape(row, source_format, part_shapes: List[Shape], source_names) -> Shape:
    """The minibert shape the source tensors will produce (after transpose / concat)."""
    if source_format == "tf" and row.tf_transpose:
        part_shapes = [tuple(reversed(s)) for s in part_shapes]
    if len({s[1:] for s in part_shapes}) != 1:
        raise CheckpointError(f"fused tensors {list(source_names)} have incompatible shapes {part_shapes}: "
                              "they must differ only in their first dimension")
    return (sum(s[0] for s in part_shapes),) + part_shapes[0][1:]


def canonical_source_name(name: str, source_format: str) -> str:
    """The name the table uses for a source tensor: `bert.` stripped, legacy HF names updated."""
    if source_format == "tf":
        return name
    name = _strip_prefix(name)
    return mapping.hf_canonical_name(name) if source_format == "hf" else name


def parts_present(source_names, source_format: str) -> set:
    """Which parts (embeddings, pooler, mlm, nsp, classifier...) a checkpoint holds, from its tensor names."""
    names = {canonical_source_name(n, source_format) for n in source_names}
    return {row.part for row in mapping.BERT_ROWS + mapping.HEAD_ROWS
            if not row.per_layer and set(_source_names(row, source_format)) <= names}


@dataclass
class ConversionPlan:
    source_format: str
    report: CoverageReport
    # target name → (table row, or None for a minibert-only head copied as is; source names to read)
    sources: Dict[str, Tuple[Optional[mapping.WeightRow], Tuple[str, ...]]] = field(default_factory=dict)
    must_equal: List[Tuple[str, str]] = field(default_factory=list)  # (source name, source name) checked identical


def plan_conversion(source_shapes: Dict[str, Shape], source_format: str,
                    target_shapes: Dict[str, Shape], num_layers: int) -> ConversionPlan:
    """Decides where every source tensor goes, from names and shapes only.

    Args:
      source_shapes: source tensor name → shape, as stored in the checkpoint.
      source_format: "minibert", "hf" or "tf".
      target_shapes: the target model's state_dict name → shape.
      num_layers: L of the config (source layers beyond it are unexplained, hence an error).

    Returns:
      a ConversionPlan whose report accounts for every source tensor and every target parameter.
    """
    if source_format not in FORMATS:
        raise CheckpointError(f"unknown source format {source_format!r}; expected one of {FORMATS}")
    wrapper = next((prefix for prefix in WRAPPER_PREFIXES
                    if source_shapes and all(name.startswith(prefix) for name in source_shapes)), None)
    if wrapper:  # before any name is matched: "no tensor for ..." or "extra layers?" would hide the real cause
        raise CheckpointError(f"every {source_format} tensor name starts with {wrapper!r}, the prefix of "
                              f"{WRAPPER_PREFIXES[wrapper]}: save the inner model's weights, or strip it: "
                              f"{{k.removeprefix({wrapper!r}): v for k, v in state.items()}}")
    report = CoverageReport(source_format)
    plan = ConversionPlan(source_format, report)
    # Canonical source names: strip `bert.`, undo legacy HF names; remember the real name for reading.
    canonical: Dict[str, str] = {}
    for real in source_shapes:
        name = canonical_source_name(real, source_format)
        if name in canonical:  # e.g. both cls.predictions.bias and cls.predictions.decoder.bias
            plan.must_equal.append((real, canonical[name]))
            report.skipped.append((real, f"duplicate of {canonical[name]} (tied in HF; values checked identical)"))
        else:
            canonical[name] = real
    wrapped = any(k.startswith(BERT_PREFIX) for k in target_shapes)
    targets_left = dict(target_shapes)
    sources_left = dict(canonical)
    loaded_parts, fresh_parts = set(), {}  # part -> fresh targets: a head loads whole or not at all

    for relative, row, i in expand_rows(num_layers):
        names = tuple(n.format(i=i) for n in _source_names(row, source_format))
        present = [n for n in names if n in sources_left]
        target = _full_target_name(row, relative, wrapped)
        if target not in targets_left:
            for n in present:
                report.skipped.append((sources_left.pop(n), mapping.NOT_IN_TARGET_REASONS.get(
                    row.part, f"target model has no parameter {target}")))
            continue
        target_shape = tuple(targets_left.pop(target))
        if present and len(present) < len(names):
            missing = [n for n in names if n not in present]
            raise CheckpointError(f"source has {present} but not {missing}: all of {list(names)} are needed for {target}")
        if not present:
            if row.part not in mapping.FRESH_REASONS:
                raise CheckpointError(f"{source_format} source has no tensor for {target}: expected "
                                      f"{' + '.join(names)}; the checkpoint is incomplete or has a different layout")
            report.fresh.append((target, mapping.FRESH_REASONS[row.part]))
            fresh_parts.setdefault(row.part, []).append(target)
            continue
        real_names = tuple(sources_left.pop(n) for n in names)
        shape = _expected_shape(row, source_format, [tuple(source_shapes[r]) for r in real_names], real_names)
        if shape != target_shape:
            raise CheckpointError(f"shape mismatch for {target}: checkpoint {' + '.join(real_names)} gives {list(shape)}, "
                                  f"the model expects {list(target_shape)}; check the config matches the checkpoint")
        plan.sources[target] = (row, real_names)
        report.loaded.append(target)
        report.consumed.extend((r, target) for r in real_names)
        loaded_parts.add(row.part)
    for part in loaded_parts & fresh_parts.keys():  # e.g. an MLM head without its bias: not "no MLM head"
        raise CheckpointError(f"{source_format} source has part of its {part} weights but not "
                              f"{', '.join(fresh_parts[part])}; the checkpoint is incomplete: a head is loaded "
                              f"whole or initialised whole, so re-export it, or drop the head's tensors entirely")

    for target in [t for t in targets_left if mapping.minibert_only_head(t)]:  # e.g. GlobalPointer
        target_shape = tuple(targets_left.pop(target))
        if source_format == "minibert" and target in sources_left:
            real = sources_left.pop(target)
            if tuple(source_shapes[real]) != target_shape:
                raise CheckpointError(f"shape mismatch for {target}: checkpoint has {list(source_shapes[real])}, "
                                      f"the model expects {list(target_shape)}; check num_labels / head sizes")
            plan.sources[target] = (None, (real,))
            report.loaded.append(target)
            report.consumed.append((real, target))
        else:
            report.fresh.append((target, f"{mapping.minibert_only_head(target)}: freshly initialised"))

    unexplained = []
    for name, real in sources_left.items():
        reason = mapping.skip_reason(name)
        if mapping.minibert_only_head(name):
            reason = f"target model has no {mapping.minibert_only_head(name)}"
        if source_format == "hf" and name == mapping.TIED_TO_WORD_EMBEDDINGS:
            word = canonical.get("embeddings.word_embeddings.weight")
            reason = "MLM decoder weight, tied to the word embeddings (values checked identical)"
            if word is not None:
                plan.must_equal.append((real, word))
        if reason is None:
            unexplained.append(real)
        else:
            report.skipped.append((real, reason))
    if unexplained:
        layer_hint = any(re.search(r"layers?[._/]\d+", n) for n in unexplained)
        hint = (f"; extra layers? the config says num_hidden_layers={num_layers}" if layer_hint
                else "; add a row to minibert/checkpoint/mapping.py if it is a real weight")
        raise CheckpointError(f"{len(unexplained)} {source_format} tensor(s) not explained by the mapping table, "
                              f"e.g. {unexplained[:3]}{hint}")
    if targets_left:
        raise CheckpointError(f"target parameter(s) {sorted(targets_left)[:3]} have no row in the mapping table: "
                              "add one to HEAD_ROWS in minibert/checkpoint/mapping.py")
    if source_format == "hf" and "mlm" in {row.part for row, _ in plan.sources.values()} \
            and mapping.TIED_TO_WORD_EMBEDDINGS not in canonical:
        report.notes.append("MLM decoder weight absent in the source: taken from the word embeddings (tied)")
    return plan


def _to_torch(array) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(array))
    return array


def apply_plan(plan: ConversionPlan, read: Callable[[str], object]) -> Dict[str, torch.Tensor]:
    """Reads the planned source tensors and turns them into minibert tensors.

    Args:
      plan: from plan_conversion.
      read: source name → numpy array or torch tensor.

    Returns:
      target name → tensor for every LOADED target parameter (fresh ones are left to the model's init).
    """
    result = {}
    for target, (row, names) in plan.sources.items():
        parts = [_to_torch(read(n)) for n in names]
        if plan.source_format == "tf" and row is not None and row.tf_transpose:
            parts = [p.t() for p in parts]  # TF kernel [in,out] → torch weight [out,in]
        result[target] = (torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]).contiguous()  # fused Q,K,V
    for name, other in plan.must_equal:
        if not torch.equal(_to_torch(read(name)), _to_torch(read(other))):
            raise CheckpointError(f"{name} differs from {other}, but minibert ties them: untied checkpoints "
                                  "cannot be represented exactly; re-export the source with tied weights")
    return result


def minibert_to_hf(state_dict: Dict[str, torch.Tensor], num_layers: int) -> Dict[str, torch.Tensor]:
    """Renames (and splits Q/K/V of) a minibert state_dict into Hugging Face names.

    Wrapper models (keys under `bert.`) keep HF's `bert.` prefix; a bare BertModel exports without it,
    exactly as transformers itself saves BertModel and BertForMaskedLM.
    """
    wrapped = any(k.startswith(BERT_PREFIX) for k in state_dict)
    out, left = {}, dict(state_dict)
    for relative, row, i in expand_rows(num_layers):
        target = _full_target_name(row, relative, wrapped)
        if target not in left:
            continue
        tensor = left.pop(target)
        hf_names = [n.format(i=i) for n in row.hf]
        prefix = BERT_PREFIX if wrapped and row.in_encoder else ""
        for name, part in zip(hf_names, tensor.chunk(len(hf_names), dim=0)):  # [3H,...] → 3 × [H,...]
            out[prefix + name] = part
    if left:
        name = sorted(left)[0]
        what = mapping.minibert_only_head(name)
        raise CheckpointError(f"{name} belongs to the {what}: it has no Hugging Face counterpart; save with "
                              "format='minibert'" if what else f"minibert parameter(s) {sorted(left)[:3]} have no "
                              "row in the mapping table: add one to HEAD_ROWS in minibert/checkpoint/mapping.py")
    return out
