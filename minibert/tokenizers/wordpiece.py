"""WordPiece (子词 subword) tokenizer for real-text BERT checkpoints, from vocab.txt or tokenizer.json.

How BERT tokenises (分词 tokenization) a text, in three stages that `tokenizers` runs in Rust:

1. Normalise (BertNormalizer): drop control characters, turn every whitespace into " ", put spaces
   around each CJK character (so Chinese is split into single characters), optionally lower-case
   and strip accents ("Héllo" -> "hello": NFD-decompose, then drop the combining marks).
2. Pre-tokenise (BertPreTokenizer): split on whitespace and make every punctuation mark its own word.
3. WordPiece: split each word into subwords, GREEDILY, LONGEST MATCH FIRST:
   start at the word's first character and take the longest prefix that is in the vocabulary; then
   continue from where it stopped, now looking up "##" + prefix (`##` marks "continues the previous
   piece"), until the word is used up. With Google's uncased vocab, "unaffable" goes:
       longest known prefix of "unaffable"    = "una"    rest "ffable"
       longest known "##" prefix of "ffable"  = "##ffa"  rest "ble"
       longest known "##" prefix of "ble"     = "##ble"  done  => ["una", "##ffa", "##ble"]
   If at some point NO prefix of the rest is in the vocabulary, the WHOLE word becomes [UNK] (not just
   the tail), and so does any word longer than 100 characters (HF's limit; Google's tokenization.py allows 200).
   Greedy is not optimal segmentation; it is what BERT was trained with, so we must match it exactly (Wu et
   al. 2016; Devlin et al. 2019).

Finally the post-processor adds [CLS]/[SEP] and token_type_ids (see base.py).
"""

from __future__ import annotations

import os

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from minibert.tokenizers.base import TokenizerBase, bert_template, check_special_tokens, require_file
from minibert.training.io import atomic_write_text  # temp file + os.replace: no half-written vocab

# HF's BertTokenizer / tokenizers WordPiece limit (google-research/bert uses 200); longer words become [UNK].
MAX_INPUT_CHARS_PER_WORD = 100


class WordPieceTokenizer(TokenizerBase):
    """BERT's WordPiece tokenizer. Build it with `from_file` (or `from_vocab_txt`/`from_tokenizer_json`).

    Encoding, batching, decoding and the special ids come from `TokenizerBase`.
    """

    @classmethod
    def from_file(cls, path: str | os.PathLike, **vocab_txt_options) -> "WordPieceTokenizer":
        """Load from a vocab.txt, a tokenizer.json, or a folder holding either.

        A folder: its tokenizer.json wins when present (it records lower-casing etc.), else vocab.txt.

        Args:
            path: file or folder.
            **vocab_txt_options: lowercase / strip_accents / tokenize_chinese_chars, see `from_vocab_txt`;
                only for vocab.txt, because a tokenizer.json carries its own settings.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            json_path = os.path.join(path, "tokenizer.json")
            path = json_path if os.path.isfile(json_path) else os.path.join(path, "vocab.txt")
        if path.endswith(".json"):
            if vocab_txt_options:
                raise ValueError(f"options {sorted(vocab_txt_options)} apply to a vocab.txt only; {path!r} "
                                 "carries its own normaliser settings, so drop these options")
            return cls.from_tokenizer_json(path)
        return cls.from_vocab_txt(path, **vocab_txt_options)

    @classmethod
    def from_vocab_txt(cls, path: str | os.PathLike, lowercase: bool = True, strip_accents: bool | None = None,
                       tokenize_chinese_chars: bool = True) -> "WordPieceTokenizer":
        """Build BERT's tokenizer around a vocab.txt (one token per line, id = line number from 0).

        Args:
            path: the vocab.txt.
            lowercase: lower-case the text first (True for "uncased" checkpoints, False for "cased").
            strip_accents: remove accents; None means "do it exactly when lowercase", as original BERT.
            tokenize_chinese_chars: surround every CJK character with spaces so each is its own word.
        """
        path = require_file(path, "WordPiece vocab.txt",
                            "pass the vocab.txt that ships with the checkpoint (one token per line)")
        vocab = models.WordPiece.read_file(path)  # token -> id, ids = line numbers
        backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                             max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents, lowercase=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")  # "una ##ffa ##ble" -> "unaffable"
        check_special_tokens(vocab, path)  # before bert_template, which needs the [CLS]/[SEP] ids
        backend.post_processor = bert_template(vocab["[CLS]"], vocab["[SEP]"])
        return cls(backend, path)

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> "WordPieceTokenizer":
        """Load a Hugging Face tokenizer.json as is: its normaliser, pre-tokeniser and template are kept.

        Its stored padding/truncation are dropped: here they are chosen per call (max_length).
        """
        path = require_file(path, "tokenizer.json", "pass the tokenizer.json saved next to the checkpoint")
        try:
            backend = Tokenizer.from_file(path)
        except Exception as error:  # the Rust parser raises a bare Exception
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"{path!r} is not a valid tokenizer.json ({first_line}); "
                             "pass a file written by tokenizers/transformers") from None
        if not isinstance(backend.model, models.WordPiece):
            raise ValueError(f"{path!r} holds a {type(backend.model).__name__} model, not WordPiece; "
                             "WordPieceTokenizer needs a BERT-style tokenizer.json")
        if backend.post_processor is None:  # a bare `tokenizers` WordPiece: without this, no [CLS]/[SEP] at all
            vocab = backend.get_vocab(with_added_tokens=True)
            check_special_tokens(vocab, path)
            backend.post_processor = bert_template(vocab["[CLS]"], vocab["[SEP]"])
        return cls(backend, path)

    def save(self, directory: str | os.PathLike) -> None:
        """Write vocab.txt (ids = line numbers) and tokenizer.json (also keeps lower-casing etc.)."""
        directory = os.fspath(directory)  # atomic_write_text creates the folder if needed
        self._configure(None, is_pair=False, pad=False)  # don't store the last call's padding in the file
        vocab = self.backend.get_vocab(with_added_tokens=True)  # token -> id
        tokens_by_id = sorted(vocab, key=vocab.get)
        if len(tokens_by_id) != self.vocab_size:
            raise ValueError(f"cannot write vocab.txt for {self.source!r}: its ids have gaps (duplicate "
                             "lines?), so line numbers would shift ids; deduplicate the vocabulary first")
        atomic_write_text(os.path.join(directory, "vocab.txt"), "\n".join(tokens_by_id) + "\n")
        atomic_write_text(os.path.join(directory, "tokenizer.json"), self.backend.to_str(pretty=True))
