"""Pretraining data, part 1: read a corpus, get its vocabulary, encode it ONCE into a cached memmap.

Pipeline (part 2, batching.py, cuts the cached documents into model rows):

    corpus file ──read (streaming)──▶ texts ──vocab (词表: built or given)──▶ token ids ──▶ cache/<key>/
        tokens.bin  every document's ids back to back, no specials: uint16 when the vocab fits, else int32
        offsets.npy int64 [D+1]: document d is tokens[offsets[d]:offsets[d+1]]
        vocab.txt   the vocabulary the ids refer to (the trained model must ship with it)
        meta.json   sizes and the digests the key was made from

Readers: a TSV whose header has a `text` column (Tianchi `label\\ttext`; the label is ignored) or plain text with
one document per line. Both stream in ~8 MB chunks, so the 840 MB Tianchi train_set needs well under 1 GB of RAM.

Cache key = hash(corpus bytes, reader format, vocab.txt bytes, tokenizer kind, cache format version): a changed
corpus or vocabulary gets a new key, so a stale cache is never silently reused. Hashing reads the file once with
BLAKE2b (~600 MB/s). Cache folders are written under a temporary name and renamed into place (os.replace), so a
killed run never leaves a half-written cache that a later run would trust.

Encoding speed: tokens of an anonymised corpus are decimal integers, so we parse a whole document with one
`np.fromstring` call and map raw ids to vocab ids with one table lookup (~250 MB/s). Any other corpus goes through
the tokenizer's Rust path `encode_ids_batch` (correct for any token, ~2-7 MB/s on 2 cores).

Dimension legend: D documents, N tokens in the corpus.
"""
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from minibert.tokenizers import SPECIAL_TOKENS, WhitespaceTokenizer
from minibert.tokenizers.whitespace import EmptyVocabularyError
from minibert.training.io import remove_stale_temps, temp_name
from pretrain import corpus as generator
from pretrain.readers import decode_texts, detect_format, iter_text_chunks  # noqa: F401 (detect_format re-exported)

CACHE_FORMAT_VERSION = 2  # 2: BOM stripped from one-document-per-line corpora
PROGRESS_MIN_BYTES = 16 << 20     # progress bars only for files big enough to make you wait
MAX_UNKNOWN_SHARE = 0.5           # of the corpus's tokens: above it the vocab does not fit the corpus
MIN_TOKENS_PER_DOCUMENT = 1.5     # on average: below it the texts were not split into tokens (no spaces)
MAX_FAST_RAW_ID = 1 << 24         # integer fast path only for raw ids below this (its lookup table stays small)
DIGITS_AND_WHITESPACE = b"0123456789 \t\r\n\x0b\x0c"


def parse_integer_documents(texts):
    """Fast path: parses documents of whitespace-separated decimal IDs with numpy.

    Returns:
        (raw_ids int64 [total tokens], lengths int64 [len(texts)]), or None if any text holds something other
        than canonical decimal integers below MAX_FAST_RAW_ID (then the caller takes the tokenizer path).
    """
    joined = b" ".join(texts)
    if joined.translate(None, DIGITS_AND_WHITESPACE):  # C-speed: anything left is not a digit or a space
        return None
    codes = np.frombuffer(joined, dtype=np.uint8)
    digit = (codes >= ord("0")) & (codes <= ord("9"))
    first_digit = digit & ~np.concatenate([[False], digit[:-1]])              # first byte of each number
    if (first_digit[:-1] & (codes[:-1] == ord("0")) & digit[1:]).any():       # "007" is not the token "7"
        return None
    # The C parser, one call per document; strip() because it reads a blank text as [0], not [].
    arrays = [np.fromstring(text.strip(), dtype=np.int64, sep=" ") for text in texts]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    raw_ids = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    if raw_ids.size and raw_ids.max() >= MAX_FAST_RAW_ID:
        return None
    return raw_ids, lengths


def file_digest(path):
    """BLAKE2b of a file's bytes, read in 1 MB chunks (content, not size+mtime: a copy keeps its cache)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _key(*parts):
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def _progress(path, description):
    size = os.path.getsize(path)
    return tqdm(total=size, unit="B", unit_scale=True, desc=description, disable=size < PROGRESS_MIN_BYTES)


def build_vocab(path, corpus_format, min_freq=1, max_size=None):
    """Builds a frequency-sorted vocabulary from the corpus: [PAD] [UNK] [CLS] [SEP] [MASK], then tokens.

    Integer-ID corpora are counted with np.bincount; the ordering (count descending, ties by token string) is the
    one `WhitespaceTokenizer.build` uses, which any other corpus goes through (tests check both agree).
    """
    if max_size is not None and max_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"max_vocab_size: got {max_size}, must be > {len(SPECIAL_TOKENS)} (the specials take "
                         "5 ids); pass e.g. 8000, or leave it unset for no cap")
    counts = np.zeros(0, np.int64)
    with _progress(path, "counting tokens") as bar:
        for texts, bytes_read in iter_text_chunks(path, corpus_format):
            parsed = parse_integer_documents(texts)
            if parsed is None:  # not an ID corpus: the tokenizer's general (slower) builder
                texts = (t for chunk, _ in iter_text_chunks(path, corpus_format) for t in decode_texts(chunk, path))
                try:
                    return WhitespaceTokenizer.build(texts, min_freq=min_freq, max_size=max_size)
                except EmptyVocabularyError:  # name the file, not build()
                    raise ValueError(f"corpus: {path} holds no token (seen >= {min_freq} time(s)) but the special "
                                     f"ones ({' '.join(SPECIAL_TOKENS)}), which are never predicted; pass a file "
                                     f"with real text") from None
            chunk_counts = np.bincount(parsed[0])
            if len(chunk_counts) > len(counts):
                chunk_counts[: len(counts)] += counts
                counts = chunk_counts
            else:
                counts[: len(chunk_counts)] += chunk_counts
            bar.update(bytes_read)
    raw_ids = np.flatnonzero(counts >= max(min_freq, 1))
    if raw_ids.size == 0:
        raise ValueError(f"corpus: {path} holds no tokens; pass a file with at least one non-empty document")
    tokens = raw_ids.astype(str)
    order = np.lexsort((tokens, -counts[raw_ids]))  # last key is primary: count descending, then token string
    kept = tokens[order][: None if max_size is None else max_size - len(SPECIAL_TOKENS)]
    return WhitespaceTokenizer(list(SPECIAL_TOKENS) + kept.tolist(), f"<built from {path}>")


def integer_id_table(tokenizer):
    """table[raw integer token] = vocab id ([UNK] for raw ids not in the vocab), or None if some vocab entry is
    not a canonical decimal integer (then the integer fast path would not agree with the tokenizer)."""
    raw, ids = [], []
    for index, token in enumerate(tokenizer.tokens):  # once per vocab entry, not per corpus token
        if token in tokenizer.special_tokens:
            continue
        if not (token.isascii() and token.isdigit() and (token == "0" or token[0] != "0")):
            return None
        if int(token) < MAX_FAST_RAW_ID:  # a larger raw id sends its chunk down the tokenizer path anyway, so the
            raw.append(int(token))        # table need not reach it (one 8-digit id would cost an 800 MB table)
            ids.append(index)
    table = np.full(max(raw, default=0) + 1, tokenizer.unk_id, dtype=np.int64)
    table[raw] = ids
    return table


def encode_texts(texts, tokenizer, table, path="corpus"):
    """Encodes a chunk of documents. Returns (ids int64 [total tokens], lengths int64 [len(texts)])."""
    parsed = parse_integer_documents(texts) if table is not None else None
    if parsed is not None:
        raw_ids, lengths = parsed
        inside = raw_ids < len(table)
        return np.where(inside, table[np.where(inside, raw_ids, 0)], tokenizer.unk_id), lengths
    arrays = tokenizer.encode_ids_batch(decode_texts(texts, path))
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    return (np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)), lengths


@dataclass
class EncodedCorpus:
    """A cached, encoded corpus. Document d is `tokens[offsets[d]:offsets[d+1]]` (vocab ids, no specials)."""
    directory: Path
    tokens: np.ndarray        # [N] np.memmap, uint16 or int32
    offsets: np.ndarray       # [D+1] int64
    tokenizer: WhitespaceTokenizer

    @property
    def num_docs(self):
        return len(self.offsets) - 1

    @property
    def vocab_path(self):
        return self.directory / "vocab.txt"


def _publish(temp_dir, final_dir):
    """Renames a finished temp folder into place; if another process (a DDP rank) won the race, keeps theirs."""
    try:
        os.replace(temp_dir, final_dir)
    except OSError:
        if not (final_dir / "meta.json").exists():
            raise
        shutil.rmtree(temp_dir, ignore_errors=True)


def _open_cached(directory):
    meta = json.loads((directory / "meta.json").read_text())
    tokens = np.memmap(directory / "tokens.bin", dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],))
    return EncodedCorpus(directory, tokens, np.load(directory / "offsets.npy"),
                         WhitespaceTokenizer.from_file(directory / "vocab.txt"))


def load_corpus(cfg, vocab_path, rank, world_size, log=print):
    """The run's corpus, encoded: --corpus, or the embedded default corpus, generated on first use.

    The default corpus is named after its generator's source (pretrain/corpus.py), so an edited generator never
    reuses an old file. Rank 0 generates and encodes; the other ranks wait at a barrier and then read its cache.
    Returns (EncodedCorpus, corpus path)."""
    cache_dir = Path(cfg.cache_dir)
    corpus_path = Path(cfg.corpus) if cfg.corpus else \
        cache_dir / f"default_corpus-{file_digest(generator.__file__)[:12]}.tsv"
    if rank == 0 and cfg.corpus is None and not corpus_path.exists():
        log(f"generating the embedded default corpus into {corpus_path} (once)")
        generator.generate_corpus(corpus_path)
    if rank == 0:
        corpus = prepare_corpus(corpus_path, vocab_path, cache_dir=cache_dir, log=log)
    if world_size > 1:
        torch.distributed.barrier()
    if rank != 0:
        corpus = prepare_corpus(corpus_path, vocab_path, cache_dir=cache_dir, log=log)
    return corpus, corpus_path


def prepare_corpus(corpus_path, vocab_path=None, cache_dir=".cache/pretrain", min_freq=1, max_vocab_size=None,
                   log=print):
    """Encodes a corpus once (or reuses the cache) and opens it as memmaps.

    Args:
        corpus_path: Tianchi-style TSV (`text` column) or plain text, one document per line.
        vocab_path: a vocab.txt to use; None builds one from the corpus (also cached).
        cache_dir: where encoded corpora live; safe to delete.
        min_freq, max_vocab_size: for a built vocab only (rarer tokens become [UNK]; size includes specials).
        log: where the one-line status messages go (print on rank 0; a no-op on other ranks).
    Returns:
        EncodedCorpus.
    """
    corpus_path, cache_dir = Path(corpus_path), Path(cache_dir)
    if not corpus_path.is_file():
        raise ValueError(f"corpus: {corpus_path} is not a file; pass a Tianchi TSV or a one-document-per-line text")
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(cache_dir)  # half-built folders of a KILLED run (never a live run's: pid check)
    corpus_format = detect_format(corpus_path)
    corpus_digest = file_digest(corpus_path)
    if vocab_path is None:
        vocab_dir = cache_dir / f"vocab-{_key(corpus_digest, corpus_format, min_freq, max_vocab_size, CACHE_FORMAT_VERSION)}"
        if (vocab_dir / "vocab.txt").exists():
            log(f"reusing cached vocab {vocab_dir / 'vocab.txt'}")
        else:
            temp_dir = Path(tempfile.mkdtemp(dir=cache_dir, prefix=temp_name(Path("vocab")), suffix=".tmp"))
            build_vocab(corpus_path, corpus_format, min_freq, max_vocab_size).save(temp_dir)
            (temp_dir / "meta.json").write_text(json.dumps({"corpus": str(corpus_path)}))
            _publish(temp_dir, vocab_dir)
            log(f"built vocab from {corpus_path}: {vocab_dir / 'vocab.txt'}")
        vocab_path = vocab_dir / "vocab.txt"
    tokenizer = WhitespaceTokenizer.from_file(vocab_path)
    key = _key(corpus_digest, corpus_format, file_digest(vocab_path), "whitespace", CACHE_FORMAT_VERSION)
    directory = cache_dir / f"encoded-{key}"
    if (directory / "meta.json").exists():
        check_vocab_fits(directory, corpus_path, vocab_path)
        corpus = _open_cached(directory)
        log(f"reusing cached encoding of {corpus_path} ({corpus.num_docs:,} documents, {len(corpus.tokens):,} "
            f"tokens) from {directory}")
        return corpus
    temp_dir = Path(tempfile.mkdtemp(dir=cache_dir, prefix=temp_name(Path("encoded")), suffix=".tmp"))
    try:
        meta = _encode_to(temp_dir, corpus_path, corpus_format, tokenizer)
        shutil.copyfile(vocab_path, temp_dir / "vocab.txt")
        meta.update(corpus=str(corpus_path), corpus_digest=corpus_digest, format_version=CACHE_FORMAT_VERSION)
        (temp_dir / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks the folder complete
        _publish(temp_dir, directory)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    log(f"encoded {corpus_path}: {meta['num_docs']:,} documents, {meta['num_tokens']:,} tokens, "
        f"{100 * meta['unk_tokens'] / max(meta['num_tokens'], 1):.2f}% [UNK], cached in {directory}")
    check_vocab_fits(directory, corpus_path, vocab_path)
    return _open_cached(directory)


def check_vocab_fits(directory: Path, corpus_path, vocab_path) -> None:
    """[UNK] is never masked, so a corpus that is mostly [UNK] under the vocab leaves almost nothing to predict:
    the run would train on nothing. Refuse it while it is cheap to say why."""
    meta = json.loads((directory / "meta.json").read_text())
    share = meta["unk_tokens"] / max(meta["num_tokens"], 1)
    if share > MAX_UNKNOWN_SHARE:
        raise ValueError(f"corpus {corpus_path}: {share:.0%} of its tokens are [UNK] under {vocab_path} (at most "
                         f"{MAX_UNKNOWN_SHARE:.0%}); that vocab is not this corpus's: drop --vocab to build one from "
                         f"the corpus, or --init a model pretrained on this kind of text")


def _encode_to(directory, corpus_path, corpus_format, tokenizer):
    """Streams the corpus through the tokenizer into directory/tokens.bin and offsets.npy; returns meta."""
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
    table = integer_id_table(tokenizer)
    lengths, num_tokens, unk_tokens = [], 0, 0
    with open(directory / "tokens.bin", "wb") as out, _progress(corpus_path, "encoding corpus") as bar:
        for texts, bytes_read in iter_text_chunks(corpus_path, corpus_format):
            ids, chunk_lengths = encode_texts(texts, tokenizer, table, corpus_path)
            out.write(ids.astype(dtype).tobytes())
            lengths.append(chunk_lengths)
            num_tokens += len(ids)
            unk_tokens += int((ids == tokenizer.unk_id).sum())
            bar.update(bytes_read)
    if num_tokens == 0:
        raise ValueError(f"corpus: {corpus_path} holds no tokens; pass a file with at least one non-empty document")
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)  # [D+1]
    if num_tokens < MIN_TOKENS_PER_DOCUMENT * (len(offsets) - 1):  # nothing to predict a masked token from
        raise ValueError(f"corpus {corpus_path}: its {len(offsets) - 1:,} documents average "
                         f"{num_tokens / (len(offsets) - 1):.1f} token(s) (at least {MIN_TOKENS_PER_DOCUMENT:g}); "
                         f"tokens are separated by spaces, so a text without them (Chinese, say) is ONE token: put "
                         f"a space between its characters, e.g. python -c \"import sys; [print(' '.join(line.strip()"
                         f")) for line in sys.stdin]\" < in.txt > out.txt")
    np.save(directory / "offsets.npy", offsets)
    return dict(num_docs=len(offsets) - 1, num_tokens=num_tokens, unk_tokens=unk_tokens,
                dtype=np.dtype(dtype).name, vocab_size=tokenizer.vocab_size)
