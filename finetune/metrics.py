"""评价指标 Evaluation metrics for fine-tuning, in plain numpy (scikit-learn is only a test-time reference).

  * 准确率 accuracy: the fraction right. Misleading on imbalanced data: always answering the majority class of
    Tianchi news already scores ~0.19, and ~0.69 on CoLA.
  * macro-F1 (the Tianchi leaderboard metric): F1 per class, then the unweighted mean, so a rare class counts
    as much as a frequent one. Classes that appear in neither the gold nor the predicted labels are left out,
    as scikit-learn does.
  * 马修斯相关系数 MCC (Matthews correlation coefficient, the CoLA metric): the correlation between gold and predicted labels,
    in [−1, 1], 0 for any constant or random guess whatever the class balance. Multi-class form of Gorodkin 2004.
  * entity-level 精确率 precision / 召回率 recall / F1 for NER: an entity counts only if type, start AND end all match.
  * multi-label micro-F1 (pool every (example, class) decision) and macro-F1 (per class, then the mean). Here
    every class counts, one that never occurs included (F1 0), as scikit-learn's multi-label macro-F1 does.

Dimension legend: N examples, C classes.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(gold: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """[C,C] counts, rows = gold class, columns = predicted class. One bincount, no Python loop."""
    gold, predicted = np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if gold.shape != predicted.shape:
        raise ValueError(f"confusion_matrix: {gold.shape[0]} gold labels but {predicted.shape[0]} predictions; "
                         "score one prediction per example")
    for name, ids in (("gold", gold), ("predicted", predicted)):  # bincount would file an ID of C in the next row
        outside = ids[(ids < 0) | (ids >= num_classes)]
        if outside.size:
            raise ValueError(f"confusion_matrix: {name} class ID {outside[0]} is outside [0, {num_classes}); "
                             f"num_classes must be the number of labels (at least the largest ID + 1)")
    return np.bincount(gold * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def precision_recall_f1(true_positives, predicted_positives, gold_positives):
    """Elementwise P = TP/pred, R = TP/gold, F1 = 2PR/(P+R) = 2TP/(pred+gold); 0 where undefined."""
    precision = _safe_divide(true_positives, predicted_positives)
    recall = _safe_divide(true_positives, gold_positives)
    f1 = _safe_divide(2 * np.asarray(true_positives, float),
                      np.asarray(predicted_positives, float) + np.asarray(gold_positives, float))
    return precision, recall, f1


def matthews_corrcoef(matrix: np.ndarray) -> float:
    """MCC from a [C,C] confusion matrix: (c·s − Σ_k p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²)), where s is the
    number of examples, c the correct ones, t_k the gold count of class k and p_k its predicted count."""
    matrix = np.asarray(matrix, dtype=float)
    total, correct = matrix.sum(), np.trace(matrix)
    gold_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)  # [C] each
    numerator = correct * total - predicted_counts @ gold_counts
    denominator = np.sqrt((total ** 2 - predicted_counts @ predicted_counts) * (total ** 2 - gold_counts @ gold_counts))
    return float(numerator / denominator) if denominator > 0 else 0.0


def classification_metrics(gold, predicted, num_classes: int) -> dict:
    """Accuracy, macro-F1, MCC and per-class precision/recall/F1/support for single-label classification.

    Args:
        gold, predicted: [N] integer class IDs in [0, num_classes).
    Returns:
        {"accuracy", "macro_f1", "mcc", "per_class": {class_id: {"precision", "recall", "f1", "support"}}}.
    """
    matrix = confusion_matrix(gold, predicted, num_classes)  # [C,C]
    true_positives = np.diag(matrix)  # [C]
    gold_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)  # [C] each
    precision, recall, f1 = precision_recall_f1(true_positives, predicted_counts, gold_counts)
    present = (gold_counts + predicted_counts) > 0  # classes seen in gold or predictions
    return {
        "accuracy": float(true_positives.sum() / max(matrix.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "mcc": matthews_corrcoef(matrix),
        "per_class": {str(c): {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                               "support": int(gold_counts[c])} for c in range(num_classes)},
    }


def multilabel_metrics(gold: np.ndarray, predicted: np.ndarray) -> dict:
    """Micro- and macro-F1 for multi-label classification.

    Args:
        gold, predicted: [N,C] 0/1 matrices (predicted = sigmoid(logit) > threshold).
    Returns:
        {"micro_f1", "macro_f1", "subset_accuracy" (every class right), "per_class": {...}}.
    """
    gold, predicted = np.asarray(gold, bool), np.asarray(predicted, bool)
    true_positives = (gold & predicted).sum(axis=0)  # [C]
    gold_counts, predicted_counts = gold.sum(axis=0), predicted.sum(axis=0)  # [C]
    precision, recall, f1 = precision_recall_f1(true_positives, predicted_counts, gold_counts)
    _, _, micro_f1 = precision_recall_f1(true_positives.sum(), predicted_counts.sum(), gold_counts.sum())
    return {
        "micro_f1": float(micro_f1),
        "macro_f1": float(f1.mean()) if f1.size else 0.0,
        "subset_accuracy": float((gold == predicted).all(axis=1).mean()) if len(gold) else 0.0,
        "per_class": {str(c): {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                               "support": int(gold_counts[c])} for c in range(gold.shape[1])},
    }


def entity_metrics(gold: list[set], predicted: list[set], types: list[str]) -> dict:
    """Entity-level (exact match) precision/recall/F1, overall (micro) and per type.

    Args:
        gold, predicted: one set per example of (type, start, end) tuples.
        types: every entity type name, for the per-type table.
    Returns:
        {"precision", "recall", "f1", "per_type": {type: {"precision", "recall", "f1", "support"}}}.
    """
    counts = {t: [0, 0, 0] for t in types}  # type -> [true positives, predicted, gold]
    for gold_set, predicted_set in zip(gold, predicted, strict=True):
        for entity in gold_set:
            counts.setdefault(entity[0], [0, 0, 0])[2] += 1
        for entity in predicted_set:
            counts.setdefault(entity[0], [0, 0, 0])[1] += 1
        for entity in gold_set & predicted_set:
            counts[entity[0]][0] += 1
    names = list(counts)
    table = np.array([counts[t] for t in names], dtype=float).reshape(-1, 3)  # [types, 3]
    precision, recall, f1 = precision_recall_f1(table[:, 0], table[:, 1], table[:, 2])
    total_precision, total_recall, total_f1 = precision_recall_f1(*table.sum(axis=0))
    return {
        "precision": float(total_precision), "recall": float(total_recall), "f1": float(total_f1),
        "per_type": {t: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                         "support": int(table[i, 2])} for i, t in enumerate(names)},
    }
