"""minibert: a readable, fast BERT written from scratch in PyTorch.

Reading order: config.py -> layers.py -> model.py -> tokenizers -> checkpoint/ -> training/.
"""

from .config import BertConfig
from .input_checks import IGNORE_INDEX
from .model import (BertForMaskedLM, BertForPreTraining, BertModel, BertOutput, MaskedLMOutput,
                    PreTrainingOutput)

__all__ = ["BertConfig", "BertModel", "BertForMaskedLM", "BertForPreTraining", "BertOutput", "MaskedLMOutput",
           "PreTrainingOutput", "IGNORE_INDEX", "WordPieceTokenizer", "WhitespaceTokenizer"]


def __getattr__(name):
    # The tokenizers import the `tokenizers` library; load them only when asked for, so `import minibert`
    # stays light for scripts that only need the model.
    if name in ("WordPieceTokenizer", "WhitespaceTokenizer"):
        from . import tokenizers
        return getattr(tokenizers, name)
    raise AttributeError(f"module 'minibert' has no attribute {name!r}")
