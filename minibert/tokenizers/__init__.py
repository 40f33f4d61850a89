"""Tokenizers (分词器) for minibert, built on Hugging Face's Rust `tokenizers` library.

- `WordPieceTokenizer`: BERT's WordPiece (子词 subword) tokenizer for real text, from a checkpoint's
  vocab.txt or tokenizer.json (wordpiece.py explains the greedy longest-match-first split).
- `WhitespaceTokenizer`: one vocabulary (词表) entry per whitespace-separated token, for anonymised
  integer-ID corpora such as Tianchi news; can build its vocabulary from a corpus.

Both share `TokenizerBase` (base.py): encode / encode_batch / encode_ids_batch / decode, vocab_size,
pad_id unk_id cls_id sep_id mask_id and special_ids, save(folder).
"""

from minibert.tokenizers.base import SPECIAL_TOKENS, TokenizerBase
from minibert.tokenizers.whitespace import WhitespaceTokenizer
from minibert.tokenizers.wordpiece import WordPieceTokenizer

__all__ = ["SPECIAL_TOKENS", "TokenizerBase", "WhitespaceTokenizer", "WordPieceTokenizer"]
