"""Checkpoint conversion: Google TF ⇄ Hugging Face ⇄ minibert, with a coverage report for every load.

Reading order: mapping.py (THE name table) → convert.py (applies it) → report.py → tf_bundle.py (TF files
without TensorFlow) → hf_io.py (safetensors / .bin) → source.py (which format a path holds, and the config and
vocab beside it) → pretrained.py (from_pretrained / save_pretrained) → conversion.py (convert_checkpoint: a checked
conversion into a folder, what weights_convert.py runs; import it from minibert.checkpoint.conversion, since it
builds the model classes that minibert/model.py imports this package for).
"""

from .convert import apply_plan, minibert_to_hf, plan_conversion
from .errors import CheckpointError
from .pretrained import LoadResult, PretrainedMixin, from_pretrained, load_pretrained, save_pretrained
from .source import Source, open_source
from .report import CoverageReport
from .tf_bundle import TFCheckpoint

__all__ = ["CheckpointError", "CoverageReport", "LoadResult", "PretrainedMixin", "Source", "TFCheckpoint",
           "apply_plan", "from_pretrained", "load_pretrained", "minibert_to_hf", "open_source", "plan_conversion",
           "save_pretrained"]

