"""The fine-tuning comparison rows: the few-labels subset (--train-fraction), the TF-IDF + LR baseline on full
documents, the three rows of --compare-random --compare-tfidf, and seeds x folds as mean ± sd."""
import json
from collections import Counter

import numpy as np
import pytest

from conftest import tiny_config
from finetune.__main__ import main
from finetune.baseline import stratified_subset, tfidf_baseline
from finetune.cross_validate import main as cross_validate_main, stratified_folds
from finetune.data import TextExample

pytest.importorskip("sklearn", reason="the TF-IDF baseline needs scikit-learn (the test and baseline extras)")


def examples(labels):
    return [TextExample(text=f"{i}", text_b=None, label=label, line=i + 2) for i, label in enumerate(labels)]


def test_stratified_subset_keeps_every_class_share_and_is_seeded():
    data = examples([0] * 50 + [1] * 30 + [2] * 3)
    subset = stratified_subset(data, 0.1, seed=1)
    assert Counter(e.label for e in subset) == {0: 5, 1: 3, 2: 1}  # round(0.3) = 0 -> at least one per class
    assert [e.line for e in subset] == sorted(e.line for e in subset)  # file order kept
    assert stratified_subset(data, 0.1, seed=1) == subset and stratified_subset(data, 0.1, seed=2) != subset
    with pytest.raises(ValueError, match="--train-fraction"):
        stratified_subset(data, 0, seed=1)


def test_stratified_folds_partition_every_class():
    labels = [0] * 10 + [1] * 7
    fold = stratified_folds(labels, 5, seed=0)
    assert sorted(Counter(fold).values()) == [3, 3, 3, 4, 4]
    for k in range(5):  # every class is spread: at most ceil(n_c / folds) of a class in one fold
        assert Counter(np.array(labels)[fold == k])[0] == 2 and Counter(np.array(labels)[fold == k])[1] <= 2


def test_tfidf_sees_the_full_document():
    # The class is decided by a token at position 180, past a 128-token window; the rest is common filler.
    rng = np.random.default_rng(0)
    def doc(label):
        tokens = rng.integers(100, 108, size=200).astype(str).tolist()
        tokens[180] = "7" if label else "8"
        return TextExample(" ".join(tokens), None, label, 0)
    train = [doc(i % 2) for i in range(60)]
    dev = [doc(i % 2) for i in range(20)]
    assert tfidf_baseline(train, dev, num_labels=2)["accuracy"] == 1.0


def make_tsv(path, n, rng):
    rows = ["label\ttext"]
    for i in range(n):
        label = i % 2
        tokens = rng.integers(10, 40, size=rng.integers(5, 20)).astype(str).tolist()
        tokens[int(rng.integers(len(tokens)))] = "7" if label else "8"
        rows.append(f"{label}\t{' '.join(tokens)}")
    path.write_text("\n".join(rows) + "\n")


def finetune_args(tmp_path, *extra):
    tiny_config(vocab_size=64).to_json(tmp_path / "tiny.json")
    return ["--task", "cls", "--init", "random", "--model-config", str(tmp_path / "tiny.json"), "--lr", "3e-3",
            "--head-lr", "3e-3", "--epochs", "1", "--batch-size", "8", "--max-length", "16", "--no-progress",
            "--num-threads", "1", *extra]


def test_three_rows_on_the_same_few_labels(tmp_path, capsys):
    rng = np.random.default_rng(1)
    make_tsv(tmp_path / "train.tsv", 200, rng)
    make_tsv(tmp_path / "dev.tsv", 40, rng)
    code = main(finetune_args(tmp_path, "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                              "--train-fraction", "0.1", "--compare-random", "--compare-tfidf"))
    printed = capsys.readouterr().out
    assert code == 0, printed
    compare = json.loads((tmp_path / "run" / "compare.json").read_text())
    assert compare["train_examples"] == 20 and "(20 training examples, train fraction 0.1" in printed
    assert len(compare["rows"]) == 3
    for name, value in compare["rows"].items():  # each row printed with its value
        assert f"{name}" in printed and f"{value:.4f}" in printed
    tfidf = [v for name, v in compare["rows"].items() if name.startswith("TF-IDF")][0]
    assert tfidf > 0.7  # one token decides the class: 20 examples already beat chance (0.5) clearly


def test_cross_validation_reports_mean_and_sd(tmp_path, capsys):
    make_tsv(tmp_path / "train.tsv", 60, np.random.default_rng(2))
    code = cross_validate_main(["--folds", "2", "--seeds", "2", "--", *finetune_args(
        tmp_path, "--train", str(tmp_path / "train.tsv"), "--out", str(tmp_path / "cv"), "--max-steps", "2",
        "--compare-tfidf")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads((tmp_path / "cv" / "cross_validation.json").read_text())
    assert len(result["rows"]) == 2  # the encoder and TF-IDF
    for row in result["rows"].values():
        assert len(row["runs"]) == 4
        assert row["mean"] == pytest.approx(np.mean(row["runs"]))
        assert row["sd"] == pytest.approx(np.std(row["runs"], ddof=1))
    assert "2 seed(s) x 2 folds" in printed and " ± " in printed
    folder = tmp_path / "cv" / "seed42"  # seeds --seed (42 by default) and 43
    dev = [set((folder / f"fold{k}" / "data" / "dev.tsv").read_text().splitlines()[1:]) for k in (0, 1)]
    assert not dev[0] & dev[1] and len(dev[0] | dev[1]) == 60  # the folds partition the file
