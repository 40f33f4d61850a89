"""Pretraining data pipeline: readers, vocab, encoding cache (pretrain/data.py), segmenting and the resumable,
shardable batch iterator (pretrain/batching.py)."""
import json

import numpy as np
import pytest
import torch
from conftest import require_shared

from minibert.tokenizers import WhitespaceTokenizer
from pretrain.batching import Prefetcher, PretrainingBatches, segment_documents, split_micro_batches
from pretrain.data import build_vocab, detect_format, encode_texts, integer_id_table, iter_text_chunks, prepare_corpus
from pretrain.evaluation import split_documents, unigram_baseline
from pretrain.masking import DynamicMasking

DOCS = ["5 6 7 8 9 10 11 12 13 14", "7 7 7", "", "9 8 7 6 5 4 3", "12 13 14 15 16 17 18 19 20 21 22 23 24"]


def write(path, text):
    path.write_bytes(text.encode())
    return path


def texts_of(path):
    return [t.decode() for chunk, _ in iter_text_chunks(path, detect_format(path)) for t in chunk]


def open_corpus(tmp_path, docs=DOCS, **kwargs):
    corpus_file = write(tmp_path / "c.tsv", "label\ttext\n" + "".join(f"1\t{d}\n" for d in docs))
    return prepare_corpus(corpus_file, cache_dir=tmp_path / "cache", log=lambda message: None, **kwargs)


# ------------------------------------------------------------------------------------------------ readers
def test_readers_tsv_text_column_and_plain_lines(tmp_path):
    tianchi = write(tmp_path / "t.tsv", "label\ttext\r\n2\t1 2 3\r\n0\t4 5\r\n")
    text_first = write(tmp_path / "x.tsv", "text\tlabel\n1 2 3\t2\n4 5\t0\n")
    plain = write(tmp_path / "p.txt", "1 2 3\n4 5\n")
    assert detect_format(tianchi) == ("tsv", 1) and detect_format(plain) == ("lines", None)
    prose = write(tmp_path / "prose.txt", "text, as written, has commas\nmore text, more commas\n")
    assert detect_format(prose) == ("lines", None)  # commas in plain text are not a comma-separated header
    assert texts_of(tianchi) == texts_of(text_first) == texts_of(plain) == ["1 2 3", "4 5"]
    bad = write(tmp_path / "bad.tsv", "label\ttext\n1\t2 3\n7\n")
    with pytest.raises(ValueError, match="line 3"):
        texts_of(bad)


def test_real_tianchi_sample_streams_every_row():
    path = require_shared("tianchi-news/train_set.repaired.csv")
    chunks = list(iter_text_chunks(path, detect_format(path)))
    texts = [t for chunk, _ in chunks for t in chunk]
    assert len(texts) == 498
    assert sum(len(t.split()) for t in texts) == 460972
    assert sum(size for _, size in chunks) == path.stat().st_size   # progress accounting covers every byte


# -------------------------------------------------------------------------------------------- vocab, encode
def test_numpy_vocab_build_matches_the_tokenizer_build(tmp_path):
    path = write(tmp_path / "c.txt", "\n".join(DOCS + ["100 5 5 9 3"]) + "\n")
    for min_freq, max_size in [(1, None), (2, None), (1, 9)]:
        fast = build_vocab(path, ("lines", None), min_freq, max_size)
        reference = WhitespaceTokenizer.build(texts_of(path), min_freq=min_freq, max_size=max_size)
        assert fast.tokens == reference.tokens, (min_freq, max_size)


def test_integer_fast_path_equals_tokenizer_path(tmp_path):
    tokenizer = WhitespaceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "3750", "648", "0", "12"], "t")
    texts = [b"3750 648 99999 0", b"", b"12  12\t648 ", b" \t ", b"7 3750"]
    table = integer_id_table(tokenizer)
    fast, fast_lengths = encode_texts(texts, tokenizer, table)
    slow, slow_lengths = encode_texts(texts, tokenizer, None)       # the tokenizer's Rust path
    assert fast.tolist() == slow.tolist() == [5, 6, 1, 7, 8, 8, 6, 1, 5]
    assert fast_lengths.tolist() == slow_lengths.tolist() == [4, 0, 3, 0, 2]
    # "007" is not the token "7", words are not IDs: both leave the fast path and still encode correctly.
    for odd in ([b"007 12"], [b"12 abc"]):
        assert encode_texts(odd, tokenizer, table)[0].tolist() == encode_texts(odd, tokenizer, None)[0].tolist()


def test_a_huge_id_in_the_vocab_keeps_the_lookup_table_small():
    # one 8-digit ID would make a 10^8-entry table (800 MB); ids that large take the tokenizer path anyway
    tokenizer = WhitespaceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "12", "99999999"], "t")
    table = integer_id_table(tokenizer)
    assert table is not None and len(table) == 13
    texts = [b"12 99999999 5", b"12 12"]
    assert encode_texts(texts, tokenizer, table)[0].tolist() == encode_texts(texts, tokenizer, None)[0].tolist() \
        == [5, 6, 1, 5, 5]


def test_real_tianchi_sample_fast_path_matches_tokenizer():
    path = require_shared("tianchi-news/train_set.repaired.csv")
    tokenizer = WhitespaceTokenizer.from_file(require_shared("tianchi-news/bert-mini/vocab.txt"))
    texts = [t for chunk, _ in iter_text_chunks(path, detect_format(path)) for t in chunk][:60]
    fast, lengths = encode_texts(texts, tokenizer, integer_id_table(tokenizer))
    reference = tokenizer.encode_ids_batch([t.decode() for t in texts])
    assert fast.tolist() == np.concatenate(reference).tolist()
    assert lengths.tolist() == [len(r) for r in reference]


def test_word_corpus_takes_the_tokenizer_path(tmp_path):
    corpus = prepare_corpus(write(tmp_path / "w.txt", "the cat sat\nthe dog\n"), cache_dir=tmp_path / "cache",
                            log=lambda message: None)
    assert corpus.tokenizer.decode(corpus.tokens[corpus.offsets[0]:corpus.offsets[1]]) == "the cat sat"


# -------------------------------------------------------------------------------------------------- cache
def test_cache_is_written_once_reused_and_keyed_by_content(tmp_path):
    messages = []
    corpus_file = write(tmp_path / "c.tsv", "label\ttext\n" + "".join(f"1\t{d}\n" for d in DOCS))
    first = prepare_corpus(corpus_file, cache_dir=tmp_path / "cache", log=messages.append)
    assert first.tokens.dtype == np.uint16 and first.num_docs == len(DOCS)
    assert np.diff(first.offsets).tolist() == [len(d.split()) for d in DOCS]
    for d, text in enumerate(DOCS):   # ids decode back to the document
        assert first.tokenizer.decode(first.tokens[first.offsets[d]:first.offsets[d + 1]]) == text
    assert any(m.startswith("encoded") for m in messages)
    messages.clear()
    prepare_corpus(corpus_file, cache_dir=tmp_path / "cache", log=messages.append)
    assert any(m.startswith("reusing cached encoding") for m in messages), messages
    # Same size, one digit changed: a new encoding, never the stale one.
    write(corpus_file, corpus_file.read_text().replace("7 7 7", "7 8 7"))
    messages.clear()
    changed = prepare_corpus(corpus_file, cache_dir=tmp_path / "cache", log=messages.append)
    assert any(m.startswith("encoded") for m in messages) and changed.directory != first.directory
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name or "-tmp-" in p.name]


def test_given_vocab_is_used_and_unknowns_become_unk(tmp_path):
    vocab = write(tmp_path / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n7\n5\n" +
                  "".join(f"{i}\n" for i in range(8, 25)))  # 6, 4 and 3 are not in it
    corpus = open_corpus(tmp_path, vocab_path=vocab)
    assert corpus.tokens[corpus.offsets[1]:corpus.offsets[2]].tolist() == [5, 5, 5]
    assert corpus.tokens[:3].tolist() == [6, 1, 5]
    assert corpus.vocab_path.read_text() == vocab.read_text()


def test_real_tianchi_sample_with_the_datawhale_vocab(tmp_path):
    path = require_shared("tianchi-news/train_set.repaired.csv")
    vocab = require_shared("tianchi-news/bert-mini/vocab.txt")
    corpus = prepare_corpus(path, vocab, cache_dir=tmp_path, log=lambda message: None)
    assert (corpus.num_docs, len(corpus.tokens), corpus.tokens.dtype) == (498, 460972, np.uint16)
    assert corpus.tokenizer.convert_ids_to_tokens(corpus.tokens[:3]) == ["2967", "6758", "339"]


# ------------------------------------------------------------------------------------- split and baseline
def test_split_is_by_document_deterministic_and_disjoint():
    train, heldout = split_documents(1000, 0.02, seed=3)
    assert len(heldout) == 20 and len(train) == 980
    assert sorted(np.concatenate([train, heldout]).tolist()) == list(range(1000))
    assert np.array_equal(split_documents(1000, 0.02, seed=3)[1], heldout)
    assert not np.array_equal(split_documents(1000, 0.02, seed=4)[1], heldout)
    assert len(split_documents(10, 0.001)[1]) == 1     # never an empty evaluation set
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_documents(10, 1.0)


def test_unigram_baseline_by_hand(tmp_path):
    corpus = open_corpus(tmp_path, docs=["5 5 5 6", "5 6 6 6"])
    baseline = unigram_baseline(corpus, heldout_docs=[1])
    assert baseline["token"] == "5" and baseline["accuracy"] == pytest.approx(0.25)
    # Add-one smoothed training unigram over the 2 real tokens: p(5)=4/6, p(6)=2/6.
    expected = np.exp(-(np.log(4 / 6) + 3 * np.log(2 / 6)) / 4)
    assert baseline["perplexity"] == pytest.approx(expected)
    # With 80/10/10 masks a context-free model copies a shown token: right at the 10% unchanged positions and
    # at the 10% random ones when the draw hits the original (1 of the 2 real tokens): 0.8·0.25 + 0.1 + 0.05.
    masking = DynamicMasking.from_tokenizer(corpus.tokenizer)
    assert unigram_baseline(corpus, [1], masking)["context_free_accuracy"] == pytest.approx(0.35)
    assert unigram_baseline(corpus, [1])["context_free_accuracy"] == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------- segmenting
def test_segmenting_rules():
    lengths = [10, 3, 0, 7, 9, 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    starts, pieces = segment_documents(offsets, np.arange(6), max_len=6, pack=False)   # pieces of 4 tokens
    # 10 → 4,4,2 (2 = half: kept); 3 → kept whole (a short document); 0 → nothing; 7 → 4,3; 9 → 4,4 (tail of
    # 1 < half: dropped); 1 → kept whole.
    assert pieces.tolist() == [4, 4, 2, 3, 4, 3, 4, 4, 1]
    assert starts.tolist() == [0, 4, 8, 10, 13, 17, 20, 24, 29]
    _, packed = segment_documents(offsets, np.arange(6), max_len=6, pack=True)
    assert packed.tolist() == [4, 4, 2, 3, 4, 3, 4, 4, 1, 1]                         # packing keeps every tail


# ---------------------------------------------------------------------------------------------- batches
def batches(corpus, **kwargs):
    settings = dict(max_len=8, batch_size=4, seed=1, pin_memory=False,
                    masking=DynamicMasking.from_tokenizer(corpus.tokenizer, 0.15))
    settings.update(kwargs)
    return PretrainingBatches(corpus, np.arange(corpus.num_docs), **settings)


def original(batch):
    """Undo the masking: labels hold the original id wherever a position was selected."""
    return torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])


def test_padded_rows_hold_cls_piece_sep_pad(tmp_path):
    corpus = open_corpus(tmp_path)
    tok = corpus.tokenizer
    data = batches(corpus, shuffle=False, drop_last=False)
    rows = torch.cat([original(b) for b in data.epoch_batches()])
    expected = []
    for start, length in zip(data.piece_starts, data.piece_lengths):
        body = corpus.tokens[start:start + length].tolist()
        expected.append([tok.cls_id] + body + [tok.sep_id] + [tok.pad_id] * (6 - length))
    assert rows.tolist() == expected
    mask = torch.cat([b["attention_mask"] for b in data.epoch_batches()])
    assert torch.equal(mask.bool(), rows != tok.pad_id)
    assert all((b["token_type_ids"] == 0).all() for b in data.epoch_batches())


def test_packed_rows_have_no_padding_and_cover_the_stream(tmp_path):
    corpus = open_corpus(tmp_path)
    tok = corpus.tokenizer
    data = batches(corpus, pack=True, shuffle=False, drop_last=False)
    assert all(b["attention_mask"] is None for b in data.epoch_batches())
    stream = torch.cat([original(b) for b in data.epoch_batches()]).flatten().tolist()
    expected = []
    for start, length in zip(data.piece_starts, data.piece_lengths):
        expected += [tok.cls_id] + corpus.tokens[start:start + length].tolist() + [tok.sep_id]
    assert stream == expected[: len(stream)] and len(expected) - len(stream) < 8      # only the last partial row
    assert tok.pad_id not in stream


def test_shuffled_packed_rows_read_one_document_in_order(tmp_path):
    """Documents are shuffled, not units: a row continues the document it started in. Shuffled units put the end of
    one unrelated document and the start of another in nearly every row."""
    docs = [" ".join(f"{d}{i:02d}" for i in range(23)) for d in range(1, 10)]  # document d: tokens d00 .. d22
    corpus = open_corpus(tmp_path, docs=docs)
    data = batches(corpus, pack=True, batch_size=2)  # rows of 8: [CLS] + 6 tokens + [SEP], 4 units per document
    vocab = corpus.tokenizer.convert_ids_to_tokens(range(corpus.tokenizer.vocab_size))
    mixed = 0
    for epoch_batch in (data.batch(0, step) for step in range(data.steps_per_epoch)):
        for row in original(epoch_batch).tolist():
            words = [vocab[i] for i in row if i not in corpus.tokenizer.special_ids]  # e.g. ['317', '318', ...]
            for a, b in zip(words, words[1:]):
                if a[0] == b[0]:  # inside one document the text runs on, token after token
                    assert int(b[1:]) == int(a[1:]) + 1, words
                else:  # a new document begins only where the last one ended
                    mixed += 1
                    assert a[1:] == "22" and b[1:] == "00", words
    assert mixed > 0  # the stream does cross documents, and each crossing was checked


@pytest.mark.parametrize("pack", [False, True])
def test_world_size_shards_reassemble_the_single_process_batch(tmp_path, pack):
    corpus = open_corpus(tmp_path, docs=[" ".join(map(str, range(5, 5 + n))) for n in range(3, 60)])
    single = batches(corpus, pack=pack, batch_size=6)
    ranks = [batches(corpus, pack=pack, batch_size=6, rank=r, world_size=3) for r in range(3)]
    for _ in range(single.steps_per_epoch + 2):                  # across an epoch boundary
        whole = next(single)
        parts = [next(rank) for rank in ranks]
        for name in ("input_ids", "labels"):
            assert torch.equal(whole[name], torch.cat([p[name] for p in parts])), name


@pytest.mark.parametrize("pack", [False, True])
def test_resume_from_state_dict_is_exact(tmp_path, pack):
    corpus = open_corpus(tmp_path, docs=[" ".join(map(str, range(5, 5 + n))) for n in range(3, 60)])
    uninterrupted = batches(corpus, pack=pack)
    reference = [next(uninterrupted) for _ in range(uninterrupted.steps_per_epoch + 3)]
    killed = batches(corpus, pack=pack)
    for _ in range(5):
        next(killed)
    resumed = batches(corpus, pack=pack)
    resumed.load_state_dict(killed.state_dict())
    for expected in reference[5:]:
        got = next(resumed)
        assert torch.equal(got["input_ids"], expected["input_ids"]) and torch.equal(got["labels"], expected["labels"])
    # Epochs differ in order and masks; the same position is the same batch.
    assert not torch.equal(reference[0]["input_ids"], reference[uninterrupted.steps_per_epoch]["input_ids"])
    for other in (dict(batch_size=2), dict(seed=2)):  # another batch size, or another seed's order and masks
        with pytest.raises(ValueError, match="resume with the same"):
            batches(corpus, pack=pack, **other).load_state_dict(killed.state_dict())


def test_prefetcher_yields_the_serial_sequence_and_keeps_the_consumer_position(tmp_path):
    """The GPU loop's background thread must change nothing: same batches, same order, and a checkpoint taken
    mid-run records the batch the loop takes next, not how far the thread has read ahead."""
    corpus = open_corpus(tmp_path, docs=[" ".join(map(str, range(5, 5 + n))) for n in range(3, 60)])
    serial = batches(corpus, pack=True)
    reference = [split_micro_batches(next(serial), 2) for _ in range(serial.steps_per_epoch + 3)]
    source = batches(corpus, pack=True)
    prefetched = Prefetcher(source, lambda b: split_micro_batches(b, 2), depth=3)
    for step, expected in enumerate(reference, start=1):
        got = next(prefetched)
        for part, want in zip(got, expected):
            for name in ("input_ids", "labels", "prediction_positions"):
                assert torch.equal(part[name], want[name]), (step, name)
        assert source.state_dict()["step"] == step % source.steps_per_epoch  # the consumer's position
    prefetched.close()


def test_micro_batch_positions_are_the_masked_tokens(tmp_path):
    batch = next(batches(open_corpus(tmp_path), batch_size=4))
    parts = split_micro_batches(batch, 2)
    assert [len(p["input_ids"]) for p in parts] == [2, 2]
    for part in parts:
        flat = part["labels"].reshape(-1)
        assert torch.equal(part["prediction_positions"], torch.nonzero(flat != -100).squeeze(1))


def test_clear_errors_for_bad_batch_settings(tmp_path):
    corpus = open_corpus(tmp_path)
    with pytest.raises(ValueError, match="multiple of world_size"):
        batches(corpus, batch_size=5, world_size=2)
    with pytest.raises(ValueError, match="lower --batch-size"):
        batches(corpus, batch_size=1000)
    with pytest.raises(ValueError, match="max_len"):
        batches(corpus, max_len=2)


def test_init_from_a_run_with_another_split_of_the_same_corpus_is_warned(tmp_path):
    from pretrain.evaluation import init_split_warning
    corpus = write(tmp_path / "c.tsv", "label\ttext\n1\t5 6\n")
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "pretrain_config.json").write_text(json.dumps({"corpus": str(corpus), "seed": 0, "heldout_fraction": 0.02}))
    _, same = split_documents(4000, 0.02, seed=0)
    assert init_split_warning(run / "final", corpus, 4000, same) is None  # the same held-out documents
    _, moved = split_documents(4000, 0.02, seed=1)
    warning = init_split_warning(run / "final", corpus, 4000, moved)
    seen = len(np.intersect1d(moved, split_documents(4000, 0.02, seed=0)[0]))
    assert seen > 70 and f"pretrained on {seen:,} of this run's 80 held-out documents" in warning
    assert "--seed 0 --heldout-fraction 0.02" in warning
    assert "--init " + str(run) + " was" in init_split_warning(run, corpus, 4000, moved)  # checkpoint.pt: its folder
    assert init_split_warning(run / "final", tmp_path / "other.tsv", 4000, moved) is None  # another corpus
    assert init_split_warning(tmp_path / "elsewhere", corpus, 4000, moved) is None  # no record: nothing to say
