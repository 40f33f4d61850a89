"""bench/unlabelled_value.py: LSA fitted on unlabelled text reaches words the few labelled documents never show."""
import json

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the LSA diagnostic needs scikit-learn (the `baseline` extra)")

from bench.unlabelled_value import lsa_baseline, main  # noqa: E402
from finetune.baseline import tfidf_baseline  # noqa: E402
from finetune.data import TextExample  # noqa: E402

TOPIC_WORDS = [[f"{topic}{i}" for i in range(40)] for topic in ("a", "b")]  # two topics, disjoint vocabularies


def _doc(rng, topic, words):
    return " ".join(rng.choice(TOPIC_WORDS[topic][words], size=30))


def _world(rng):
    """Labelled training documents use words 0-4 of their topic only; dev documents use words 20-39 only."""
    unlabelled = [_doc(rng, t, slice(0, 40)) for t in (0, 1) for _ in range(100)]
    train = [TextExample(_doc(rng, t, slice(0, 5)), None, t, i) for i, t in enumerate([0, 1] * 6)]
    dev = [TextExample(_doc(rng, t, slice(20, 40)), None, t, i) for i, t in enumerate([0, 1] * 20)]
    return unlabelled, train, dev


def _write_tsvs(tmp_path, unlabelled, train, dev) -> dict:
    """The three Tianchi-format files the CLI reads: {"unlabelled" | "train" | "dev": path}."""
    paths = {}
    for name, rows in (("unlabelled", [f"0\t{t}" for t in unlabelled]),
                       ("train", [f"{e.label}\t{e.text}" for e in train]), ("dev", [f"{e.label}\t{e.text}" for e in dev])):
        paths[name] = tmp_path / f"{name}.tsv"
        paths[name].write_text("label\ttext\n" + "\n".join(rows) + "\n")
    return paths


def test_lsa_generalises_to_words_no_labelled_document_contains():
    unlabelled, train, dev = _world(np.random.default_rng(0))
    tfidf = tfidf_baseline(train, dev, num_labels=2)
    lsa = lsa_baseline(unlabelled, train, dev, num_labels=2, components=2)
    # TF-IDF has never seen a dev word: every dev vector is zero and it predicts one class for all.
    assert tfidf["macro_f1"] < 0.5
    # LSA learnt from the unlabelled documents that words 20-39 go with words 0-4 of the same topic.
    assert lsa["macro_f1"] > 0.95
    assert lsa["chosen"]["folds"] == 3


def test_too_many_components_is_one_clear_error():
    unlabelled, train, dev = _world(np.random.default_rng(1))
    with pytest.raises(ValueError, match=r"--components 500: the unlabelled corpus has only 80 distinct tokens"):
        lsa_baseline(unlabelled, train, dev, num_labels=2, components=500)


@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_cli_writes_both_rows_per_seed(tmp_path, class_weight, capsys):
    unlabelled, train, dev = _world(np.random.default_rng(2))
    paths = _write_tsvs(tmp_path, unlabelled, train, dev)
    out = tmp_path / "result.json"
    code = main(["--unlabelled", str(paths["unlabelled"]), "--train", str(paths["train"]), "--dev", str(paths["dev"]),
                 "--train-fraction", "0.5", "--seeds", "2", "--seed", "42", "--components", "2", "--out", str(out),
                 "--class-weight", class_weight])
    assert code == 0
    assert capsys.readouterr().out.count(" ± ") == 2  # each row's sd over the 2 seeds
    result = json.loads(out.read_text())
    assert result["train_fraction"] == 0.5 and result["class_weight"] == class_weight
    assert [[run["seed"] for run in row["runs"]] for row in result["rows"].values()] == [[42, 43], [42, 43]]
    lsa = next(row for name, row in result["rows"].items() if name.startswith("LSA"))
    assert lsa["mean"] > 0.95


def test_cli_refuses_a_partial_set_of_paths(tmp_path, capsys):
    assert main(["--train", str(tmp_path / "t.tsv")]) == 2
    assert "pass --unlabelled, --train and --dev together" in capsys.readouterr().err


@pytest.mark.parametrize("flags, words", [(["--train-fraction", "0"], "--train-fraction 0.0: must be in (0, 1]"),
                                          (["--train-fraction", "nan"], "--train-fraction nan"),
                                          (["--seeds", "0"], "--seeds 0: must be at least 1")])
def test_cli_refuses_bad_numbers_in_one_line(flags, words, capsys):
    assert main(flags) == 2
    assert words in capsys.readouterr().err


def test_cli_refuses_a_negative_label_naming_the_file(tmp_path, capsys):
    for name, text in (("u.tsv", "label\ttext\n0\t1 2\n"), ("t.tsv", "label\ttext\n-1\t1 2\n1\t3 4\n"),
                       ("d.tsv", "label\ttext\n0\t1 2\n")):
        (tmp_path / name).write_text(text)
    assert main(["--unlabelled", str(tmp_path / "u.tsv"), "--train", str(tmp_path / "t.tsv"), "--dev",
                 str(tmp_path / "d.tsv"), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert "t.tsv" in err and "-1" in err and len(err.strip().splitlines()) == 1


def _tiny_encoder(texts):
    """A random BertForMaskedLM over the texts' vocabulary: what is tested here is the read-out, not the weights."""
    import torch

    from minibert import BertConfig, BertForMaskedLM
    from minibert.tokenizers import WhitespaceTokenizer

    tokenizer = WhitespaceTokenizer.build(texts)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    return BertForMaskedLM(config), tokenizer


def test_predicted_words_guesses_every_token_once_and_averages_distributions():
    from bench.predicted_words import predicted_words

    texts = ["a b c d e f g", "b c " * 40, "zzz-unknown"]  # one window; three windows of 30; only [UNK]
    model, tokenizer = _tiny_encoder(texts[:2])
    guessed = []
    head = model.mlm_head.forward
    model.mlm_head.forward = lambda hidden, embeddings: guessed.append(len(hidden)) or head(hidden, embeddings)
    features = predicted_words(model, tokenizer, texts, window=30, passes=4, batch_size=2, progress=False)
    # 7 + 80 tokens, each masked exactly once; [CLS], [SEP], [PAD] and [UNK] never.
    assert sum(guessed) == 87
    assert features.shape == (3, tokenizer.vocab_size)
    assert np.allclose(features[:2].sum(axis=1), 1.0, atol=1e-5)
    assert not features[2].any()  # nothing to mask: an all-zero row, not NaN


def test_cli_encoder_rows_come_with_random_init_control(tmp_path):
    from minibert.checkpoint import save_pretrained

    unlabelled, train, dev = _world(np.random.default_rng(3))
    model, tokenizer = _tiny_encoder(unlabelled)
    save_pretrained(model, tmp_path / "encoder", vocab=tokenizer)
    paths = _write_tsvs(tmp_path, unlabelled, train, dev)
    out = tmp_path / "result.json"
    assert main(["--unlabelled", str(paths["unlabelled"]), "--train", str(paths["train"]), "--dev", str(paths["dev"]),
                 "--train-fraction", "0.5", "--seeds", "2", "--components", "2", "--encoder", str(tmp_path / "encoder"),
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["encoder"] == str(tmp_path / "encoder")
    rows = result["rows"]
    assert len(rows) == 4 and "random init's predicted words (frozen, the control) + LR" in rows
    assert all([run["seed"] for run in row["runs"]] == [0, 1] for row in rows.values())
    assert all(0.0 <= run["macro_f1"] <= 1.0 for row in rows.values() for run in row["runs"])


def test_cli_refuses_an_encoder_whose_vocab_misses_the_corpus(tmp_path, capsys):
    from minibert.checkpoint import save_pretrained

    unlabelled, train, dev = _world(np.random.default_rng(4))
    model, tokenizer = _tiny_encoder([" ".join(TOPIC_WORDS[0])])  # knows topic a's words only: half the tokens
    save_pretrained(model, tmp_path / "encoder", vocab=tokenizer)
    paths = _write_tsvs(tmp_path, unlabelled, train, dev)
    assert main(["--unlabelled", str(paths["unlabelled"]), "--train", str(paths["train"]), "--dev", str(paths["dev"]),
                 "--train-fraction", "0.5", "--seeds", "1", "--components", "2", "--encoder", str(tmp_path / "encoder"),
                 "--out", str(tmp_path / "result.json")]) == 2
    error = capsys.readouterr().err
    assert f"--encoder {tmp_path / 'encoder'}:" in error and "not in its vocab.txt (at most 5%)" in error
    assert not (tmp_path / "result.json").exists()


def test_cli_with_one_seed_shows_no_spread(tmp_path, capsys):
    """One seed has no standard deviation: the line said "± 0.000", as if the runs agreed perfectly."""
    unlabelled, train, dev = _world(np.random.default_rng(2))
    paths = _write_tsvs(tmp_path, unlabelled, train, dev)
    assert main(["--unlabelled", str(paths["unlabelled"]), "--train", str(paths["train"]), "--dev", str(paths["dev"]),
                 "--seeds", "1", "--components", "2", "--out", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert "±" not in printed and printed.count("(one seed: no spread to show)") == 2
