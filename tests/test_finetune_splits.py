"""How the labelled data is split (finetune/baseline.py:stratified_subset, finetune/cross_validate.py): the seed
decides the folds, the draw does not depend on which class comes first in the file, a multi-label example sits in
its rarest label's stratum, and a tie between two rows is not a win."""

import numpy as np

from finetune.baseline import stratified_subset
from finetune.cross_validate import paired_differences, stratified_folds
from finetune.data import TextExample


def test_the_seed_decides_the_folds():
    labels = [i % 3 for i in range(60)]
    assert not np.array_equal(stratified_folds(labels, 5, seed=0), stratified_folds(labels, 5, seed=1))
    assert np.array_equal(stratified_folds(labels, 5, seed=0), stratified_folds(labels, 5, seed=0))


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
