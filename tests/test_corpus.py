"""The embedded default corpus (pretrain/corpus.py): deterministic, Tianchi-shaped, and as hard as real text."""
import numpy as np
import pytest

from pretrain.baselines import score_baselines
from pretrain.batching import PretrainingBatches
from pretrain.corpus import CorpusSpec, CorpusWorld, generate_corpus, main, words_table_path
from pretrain.data import prepare_corpus
from pretrain.evaluation import split_documents
from pretrain.masking import DynamicMasking


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


def test_same_seed_same_bytes_other_seed_differs_and_a_words_table(tmp_path):
    generate_corpus(tmp_path / "a.tsv", num_docs=40, seed=3)
    generate_corpus(tmp_path / "b.tsv", num_docs=40, seed=3)
    generate_corpus(tmp_path / "c.tsv", num_docs=40, seed=4)
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    assert (tmp_path / "a.tsv").read_bytes() != (tmp_path / "c.tsv").read_bytes()
    labels, docs = read_tsv(tmp_path / "a.tsv")
    assert len(docs) == 40 and all(len(d) >= 8 for d in docs) and labels.max() <= 13
    table = words_table_path(tmp_path / "a.tsv")
    assert table == tmp_path / "a.words.tsv"
    assert words_table_path(tmp_path / "a.csv") == tmp_path / "a.csv.words.tsv"
    from pretrain import baselines  # the exporter looks where the generator wrote: one rule, not two that disagree
    assert baselines.words_table_path is words_table_path
    rows = [line.split("\t") for line in table.read_text(encoding="utf-8").splitlines()]
    ids, words = [int(i) for i, _ in rows], [w for _, w in rows]
    assert ids == sorted(ids) and len(set(words)) == len(words)                 # one word per ID, no homonyms
    assert set(np.concatenate(docs).tolist()) <= set(ids)                      # every corpus ID has a word
    assert all(w and w == w.strip() and " " not in w for w in words)           # one readable token per ID


def test_tianchi_shape(sample):
    labels, docs = sample
    counts = np.bincount(labels, minlength=14)
    assert (counts > 0).all(), counts                              # 14 classes, all present
    assert counts.max() > 10 * counts.min(), counts                # imbalanced like Tianchi
    lengths = np.array([len(d) for d in docs])
    assert 150 <= np.median(lengths) <= 500, np.median(lengths)    # median in the hundreds
    assert lengths.max() > 1500                                    # a long tail
    frequency = np.sort(np.bincount(np.concatenate(docs)))[::-1]
    ranks = np.arange(20, 1500)                                    # Zipf-like: log-log slope near -1
    slope = np.polyfit(np.log(ranks), np.log(frequency[ranks] + 1), 1)[0]
    assert -2.0 < slope < -0.5, slope


def test_count_baselines_like_real_text_and_wider_context_helps(tmp_path):
    """The issue's yardsticks, scored as `python -m pretrain` scores them: the bidirectional bigram lands in the
    range of real corpora (0.2-0.45), and two neighbours per side beat it by at least 0.04 (0.052 measured on the
    4,000-document default corpus, docs/pretrain.md)."""
    generate_corpus(tmp_path / "c.tsv", num_docs=2000, seed=0)
    corpus = prepare_corpus(tmp_path / "c.tsv", cache_dir=tmp_path / "cache", log=lambda *a, **k: None)
    train_docs, heldout_docs = split_documents(corpus.num_docs, 0.04, seed=0)
    masking = DynamicMasking.from_tokenizer(corpus.tokenizer, 0.15, mask_token_fraction=1.0,
                                            random_token_fraction=0.0)
    heldout = PretrainingBatches(corpus, heldout_docs, 64, 64, masking, pack=True, shuffle=False, drop_last=False)
    scores = score_baselines(corpus, train_docs, heldout.epoch_batches(), 512)
    assert scores["unigram_acc"] < 0.12, scores
    assert 0.2 <= scores["bigram_acc"] <= 0.45, scores
    assert scores["window2_acc"] >= scores["bigram_acc"] + 0.04, scores


def test_labels_learnable_but_no_single_token_gives_them_away(sample):
    labels, docs = sample
    V = int(max(d.max() for d in docs)) + 1
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


def test_synonyms_variant_spreads_each_word_over_interchangeable_forms(tmp_path, capsys):
    """`--synonyms 3`: three times the content words, each lexeme's forms used about equally, and the same labels
    and lengths as the default corpus (those draws come before the words)."""
    plain = CorpusWorld(CorpusSpec(), np.random.default_rng([0, 0]))
    world = CorpusWorld(CorpusSpec(synonyms=3), np.random.default_rng([0, 0]))
    for kind in ("noun", "verb", "adj"):
        assert np.diff(world.range[kind]) == 3 * np.diff(plain.range[kind]), kind
    labels, docs = world.sample_documents(1000, np.random.default_rng([0, 1]))
    plain_labels, plain_docs = plain.sample_documents(1000, np.random.default_rng([0, 1]))
    assert (labels == plain_labels).all() and [len(d) for d in docs] == [len(d) for d in plain_docs]
    index_of = np.argsort(world.ids)                                     # corpus ID -> word index
    nouns = index_of[np.concatenate(docs)] - world.range["noun"][0]
    nouns = nouns[(nouns >= 0) & (nouns < np.diff(world.range["noun"])[0])]
    form_counts = np.bincount(nouns, minlength=3 * 1500).reshape(1500, 3)  # [lexemes, forms]
    frequent = form_counts.sum(1) >= 300
    assert frequent.sum() >= 5, form_counts.sum(1).max()
    shares = form_counts[frequent] / form_counts[frequent].sum(1, keepdims=True)
    assert (abs(shares - 1 / 3) < 0.1).all(), shares                    # uniform over forms, per lexeme
    assert main(["--out", str(tmp_path / "c.tsv"), "--docs", "5", "--synonyms", "0"]) == 2
    assert "--synonyms: got 0, need at least 1" in capsys.readouterr().err
