"""The one interface every minibert tokenizer (分词器) shares, built on HF `tokenizers`.

Both tokenizers in this package are thin, readable wrappers around a `tokenizers.Tokenizer`
(the Rust library behind Hugging Face's fast tokenizers). The Rust side does all per-token work:
normalising, pre-tokenising, vocabulary lookup, adding [CLS]/[SEP], truncating and padding. This
file only turns its output into the shapes minibert needs and checks inputs, so encoding never
runs a Python loop per token.

The interface (`TokenizerBase`):
    encode(text, pair=None, max_length=None) -> dict of python lists
        input_ids, token_type_ids, attention_mask (no padding: one sequence needs none)
    encode_batch(texts, pairs=None, max_length=None) -> dict of torch.long tensors [B,T]
        dynamic padding to the longest sequence in the batch, capped at max_length
    encode_ids_batch(texts) -> list of np.int32 arrays, no specials, no padding, no truncation
        the fast path for preprocessing a whole corpus before pretraining
    decode(ids), convert_ids_to_tokens(ids)  for debugging
    vocab_size, pad_id, unk_id, cls_id, sep_id, mask_id, special_ids
    save(directory)  (each subclass writes at least vocab.txt)

Dimension legend: B batch size, T sequence length (after padding).

BERT input layout (Devlin et al. 2019, section 3), with segment ids (token_type_ids):
    single: [CLS] A1 A2 [SEP]              token_type_ids 0 0 0 0
    pair:   [CLS] A1 A2 [SEP] B1 B2 [SEP]  token_type_ids 0 0 0 0 1 1 1
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer, processors

# The five special tokens every BERT vocabulary (词表 vocabulary) needs, in the order a freshly built
# vocabulary stores them (so [PAD]=0 ... [MASK]=4). Loaded vocabularies may keep them elsewhere
# (Google's English vocab has [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103): we look them up.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def bert_template(cls_id: int, sep_id: int) -> processors.TemplateProcessing:
    """The BERT post-processor: adds [CLS]/[SEP] and sets token_type_ids (segment A 0, B 1).

    `:0`/`:1` is the token_type_id given to each piece; segment B's closing [SEP] belongs to B.
    """
    return processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def check_special_tokens(vocab: dict[str, int], source: str) -> None:
    """Raise a one-line ValueError naming `source` if `vocab` lacks any of SPECIAL_TOKENS."""
    glued = next((token for token in vocab if token.startswith("\ufeff")), None)
    if glued:  # an editor's byte-order mark: read as part of the first line, it hides that token ("lacks [PAD]")
        raise ValueError(f"vocabulary {source!r} starts with a UTF-8 byte-order mark (BOM), glued to its first token "
                         f"{glued[1:]!r}; save the file as UTF-8 without a BOM")
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(
            f"vocabulary {source!r} lacks special token(s) {' '.join(missing)}; add them as their own "
            f"lines (BERT puts {' '.join(SPECIAL_TOKENS)} first) or rebuild it with WhitespaceTokenizer.build"
        )


def raise_for_non_str(texts: list, pairs: list | None) -> None:
    """After a batch failed with a TypeError, name the first item that is not a str.

    Only called on the failure path, so encoding a valid batch never pays for this Python loop.
    """
    for name, items in (("texts", texts), ("pairs", pairs or [])):
        for index, item in enumerate(items):
            if not isinstance(item, str):
                message = f"{name}[{index}] is {type(item).__name__}, not str; every item must be a str"
                raise ValueError(message) from None  # hide the Rust TypeError: this line says it all


def require_file(path: str | os.PathLike, what: str, fix: str) -> str:
    """Return `path` as str, or raise a one-line FileNotFoundError naming it and the fix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}; {fix}")
    return path


class TokenizerBase:
    """Shared encode/decode logic over a `tokenizers.Tokenizer` whose vocabulary holds SPECIAL_TOKENS.

    Subclasses build the Rust `backend` (model, normaliser, pre-tokeniser, post-processor) and pass it
    here. Note: padding/truncation are settings ON the backend, so each call sets them first; one
    tokenizer object must therefore not be shared between threads that encode concurrently.

    Args:
        backend: a `tokenizers.Tokenizer` whose post-processor adds [CLS]/[SEP] (see `bert_template`).
        source: where the vocabulary came from (a path or a description), used in error messages.
    """

    def __init__(self, backend: Tokenizer, source: str):
        vocab = backend.get_vocab(with_added_tokens=True)  # token -> id
        check_special_tokens(vocab, source)
        # Mark them special so "[MASK]" in raw text maps to one id and decode() can skip them.
        backend.add_special_tokens(list(SPECIAL_TOKENS))
        backend.no_padding()  # a tokenizer.json may carry its own fixed padding/truncation:
        backend.no_truncation()  # we set both per call instead
        self.backend = backend
        self.source = source
        self.special_tokens = {token: vocab[token] for token in SPECIAL_TOKENS}  # e.g. {"[PAD]": 0, ...}
        self.pad_id = self.special_tokens["[PAD]"]
        self.unk_id = self.special_tokens["[UNK]"]
        self.cls_id = self.special_tokens["[CLS]"]
        self.sep_id = self.special_tokens["[SEP]"]
        self.mask_id = self.special_tokens["[MASK]"]
        # max id + 1, not len(vocab): a vocab.txt with a duplicated line leaves a gap in the ids,
        # and the embedding table must still have a row for the largest id.
        self.vocab_size = max(vocab.values()) + 1

    @property
    def special_ids(self) -> list[int]:
        """Sorted ids of [PAD] [UNK] [CLS] [SEP] [MASK]; MLM masking must never pick these positions."""
        return sorted(self.special_tokens.values())

    # ----------------------------------------------------------------------------------- encoding
    def encode(self, text: str, pair: str | None = None, max_length: int | None = None) -> dict[str, list[int]]:
        """Encode one text (or one text pair) with [CLS]/[SEP], optionally truncated, never padded.

        Args:
            text: segment A.
            pair: optional segment B (next sentence, question's context, ...). None means no pair;
                "" is an EMPTY segment B (a second [SEP]), the same in encode_batch.
            max_length: cap on the total length INCLUDING [CLS]/[SEP]; None means no cap. A pair is
                cut longest-first: tokens come off the end of the longer segment, as in BERT's
                `_truncate_seq_pair`. One detail is HF's: when both segments must shrink to share an
                odd budget, the spare token stays with the originally longer one, and with B on a tie
                (BERT: always A). Fine-tuning cuts pairs with finetune/features.py:longest_first, which
                follows BERT's rule exactly.

        Returns:
            {"input_ids": [...], "token_type_ids": [...], "attention_mask": [...]}, all of length T.
        """
        if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
            bad_name, bad = ("text", text) if not isinstance(text, str) else ("pair", pair)
            raise ValueError(f"encode({bad_name}=...) expects a str, got {type(bad).__name__}; "
                             "use encode_batch for a list of texts")
        self._configure(max_length, is_pair=pair is not None, pad=False)
        encoding = self.backend.encode(text, pair)
        return {"input_ids": encoding.ids, "token_type_ids": encoding.type_ids,
                "attention_mask": encoding.attention_mask}

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                     max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Encode a batch, padding every row with [PAD] to the longest row (at most max_length).

        Args:
            texts: B strings (segment A).
            pairs: optional B strings (segment B), one per text.
            max_length: cap on each row's length including specials; None means no cap.

        Returns:
            {"input_ids", "token_type_ids", "attention_mask"}: torch.long tensors [B,T];
            attention_mask is 1 on real tokens and 0 on padding, padding has token_type_id 0.
        """
        texts = self._check_batch(texts, "texts")
        if pairs is not None:
            pairs = self._check_batch(pairs, "pairs")
            if len(pairs) != len(texts):
                raise ValueError(f"encode_batch got {len(texts)} texts but {len(pairs)} pairs; "
                                 "pass exactly one pair per text (or pairs=None)")
        self._configure(max_length, is_pair=pairs is not None, pad=True)
        inputs = texts if pairs is None else list(zip(texts, pairs))
        encodings = self._run_batch(inputs, texts, pairs, add_special_tokens=True)
        # One list per row, never per token: torch copies the nested lists in C.
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),  # [B,T]
            "token_type_ids": torch.tensor([e.type_ids for e in encodings], dtype=torch.long),  # [B,T]
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),  # [B,T]
        }

    def encode_ids_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Fast corpus path: each text's token ids, WITHOUT [CLS]/[SEP], padding or truncation.

        For preprocessing a pretraining corpus (the pipeline adds specials when it packs sequences).
        The Rust backend encodes the batch on all cores (WhitespaceTokenizer overrides this with a
        cheaper exact lookup). Pass chunks of a few thousand lines rather than a whole corpus: until
        they are converted, the intermediate Encoding objects hold offsets and token strings.

        Args:
            texts: N strings.

        Returns:
            N one-dimensional np.int32 arrays (int32 halves memory; any vocabulary fits).
        """
        texts = self._check_batch(texts, "texts", allow_empty=True)
        self._configure(None, is_pair=False, pad=False)
        encodings = self._run_batch(texts, texts, None, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    # ----------------------------------------------------------------------------------- decoding
    def convert_ids_to_tokens(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> list[str]:
        """Map ids back to vocabulary strings (debugging aid; loops in Python, so not for hot paths)."""
        return [self.backend.id_to_token(i) for i in self._check_ids(ids)]

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Turn ids back into text (WordPiece glues `##` pieces back onto their word)."""
        return self.backend.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------------------------ helpers
    def _configure(self, max_length: int | None, is_pair: bool, pad: bool) -> None:
        """Set the backend's truncation and padding for the next call (they are stored state)."""
        if max_length is None:
            self.backend.no_truncation()
        else:
            if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length <= 0:
                raise ValueError(f"max_length={max_length!r} must be a positive int (tokens per sequence "
                                 "including [CLS]/[SEP]); pass e.g. max_length=128, or None for no cap")
            specials = self.backend.num_special_tokens_to_add(is_pair)
            if max_length <= specials:
                # The Rust truncator would silently NOT truncate here, so we must refuse.
                kind = "a text pair" if is_pair else "a single text"
                raise ValueError(f"max_length={max_length} leaves no room for text: {kind} already takes "
                                 f"{specials} [CLS]/[SEP] positions; use max_length >= {specials + 1}")
            self.backend.enable_truncation(int(max_length), strategy="longest_first")
        if pad:
            self.backend.enable_padding(pad_id=self.pad_id, pad_type_id=0, pad_token="[PAD]")
        else:
            self.backend.no_padding()

    @staticmethod
    def _check_batch(items, name: str, allow_empty: bool = False) -> list:
        """A list of the batch; refuses a bare str (it would be read as a batch of characters)."""
        if isinstance(items, str):
            raise ValueError(f"{name}= must be a list of str, got a single str; wrap it as [text] "
                             "or call encode(text)")
        items = list(items)
        if not items and not allow_empty:
            raise ValueError(f"{name}= is an empty list; pass at least one text")
        return items

    def _run_batch(self, inputs: list, texts: list, pairs: list | None, add_special_tokens: bool):
        try:
            return self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        except TypeError:
            raise_for_non_str(texts, pairs)
            raise

    def _check_ids(self, ids) -> list[int]:
        array = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D sequence of ints, got shape {array.shape} dtype {array.dtype}; "
                             "decode one row at a time")
        if array.size and (array.min() < 0 or array.max() >= self.vocab_size):
            raise ValueError(f"ids contain {int(array.min())}..{int(array.max())}, outside the vocabulary "
                             f"[0, {self.vocab_size}); were they made with a different vocab.txt?")
        return array.tolist()
