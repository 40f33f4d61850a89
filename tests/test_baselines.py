"""Count-based MLM baselines (pretrain/baselines.py): the bidirectional bigram does what its formula says, sees
only what the model sees, the ±2 window uses wider context, and all score the model's own held-out positions."""
import numpy as np
import pytest
import torch

from minibert import IGNORE_INDEX
from pretrain import baselines
from pretrain.baselines import BigramCounts, heldout_positions, score_baselines, window_predict
from pretrain.batching import PretrainingBatches
from pretrain.corpus import generate_corpus
from pretrain.data import prepare_corpus
from pretrain.evaluation import split_documents, unigram_baseline
from pretrain.masking import DynamicMasking

K = baselines.SMOOTHING_K


def open_corpus(tmp_path, docs):
    path = tmp_path / "c.tsv"
    path.write_text("label\ttext\n" + "".join(f"0\t{d}\n" for d in docs))
    corpus = prepare_corpus(path, cache_dir=tmp_path / "cache", log=lambda message: None)
    ids = {token: index for index, token in enumerate(corpus.tokenizer.tokens)}
    return corpus, ids


def masked_batch(corpus, rows, answers):
    """A hand-made evaluation batch: rows of raw tokens ("M" = [MASK], "C"/"S" = [CLS]/[SEP]); `answers` holds
    (row, column, token) for each position to score."""
    tokenizer = corpus.tokenizer
    ids = {token: index for index, token in enumerate(tokenizer.tokens)}
    names = {"M": tokenizer.mask_id, "C": tokenizer.cls_id, "S": tokenizer.sep_id}
    input_ids = torch.tensor([[names.get(t, ids.get(t)) for t in row.split()] for row in rows])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, column, token in answers:
        labels[row, column] = ids[token]
    return {"input_ids": input_ids, "labels": labels, "token_type_ids": torch.zeros_like(input_ids),
            "attention_mask": None}


# "11 _ 13": 12 and 14 each fill it once, but 14 has many other successors, so P(13 | 14) is small and the
# bigram picks 12; seen from the left alone, 14 (twice after 11) wins.
DOCS = ["11 12 13", "11 14 13", "11 14 15", "14 16", "14 17", "14 18"]


def test_bigram_follows_the_formula_by_hand(tmp_path):
    corpus, ids = open_corpus(tmp_path, DOCS)
    counts = BigramCounts.from_corpus(corpus, np.arange(corpus.num_docs))
    real_V = 8  # 11..18
    assert counts.num_real == real_V and counts.count(np.array([ids["11"]]), np.array([ids["14"]]))[0] == 2
    score_12 = (1 + K) * (1 + K) / (1 + K * real_V)  # n(11,12)=1, n(12,13)=1, n(12)=1
    score_14 = (2 + K) * (1 + K) / (5 + K * real_V)  # n(11,14)=2, n(14,13)=1, n(14)=5
    assert score_12 > score_14
    a, b = ids["11"], ids["13"]
    both, left_only, right_only, neither = counts.predict([a, a, -1, -1], [b, -1, b, -1])
    assert both == ids["12"] and left_only == ids["14"] and right_only == ids["12"]
    assert neither == counts.unigram_best == ids["14"]  # no factor left: the unigram guess


def test_bigram_matches_brute_force_argmax(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    docs = [" ".join(map(str, rng.integers(20, 32, size=rng.integers(1, 12)))) for _ in range(40)]
    corpus, _ = open_corpus(tmp_path, docs)
    train = np.arange(0, corpus.num_docs, 2)
    counts = BigramCounts.from_corpus(corpus, train)
    V = counts.vocab_size
    dense = np.zeros((V, V))  # n(a, b) counted the slow way
    for d in train:
        tokens = corpus.tokens[corpus.offsets[d]:corpus.offsets[d + 1]]
        for a, b in zip(tokens[:-1], tokens[1:]):
            dense[a, b] += 1
    real = np.flatnonzero(~counts.is_special)
    left = np.array([-1] + real.tolist())
    grid_l, grid_r = [g.ravel() for g in np.meshgrid(left, left)]
    monkeypatch.setattr(baselines, "MAX_SCORES", 7 * 40)  # many small chunks: the chunking must not change answers
    guesses = counts.predict(grid_l, grid_r)
    for l, r, guess in zip(grid_l, grid_r, guesses):
        forward = dense[l, real] + K if l >= 0 else np.ones(len(real))
        backward = (dense[real, r] + K) / (dense[real].sum(1) + K * len(real)) if r >= 0 else np.ones(len(real))
        score = forward * backward
        assert guess in real and score[real == guess][0] == pytest.approx(score.max()), (l, r)


def test_neighbours_are_what_the_model_sees(tmp_path):
    corpus, ids = open_corpus(tmp_path, DOCS)
    counts = BigramCounts.from_corpus(corpus, np.arange(corpus.num_docs))
    # Row 0: both neighbours visible. Row 1: the right neighbour is masked too. Row 2: the left one is [CLS] (a
    # packing boundary), so only the right factor counts.
    batch = masked_batch(corpus, ["C 11 M 13 S", "C 11 M M S", "S C M 13 S"],
                         [(0, 2, "12"), (1, 2, "12"), (1, 3, "13"), (2, 2, "12")])
    positions = heldout_positions([batch], max_sequences=10, is_special=counts.is_special)
    assert positions[-1].tolist() == [ids["11"], ids["11"], -1, -1]
    assert positions[1].tolist() == [ids["13"], -1, -1, ids["13"]]
    assert positions[-2].tolist() == [-1, -1, ids["11"], -1]
    guesses = counts.predict(positions[-1], positions[1])
    assert guesses.tolist() == [ids["12"], ids["14"], counts.unigram_best, ids["12"]]


def test_window_beats_bigram_where_wider_context_decides(tmp_path):
    # Between 11 and 13 comes 21 after 31 and 22 after 32: two neighbours cannot tell, the third one can.
    docs = ["31 11 21 13 41"] * 3 + ["32 11 22 13 42"] * 3
    corpus, ids = open_corpus(tmp_path, docs)
    train = np.arange(corpus.num_docs)
    counts = BigramCounts.from_corpus(corpus, train)
    # Row 2: l2 is masked, but (l1 _ r1 r2) still decides. Row 3: l1 is masked, so no window applies.
    batch = masked_batch(corpus, ["C 31 11 M 13 41 S", "C 32 11 M 13 42 S", "C M 11 M 13 42 S", "C 32 M M 13 42 S"],
                         [(0, 3, "21"), (1, 3, "22"), (2, 3, "22"), (3, 3, "22")])
    positions = heldout_positions([batch], max_sequences=10, is_special=counts.is_special)
    bigram = counts.predict(positions[-1], positions[1])
    window, decided = window_predict(corpus, train, positions, bigram)
    target = positions["target"]
    assert bigram[0] == bigram[1] and (bigram[:2] == target[:2]).sum() == 1  # a tie: right once of twice
    assert window[:3].tolist() == target[:3].tolist() and decided[:3].tolist() == [0, 0, 2]
    assert decided[3] == -1 and window[3] == bigram[3]  # backed off to the bigram
    assert (window == target).mean() > (bigram == target).mean()


def test_score_baselines_on_the_evaluation_batches(tmp_path, monkeypatch):
    path = tmp_path / "corpus.tsv"
    generate_corpus(path, num_docs=60, seed=1)
    corpus = prepare_corpus(path, cache_dir=tmp_path / "cache", log=lambda message: None)
    train, heldout = split_documents(corpus.num_docs, 0.1, seed=0)
    masking = DynamicMasking.from_tokenizer(corpus.tokenizer, 0.15, mask_token_fraction=1.0,
                                            random_token_fraction=0.0)
    batches = PretrainingBatches(corpus, heldout, 32, 8, masking, pack=True, shuffle=False, drop_last=False)
    scores = score_baselines(corpus, train, batches.epoch_batches(), max_sequences=16)
    rows, expected = 0, 0
    for batch in batches.epoch_batches():  # the rows evaluate() scores: whole batches until 16 rows are reached
        if rows >= 16:
            break
        rows, expected = rows + len(batch["labels"]), expected + int((batch["labels"] != IGNORE_INDEX).sum())
    assert scores["baseline_predictions"] == expected
    assert 0 <= scores["unigram_acc"] < scores["bigram_acc"] <= 1  # the generated corpus has local structure
    assert 0 < scores["window2_coverage"] <= 1
    # Counting in many small chunks (a big corpus) gives the same numbers.
    monkeypatch.setattr(baselines, "CHUNK_TOKENS", 37)
    assert score_baselines(corpus, train, batches.epoch_batches(), max_sequences=16) == scores
    # The unigram guess is the token unigram_baseline names.
    assert BigramCounts.from_corpus(corpus, train).unigram_best == unigram_baseline(corpus, heldout)["token_id"]


def test_counts_round_trip(tmp_path):
    corpus, _ = open_corpus(tmp_path, DOCS)
    counts = BigramCounts.from_corpus(corpus, np.arange(corpus.num_docs))
    counts.save(tmp_path / "bigram.npz")
    loaded = BigramCounts.load(tmp_path / "bigram.npz")
    assert np.array_equal(loaded.keys, counts.keys) and np.array_equal(loaded.unigram, counts.unigram)
    assert loaded.predict([5, 6], [7, -1]).tolist() == counts.predict([5, 6], [7, -1]).tolist()


def test_with_no_visible_neighbour_the_bigram_falls_back_to_the_unigram_guess():
    # The most frequent real token (7) is not the lowest real id (5), where equal scores would land without it.
    specials, V = np.array([True] * 5 + [False] * 3), 8
    counts = BigramCounts(V, specials, np.array([5 * V + 6, 6 * V + 7], np.int64), np.array([1, 1], np.int64),
                          np.array([0, 0, 0, 0, 0, 1, 1, 9], np.int64))
    assert counts.unigram_best == 7
    assert counts.predict(np.array([-1]), np.array([-1])).tolist() == [7]


def test_the_window_never_reads_a_context_across_documents(tmp_path):
    # In the packed token stream "12 | 13 | 14" spans three documents: (12 _ 14) was never seen inside one.
    corpus, ids = open_corpus(tmp_path, ["11 12", "13", "14 15", "16"])
    train = np.arange(corpus.num_docs)
    counts = BigramCounts.from_corpus(corpus, train)
    batch = masked_batch(corpus, ["C 12 M 14 S"], [(0, 2, "13")])
    positions = heldout_positions([batch], max_sequences=10, is_special=counts.is_special)
    bigram = counts.predict(positions[-1], positions[1])
    _, decided = window_predict(corpus, train, positions, bigram)
    assert decided.tolist() == [-1]


def test_held_out_positions_always_show_mask(tmp_path):
    # Evaluation masks are [MASK]-only: with 80/10/10, copying a visible answer would score for free.
    from pretrain.config import PretrainConfig
    from pretrain.evaluation import heldout_yardsticks

    path = tmp_path / "corpus.tsv"
    generate_corpus(path, num_docs=60, seed=1)
    corpus = prepare_corpus(path, cache_dir=tmp_path / "cache", log=lambda message: None)
    train, heldout_docs = split_documents(corpus.num_docs, 0.2, seed=0)
    heldout, *_ = heldout_yardsticks(corpus, train, heldout_docs, PretrainConfig(max_len=32))
    scored = 0
    for batch in heldout.epoch_batches():
        chosen = batch["labels"] != IGNORE_INDEX
        assert (batch["input_ids"][chosen] == corpus.tokenizer.mask_id).all()
        scored += int(chosen.sum())
    assert scored > 100
