"""The yardsticks a fine-tuned encoder must beat: TF-IDF + logistic regression, and the few-labels subset.

TF-IDF + logistic regression is the strongest simple baseline for text classification, and on
anonymised ID corpora it is the usual leaderboard starting point: if a pretrained BERT does not beat it, the
pretraining bought nothing. It sees the FULL documents (the encoder only sees its --max-length window), uses
whitespace tokens as they are (IDs or words), and is fitted with scikit-learn, the standard library for it
(an extra: `pip install -e '.[baseline]'`, which `make finetune` installs). Its n-gram range (1 or 1-2), C and
class weighting (none or balanced) are chosen by cross-validation on the training split, as a practitioner would
tune it.

`stratified_subset` draws the few-labels training set (`--train-fraction 0.1`): the same share of every class,
seeded, so the fine-tuned model, the random-init run and the baseline all train on exactly the same examples.
`stratified_dev_split` holds out a dev set from one labelled file (`--dev-fraction 0.1`) the same way.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np

from .data import TextExample
from .metrics import classification_metrics


def stratified_subset(examples: list, fraction: float, seed: int) -> list:
    """round(fraction · n_c) examples of every class c (at least one), drawn with a seeded generator, in file order
    (the classes: `strata`)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--train-fraction {fraction}: must be in (0, 1], e.g. 0.1 for 10% of the labels")
    rng = np.random.default_rng([seed, 10])
    chosen = [i for members in strata(examples) for i in  # at least one example of every class
              rng.choice(members, size=max(1, round(fraction * len(members))), replace=False).tolist()]
    return [examples[i] for i in sorted(chosen)]


def stratified_dev_split(examples: list, fraction: float) -> tuple[list, list]:
    """(train, dev): round(fraction · n_c) examples of every class c held out as dev, in file order. A class of
    one example stays in train (it could not be learnt from dev), and every other class keeps one for training.
    The draw is fixed (it does not follow --seed), so runs with different seeds score on the same dev set."""
    rng = np.random.default_rng([0, 12])
    held = {i for members in strata(examples) if len(members) > 1
            for i in rng.choice(members, size=min(max(1, round(fraction * len(members))), len(members) - 1),
                                replace=False).tolist()}
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def strata(examples: list) -> list[list[int]]:
    """The indices of each class's examples, classes in a fixed order (a draw then does not depend on the file
    order). A multi-label example counts in its rarest label's stratum (its exact label SET would make most sets a
    stratum of one, each kept whole: 0.05 of 1,000 examples with 167 sets kept 176); examples without a label (NER,
    or an empty label set) form one stratum."""
    labels = [getattr(example, "label", None) for example in examples]
    counts = Counter(c for label in labels if isinstance(label, list) for c in label)  # examples per label
    by_label: dict = {}
    for index, label in enumerate(labels):
        if isinstance(label, list):
            label = min(label, key=lambda c: (counts[c], c)) if label else None
        by_label.setdefault(label, []).append(index)
    return [by_label[key] for key in sorted(by_label, key=repr)]


def _text(example: TextExample) -> str:
    # A pair's two segments share one bag of n-grams, with a separator token so no bigram spans the two.
    return example.text if example.text_b is None else f"{example.text} ⟨sep⟩ {example.text_b}"


# The grid the baseline searches. The strongest simple baseline, not a fixed guess: on the embedded data at 10%
# labels, 1-grams with C=10 score 0.41 macro-F1 where 1-2-grams with C=10 score 0.34 (docs/finetune_lab.md, "The
# TF-IDF baseline, tuned"), and which one wins depends on the corpus and the number of labels. So each setting is
# scored by cross-validation on the TRAINING split (the dev split stays unseen, as it is for the tuned encoder's
# hyperparameters).
TFIDF_GRID = {"ngram_range": ((1, 1), (1, 2)), "C": (1.0, 10.0, 100.0)}
# 3 folds, not 5: a 1-2-gram fit on the 2,700 embedded documents (78k features, 14 classes) takes ~25 s on one core,
# and 5 folds made the search 6 minutes of `make finetune TASK=cls`.
CV_FOLDS = 3


# --class-weight's values. The TF-IDF row of `--compare-tfidf` tries both whatever the encoder uses: on the
# embedded data at full labels CV prefers balanced in every seed while dev (300 documents) reads unweighted 0.01
# higher (docs/finetune_lab.md, "The `make finetune TASK=cls` recipe, balanced"), and on Tianchi balanced is worth
# +0.13 (docs/finetune_lab.md, "Balanced class weights"): which one is stronger is the data's to say.
CLASS_WEIGHTS = ("none", "balanced")


def sklearn_class_weight(class_weight: str) -> str | None:
    """--class-weight's value ("none" | "balanced") as scikit-learn's class_weight argument."""
    return None if class_weight == "none" else class_weight


def tfidf_baseline(train: list[TextExample], dev: list[TextExample], num_labels: int, seed: int = 0,
                   class_weights: tuple[str, ...] = ("none",)) -> dict:
    """Fit TF-IDF (sublinear tf) + logistic regression on `train`, its n-gram range, C and class weighting chosen by
    stratified k-fold cross-validation on `train` (macro-F1, TFIDF_GRID x class_weights); score `dev` with the
    refitted best.
    class_weights: the weightings to choose among: "none", and/or "balanced" (scikit-learn's n / (C·n_c), as the
        encoder's --class-weight balanced). Too few examples to cross-validate: the first one.

    Returns:
        classification_metrics of the dev predictions ({"accuracy", "macro_f1", "mcc", "per_class"}) plus
        "chosen": {"ngram_range", "C", "class_weight", "cv_macro_f1", "folds"} (folds 0: too few examples to
        search, the defaults 1-2-grams, C=10 and the first weighting were used).
    """
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
    except ImportError:
        raise ValueError("the TF-IDF + LR baseline needs scikit-learn: pip install -e '.[baseline]' (make finetune "
                         "installs it)") from None
    if any(isinstance(e.label, list) for e in train):
        raise ValueError("the TF-IDF + LR baseline is single-label only; drop --compare-tfidf for --multi-label")
    labels = np.array([e.label for e in train])
    if np.count_nonzero(np.bincount(labels)) < 2:
        raise ValueError(f"the TF-IDF + LR baseline needs at least 2 classes in the training data, got "
                         f"{sorted(set(labels.tolist()))}; use more training examples")
    # token_pattern \S+: every whitespace-separated token counts (the default drops 1-character tokens, i.e.
    # every single-digit ID). min_df=1: with few labels, a bigram seen once is still evidence.
    pipeline = Pipeline([
        ("tfidf", TfidfVectorizer(token_pattern=r"\S+", ngram_range=(1, 2), sublinear_tf=True, lowercase=False)),
        ("lr", LogisticRegression(C=10.0, max_iter=2000, random_state=seed,
                                  class_weight=sklearn_class_weight(class_weights[0])))])
    grid = {"tfidf__ngram_range": list(TFIDF_GRID["ngram_range"]), "lr__C": list(TFIDF_GRID["C"]),
            "lr__class_weight": [sklearn_class_weight(w) for w in class_weights]}
    what = "n-grams, C and class weights" if len(class_weights) > 1 else "n-grams and C"
    pipeline, best, folds = fit_by_cv(pipeline, grid, [_text(e) for e in train], labels, seed,
                                      f"TF-IDF + LR: choosing {what}")
    chosen = {"ngram_range": [1, 2], "C": 10.0, "class_weight": class_weights[0], "cv_macro_f1": None, "folds": 0}
    if folds:
        chosen = {"ngram_range": list(best["params"]["tfidf__ngram_range"]), "C": best["params"]["lr__C"],
                  "class_weight": best["params"]["lr__class_weight"] or "none", "cv_macro_f1": best["score"],
                  "folds": folds}
    predicted = pipeline.predict([_text(e) for e in dev])
    metrics = classification_metrics(np.array([e.label for e in dev]), predicted, num_labels)
    return {**metrics, "chosen": chosen}


def fit_by_cv(estimator, grid: dict, inputs, labels: np.ndarray, seed: int, announce: str):
    """Fit `estimator` with the `grid` setting that scores best by stratified k-fold CV (macro-F1) on the training
    data, refitted on all of it; the dev split is never seen. Prints `announce` with the number of fits.

    Returns:
        (fitted estimator, {"params", "score"} of the best setting or None, folds). Folds 0: no class has 2
        examples, too few to cross-validate, so the estimator was fitted with its own settings.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    # Stratified folds need the largest class in every fold; with 10% labels the rarest classes have one example
    # and sit in one fold only (sklearn warns about it; the split is still the best one possible).
    folds = min(CV_FOLDS, int(np.bincount(labels).max()))
    if folds < 2:
        return estimator.fit(inputs, labels), None, 0
    print(f"{announce} by {folds}-fold CV on the {len(labels):,} training examples "
          f"({folds * int(np.prod([len(v) for v in grid.values()]))} fits)", flush=True)
    search = GridSearchCV(estimator, grid, scoring="f1_macro", refit=True,
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the least populated class has only 1 member"
        search.fit(inputs, labels)
    return search.best_estimator_, {"params": search.best_params_, "score": float(search.best_score_)}, folds
