"""How the labelled data is split (finetune/baseline.py:stratified_subset and stratified_dev_split,
finetune/cross_validate.py): the seed decides the folds, the draw does not depend on which class comes first in the
file, a multi-label example sits in its rarest label's stratum, --dev-fraction holds out every class's share, and a
tie between two rows is not a win."""

import numpy as np
import pytest
import torch

from finetune.baseline import stratified_dev_split, stratified_subset
from finetune.cross_validate import paired_differences, stratified_folds
from finetune.data import TextExample


def test_the_seed_decides_the_folds():
    labels = [i % 3 for i in range(60)]
    assert not np.array_equal(stratified_folds(labels, 5, seed=0), stratified_folds(labels, 5, seed=1))
    assert np.array_equal(stratified_folds(labels, 5, seed=0), stratified_folds(labels, 5, seed=0))


def test_folds_differ_in_size_by_at_most_one_and_small_files_leave_no_fold_empty():
    # Dealing every class from fold 0 gave 40 examples of 14 classes the folds [14, 11, 6, 5, 4], left 12 examples
    # of 4 classes with two empty folds, and put every one-example class in fold 0's dev set for every seed.
    for labels in ([i % 14 for i in range(40)], [i % 4 for i in range(12)], [0] * 10 + [1] * 3 + [2] * 2 + [3],
                   [i % 14 for i in range(2700)]):
        for seed in range(4):
            fold = stratified_folds(labels, 5, seed)
            sizes = np.bincount(fold, minlength=5)
            assert sizes.max() - sizes.min() <= 1, (len(labels), seed, sizes)
            for c in set(labels):  # still stratified: a class is spread as evenly as its size allows
                per_fold = np.bincount(fold[np.array(labels) == c], minlength=5)
                assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)
    singleton = [stratified_folds([0] * 10 + [1] * 3 + [2] * 2 + [3], 5, seed)[-1] for seed in range(20)]
    assert len(set(singleton)) > 1  # the one-example class is not always in the same fold's dev set


def test_the_subset_does_not_depend_on_which_class_the_file_lists_first():
    a = [TextExample(f"a{i}", None, 0, i) for i in range(20)]
    b = [TextExample(f"b{i}", None, 1, i) for i in range(20)]
    for seed in range(3):
        first_a = {e.text for e in stratified_subset(a + b, 0.3, seed)}
        first_b = {e.text for e in stratified_subset(b + a, 0.3, seed)}
        assert first_a == first_b and len(first_a) == 12


def test_a_multi_label_example_is_drawn_in_its_rarest_labels_stratum():
    # 40 examples of label 0, two of which also carry the rare label 1: at 5%, the rare stratum {those two} keeps
    # exactly one, whatever the seed (put in label 0's stratum, they would be kept 0, 1 or 2 times at random).
    examples = [TextExample(str(i), None, [0, 1] if i < 2 else [0], i) for i in range(40)]
    for seed in range(5):
        kept = stratified_subset(examples, 0.05, seed)
        assert sum(1 in e.label for e in kept) == 1 and len(kept) == 3  # 1 rare + round(0.05·38) = 2


def test_a_tie_is_not_counted_as_ahead():
    paired = paired_differences({"encoder": [0.5, 0.4, 0.3], "other": [0.5, 0.3, 0.4]})
    assert paired["other"]["ahead"] == 1 and paired["other"]["runs"][0] == 0.0


def test_train_without_dev_is_refused_instead_of_validating_on_the_embedded_data(tmp_path, capsys):
    from finetune.__main__ import main

    (tmp_path / "train.tsv").write_text("label\ttext\n0\t5 6 7\n1\t7 8\n")
    assert main(["--task", "cls", "--train", str(tmp_path / "train.tsv"), "--init", "random"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--train" in err and "without --dev: pass --dev FILE too" in err


def test_fine_tuning_past_the_pretrained_rows_is_warned(tmp_path):
    import json

    from finetune.prepare import untrained_positions_warning

    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "results.json").write_text(json.dumps({"eval_max_len": 64}))
    assert untrained_positions_warning(64, tmp_path / "run" / "final") == []
    warning = untrained_positions_warning(512, tmp_path / "run" / "final")[0]
    assert "pretrained on rows of 64 tokens" in warning and "positions 64-511 start untrained" in warning
    assert untrained_positions_warning(512, tmp_path / "elsewhere") == []  # an HF or TF folder: no record


def test_load_refuses_flags_it_would_ignore_and_writes_predictions_where_out_says(tmp_path, capsys):
    from conftest import tiny_config

    from finetune.__main__ import main

    rows = "label\ttext\n" + "".join(f"{i % 2}\t{5 + i % 7} {6 + i % 3} 9\n" for i in range(16))
    (tmp_path / "train.tsv").write_text(rows)
    (tmp_path / "dev.tsv").write_text(rows)
    (tmp_path / "new.tsv").write_text("text\n5 6 9\n7 8 9\n")
    tiny_config(vocab_size=32).to_json(tmp_path / "tiny.json")
    assert main(["--task", "cls", "--data", str(tmp_path), "--init", "random", "--model-config",
                 str(tmp_path / "tiny.json"), "--epochs", "1", "--max-length", "32", "--no-progress", "--out",
                 str(tmp_path / "run")]) == 0
    best = str(tmp_path / "run" / "best")
    assert main(["--load", best, "--predict", str(tmp_path / "new.tsv"), "--max-length", "16", "--header",
                 "false"]) == 2
    err = capsys.readouterr().err
    assert "--header, --max-length would be ignored" in err and err.count("\n") == 1
    torch.set_num_threads(2)
    assert main(["--load", best, "--predict", str(tmp_path / "new.tsv"), "--out", str(tmp_path / "elsewhere"),
                 "--num-threads", "1", "--no-progress"]) == 0
    assert torch.get_num_threads() == 1 and "evaluate" not in capsys.readouterr().err  # both flags were used
    torch.set_num_threads(2)
    assert main(["--load", best, "--predict", str(tmp_path / "new.tsv")]) == 0
    assert "evaluate" in capsys.readouterr().err  # the training run's --progress, the default
    assert (tmp_path / "elsewhere" / "predictions.csv").read_text().splitlines()[0] == "label"
    (tmp_path / "three.tsv").write_text("label\ttext\n2\t5 6\n")
    assert main(["--load", best, "--evaluate", str(tmp_path / "three.tsv")]) == 2
    assert "this one has 2 classes" in capsys.readouterr().err
    (tmp_path / "foreign.tsv").write_text("text\n99999 88888 77777 66666\n5\n")  # mostly another ID space
    assert main(["--load", best, "--predict", str(tmp_path / "foreign.tsv")]) == 2
    assert "80% of the input tokens are [UNK]" in capsys.readouterr().err


def test_the_class_count_comes_from_train_and_dev_and_gaps_are_warned(tmp_path):
    from finetune.config import FinetuneConfig
    from finetune.tasks import make_spec

    def examples(labels):
        return [TextExample("5 6", None, label, i + 2) for i, label in enumerate(labels)]

    cfg = FinetuneConfig(task="cls", train="t.tsv", dev="d.tsv")
    spec, warnings = make_spec(cfg, "tianchi", examples([0, 1, 1]), examples([0, 1, 2]))  # a subset missed class 2
    assert spec.num_labels == 3 and not any("appear in neither" in w for w in warnings)
    spec, warnings = make_spec(cfg, "tianchi", examples([0, 1, 20]), examples([0, 1]))  # one stray label
    assert spec.num_labels == 21 and any("labels [2, 3, 4, 5, 6, 7, 8, 9] ... appear in neither" in w for w in warnings)


def test_the_dev_split_holds_out_every_classs_share_and_keeps_rare_classes_trainable():
    # 50 of class 0, 10 of class 1, 2 of class 2, 1 of class 3: at 20%, dev gets 10 + 2 + 1 + 0.
    examples = [TextExample(str(i), None, label, i) for i, label in enumerate([0] * 50 + [1] * 10 + [2] * 2 + [3])]
    train, dev = stratified_dev_split(examples, 0.2)
    assert [sum(e.label == c for e in dev) for c in range(4)] == [10, 2, 1, 0]
    assert [sum(e.label == c for e in train) for c in range(4)] == [40, 8, 1, 1]  # class 2 keeps one to learn from
    assert {e.text for e in train} | {e.text for e in dev} == {e.text for e in examples}
    assert dev == sorted(dev, key=lambda e: e.line) and stratified_dev_split(examples, 0.2)[1] == dev  # fixed


@pytest.mark.parametrize("flag, says", [("--dev", "the folds of --train are the dev sets"),
                                        ("--predict", "--load <out>/seed<s>/fold<k>/run/best --predict"),
                                        ("--load", "start from weights with --init"),
                                        ("--evaluate", "--load <out>/seed<s>/fold<k>/run/best --evaluate")])
def test_cross_validation_refuses_a_file_flag_it_would_not_read(tmp_path, capsys, flag, says):
    """An explicit --dev was replaced by each fold's dev file and --predict dropped, both without a word."""
    from finetune.cross_validate import main as cross_validate_main

    (tmp_path / "train.tsv").write_text("label\ttext\n" + "".join(f"{i % 2}\t{i} {i + 1}\n" for i in range(20)))
    argv = ["--task", "cls", "--init", "random", "--train", str(tmp_path / "train.tsv"), flag, str(tmp_path / "x.tsv"),
            "--out", str(tmp_path / "cv")]
    assert cross_validate_main(["--folds", "2", "--seeds", "1", "--", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} {tmp_path / 'x.tsv'}" in err and says in err, err
    assert not (tmp_path / "cv").exists()
