"""Checkpoint conversion: Google TF ⇄ Hugging Face ⇄ minibert, with a coverage report for every load.

Reading order: mapping.py (THE name table) → convert.py (applies it) → report.py → tf_bundle.py (TF files
without TensorFlow) → hf_io.py (safetensors / .bin) → pretrained.py (from_pretrained / save_pretrained) →
conversion.py (convert_checkpoint: a checked conversion into a folder, what weights_convert.py runs).
"""

from .convert import apply_plan, minibert_to_hf, plan_conversion
from .errors import CheckpointError
from .pretrained import (LoadResult, PretrainedMixin, Source, from_pretrained, load_pretrained, open_source,
                         save_pretrained)
from .report import CoverageReport
from .tf_bundle import TFCheckpoint

__all__ = ["CheckpointError", "CoverageReport", "LoadResult", "PretrainedMixin", "Source", "TFCheckpoint",
           "apply_plan", "convert_checkpoint", "from_pretrained", "load_pretrained", "minibert_to_hf", "open_source",
           "plan_conversion", "save_pretrained"]


def __getattr__(name):
    # conversion.py builds minibert's model classes, and minibert/model.py imports this package before it defines
    # them: importing conversion here, eagerly, would be a circular import. So it is loaded when first asked for.
    if name == "convert_checkpoint":
        from .conversion import convert_checkpoint
        return convert_checkpoint
    raise AttributeError(f"module 'minibert.checkpoint' has no attribute {name!r}")
