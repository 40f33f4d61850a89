"""finetune/metrics.py against hand-computed examples and against scikit-learn (imported here only)."""

import re

import numpy as np
import pytest

from finetune.metrics import classification_metrics, entity_metrics, matthews_corrcoef, multilabel_metrics


def test_hand_computed_binary_example():
    gold = [1, 1, 1, 0, 0, 0, 0, 0]
    predicted = [1, 1, 0, 1, 0, 0, 0, 0]
    # class 1: TP 2, FP 1, FN 1 -> P = R = F1 = 2/3; class 0: TP 4, FP 1, FN 1 -> F1 = 4/5
    m = classification_metrics(np.array(gold), np.array(predicted), num_classes=2)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["per_class"]["1"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2·4 − 1·1) / sqrt(3·3·5·5) = 7/15
    assert m["mcc"] == pytest.approx(7 / 15)


def test_constant_prediction_has_zero_mcc_whatever_the_accuracy():
    gold = np.array([0] * 9 + [1])
    m = classification_metrics(gold, np.zeros(10, int), num_classes=2)
    assert m["accuracy"] == pytest.approx(0.9) and m["mcc"] == 0.0


@pytest.mark.parametrize("gold, predicted, message", [
    ([0, 1], [2, 1], "predicted class ID 2 is outside [0, 2)"),  # once counted silently as gold 1, predicted 0
    ([0, -1], [0, 1], "gold class ID -1 is outside [0, 2)"),
    ([0, 1, 1], [0, 1], "3 gold labels but 2 predictions"),
])
def test_class_ids_the_confusion_matrix_cannot_hold_are_one_clear_error(gold, predicted, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        classification_metrics(np.array(gold), np.array(predicted), num_classes=2)


def test_against_sklearn_on_random_multiclass_labels():
    sklearn_metrics = pytest.importorskip(
        "sklearn.metrics", reason="scikit-learn (the metrics reference) is a test extra; make test installs it")
    rng = np.random.default_rng(0)
    for trial in range(5):
        gold = rng.integers(0, 7, 300)
        predicted = np.where(rng.random(300) < 0.6, gold, rng.integers(0, 7, 300))
        if trial == 1:
            predicted[predicted == 6] = 5  # a class never predicted
        m = classification_metrics(gold, predicted, num_classes=9)  # classes 7, 8 absent from both
        assert m["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, predicted))
        assert m["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(gold, predicted, average="macro"))
        assert m["mcc"] == pytest.approx(sklearn_metrics.matthews_corrcoef(gold, predicted))
        p, r, f, s = sklearn_metrics.precision_recall_fscore_support(gold, predicted, labels=range(7),
                                                                     zero_division=0)
        for c in range(7):
            row = m["per_class"][str(c)]
            assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[c], r[c], f[c], s[c]))


def test_multilabel_against_sklearn():
    sklearn_metrics = pytest.importorskip(
        "sklearn.metrics", reason="scikit-learn (the metrics reference) is a test extra; make test installs it")
    rng = np.random.default_rng(1)
    gold = rng.random((50, 6)) < 0.3
    predicted = np.where(rng.random((50, 6)) < 0.7, gold, rng.random((50, 6)) < 0.3)
    m = multilabel_metrics(gold, predicted)
    assert m["micro_f1"] == pytest.approx(sklearn_metrics.f1_score(gold, predicted, average="micro"))
    assert m["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(gold, predicted, average="macro", zero_division=0))
    assert m["subset_accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, predicted))


def test_entity_level_scores_need_exact_boundaries():
    gold = [{("name", 0, 2), ("company", 5, 8)}, {("game", 3, 6)}]
    predicted = [{("name", 0, 2), ("company", 5, 7)}, {("game", 3, 6), ("name", 0, 1)}]
    # exact matches: (name,0,2) and (game,3,6): TP 2, predicted 4, gold 3
    m = entity_metrics(gold, predicted, ["name", "company", "game"])
    assert (m["precision"], m["recall"]) == pytest.approx((2 / 4, 2 / 3))
    assert m["f1"] == pytest.approx(2 * 2 / (4 + 3))
    assert m["per_type"]["company"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["name"]["precision"] == pytest.approx(0.5)
    assert m["per_type"]["name"]["support"] == 1  # gold names, not the 2 predicted ones


def test_mcc_of_a_perfect_and_an_inverted_binary_prediction():
    assert matthews_corrcoef(np.array([[3, 0], [0, 5]])) == pytest.approx(1.0)
    assert matthews_corrcoef(np.array([[0, 3], [5, 0]])) == pytest.approx(-1.0)
