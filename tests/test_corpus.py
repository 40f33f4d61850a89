"""The embedded default corpus (pretrain/corpus.py): deterministic, Tianchi-shaped, and honestly learnable."""
import numpy as np
import pytest

from pretrain.corpus import PUNCTUATION_IDS, CorpusSpec, CorpusWorld, generate_corpus, main

V = 7550  # raw IDs live in Tianchi's range 0..7549


@pytest.fixture(scope="module")
def sample():
    """2,500 documents of the default world (seed 0): labels [D] and a list of token arrays."""
    world = CorpusWorld(CorpusSpec(), np.random.default_rng([0, 0]))
    return world.sample_documents(2500, np.random.default_rng([0, 1]))


def read_tsv(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "label\ttext"
    rows = [line.split("\t") for line in lines[1:]]
    return np.array([int(label) for label, _ in rows]), [np.array(text.split(), dtype=np.int64) for _, text in rows]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate_corpus(tmp_path / "a.tsv", num_docs=40, seed=3)
    generate_corpus(tmp_path / "b.tsv", num_docs=40, seed=3)
    generate_corpus(tmp_path / "c.tsv", num_docs=40, seed=4)
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    assert (tmp_path / "a.tsv").read_bytes() != (tmp_path / "c.tsv").read_bytes()
    labels, docs = read_tsv(tmp_path / "a.tsv")
    assert len(docs) == 40 and all(len(d) >= 8 for d in docs) and labels.max() <= 13


def test_tianchi_shape(sample):
    labels, docs = sample
    counts = np.bincount(labels, minlength=14)
    assert (counts > 0).all(), counts                              # 14 classes, all present
    assert counts.max() > 10 * counts.min(), counts                # imbalanced like Tianchi
    lengths = np.array([len(d) for d in docs])
    assert 200 <= np.median(lengths) <= 800, np.median(lengths)    # median in the hundreds
    assert lengths.max() > 5000                                    # a long tail
    tokens = np.concatenate(docs)
    frequency = np.bincount(tokens, minlength=V)
    assert 6500 <= (frequency > 0).sum() <= 7100                   # ~7,000 IDs
    ranked = np.argsort(-frequency)
    assert tuple(ranked[:3]) == PUNCTUATION_IDS                    # 3750, 648, 900 on top
    assert frequency[ranked[0]] / len(tokens) > 0.04
    # Zipf-like: frequency falls roughly as 1/rank over the middle ranks (log-log slope near -1).
    ranks = np.arange(10, 3000)
    slope = np.polyfit(np.log(ranks), np.log(frequency[ranked[ranks]]), 1)[0]
    assert -1.6 < slope < -0.5, slope


def test_local_structure_beats_unigram_by_a_wide_margin(sample):
    """A left-neighbour bigram predictor, counted on 90% of the documents, on the held-out 10%."""
    _, docs = sample
    train, heldout = docs[: len(docs) * 9 // 10], docs[len(docs) * 9 // 10:]
    pairs = np.concatenate([d[:-1] * V + d[1:] for d in train])
    keys, counts = np.unique(pairs, return_counts=True)
    previous, following = keys // V, keys % V
    order = np.lexsort((-counts, previous))                        # per previous token: most frequent first
    first = np.ones(len(order), bool)
    first[1:] = previous[order][1:] != previous[order][:-1]
    unigram_best = np.bincount(np.concatenate(train), minlength=V).argmax()
    best_next = np.full(V, unigram_best)
    best_next[previous[order][first]] = following[order][first]
    test_prev = np.concatenate([d[:-1] for d in heldout])
    test_next = np.concatenate([d[1:] for d in heldout])
    unigram_accuracy = (test_next == unigram_best).mean()
    bigram_accuracy = (best_next[test_prev] == test_next).mean()
    assert unigram_accuracy < 0.1
    assert bigram_accuracy > 4 * unigram_accuracy, (bigram_accuracy, unigram_accuracy)


def test_labels_learnable_but_no_single_token_gives_them_away(sample):
    labels, docs = sample
    cut = len(docs) * 4 // 5
    # Multinomial naive Bayes on bag-of-IDs, counts gathered with one bincount.
    doc_label = np.repeat(labels[:cut], [len(d) for d in docs[:cut]])
    counts = np.bincount(doc_label * V + np.concatenate(docs[:cut]), minlength=14 * V).reshape(14, V) + 1.0
    log_prob = np.log(counts / counts.sum(1, keepdims=True))      # [14,V]
    log_prior = np.log(np.bincount(labels[:cut], minlength=14) + 1.0)
    predicted = np.array([(log_prob[:, d].sum(1) + log_prior).argmax() for d in docs[cut:]])
    majority = (labels[cut:] == np.bincount(labels[:cut]).argmax()).mean()
    accuracy = (predicted == labels[cut:]).mean()
    assert accuracy > 2 * majority, (accuracy, majority)
    # Purity of "documents containing ID w": no ID seen in ≥ 30 documents pins the label down.
    present = np.concatenate([np.unique(d) for d in docs])
    present_label = np.repeat(labels, [len(np.unique(d)) for d in docs])
    per_label = np.bincount(present_label * V + present, minlength=14 * V).reshape(14, V)
    document_frequency = per_label.sum(0)
    frequent = document_frequency >= 30
    purity = per_label[:, frequent].max(0) / document_frequency[frequent]
    assert purity.max() < 0.9, purity.max()


def test_cli_writes_corpus_and_labelled_split(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "c.tsv"), "--docs", "30", "--seed", "1",
                 "--labelled-dir", str(tmp_path / "ft"), "--labelled-docs", "20"]) == 0
    assert "30 documents" in capsys.readouterr().out
    _, corpus_docs = read_tsv(tmp_path / "c.tsv")
    train_labels, train_docs = read_tsv(tmp_path / "ft" / "train.tsv")
    dev_labels, dev_docs = read_tsv(tmp_path / "ft" / "dev.tsv")
    assert (len(train_docs), len(dev_docs)) == (18, 2)
    corpus_texts = {d.tobytes() for d in corpus_docs}
    assert not any(d.tobytes() in corpus_texts for d in train_docs + dev_docs)   # fresh documents
    assert main(["--out", str(tmp_path / "x.tsv"), "--docs", "0"]) == 2
    assert "--docs" in capsys.readouterr().err
