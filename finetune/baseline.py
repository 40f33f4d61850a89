"""The yardsticks a fine-tuned encoder must beat: TF-IDF + logistic regression, and the few-labels subset.

TF-IDF (1-2-grams) + logistic regression is the strongest simple baseline for text classification, and on
anonymised ID corpora it is the usual leaderboard starting point: if a pretrained BERT does not beat it, the
pretraining bought nothing. It sees the FULL documents (the encoder only sees its --max-length window), uses
whitespace tokens as they are (IDs or words), and is fitted with scikit-learn, the standard library for it
(an extra: `pip install -e '.[baseline]'`, which `make finetune` installs).

`stratified_subset` draws the few-labels training set (`--train-fraction 0.1`): the same share of every class,
seeded, so the fine-tuned model, the random-init run and the baseline all train on exactly the same examples.
"""

from __future__ import annotations

import numpy as np

from .data import TextExample
from .metrics import classification_metrics


def stratified_subset(examples: list, fraction: float, seed: int) -> list:
    """round(fraction · n_c) examples of every class c (at least one), drawn with a seeded generator, in file order.

    Multi-label examples are stratified by their label set; examples without a label (NER) form one stratum.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"--train-fraction {fraction}: must be in (0, 1], e.g. 0.1 for 10% of the labels")
    strata: dict = {}
    for index, example in enumerate(examples):
        label = getattr(example, "label", None)
        strata.setdefault(tuple(label) if isinstance(label, list) else label, []).append(index)
    rng = np.random.default_rng([seed, 10])
    chosen = []
    for key in sorted(strata, key=repr):  # a fixed order of strata: the draw does not depend on the file order
        members = strata[key]
        take = max(1, round(fraction * len(members)))
        chosen.extend(rng.choice(members, size=take, replace=False).tolist())
    return [examples[i] for i in sorted(chosen)]


def _text(example: TextExample) -> str:
    # A pair's two segments share one bag of n-grams, with a separator token so no bigram spans the two.
    return example.text if example.text_b is None else f"{example.text} ⟨sep⟩ {example.text_b}"


def tfidf_baseline(train: list[TextExample], dev: list[TextExample], num_labels: int, seed: int = 0) -> dict:
    """Fit TF-IDF (1-2-grams, sublinear tf) + logistic regression on `train`, score `dev`.

    Returns:
        classification_metrics of the dev predictions: {"accuracy", "macro_f1", "mcc", "per_class"}.
    """
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise ValueError("the TF-IDF + LR baseline needs scikit-learn: pip install -e '.[baseline]' (make finetune "
                         "installs it)") from None
    if any(isinstance(e.label, list) for e in train):
        raise ValueError("the TF-IDF + LR baseline is single-label only; drop --compare-tfidf for --multi-label")
    labels = np.array([e.label for e in train])
    if len(set(labels.tolist())) < 2:
        raise ValueError(f"the TF-IDF + LR baseline needs at least 2 classes in the training data, got "
                         f"{sorted(set(labels.tolist()))}; use more training examples")
    # token_pattern \S+: every whitespace-separated token counts (the default drops 1-character tokens, i.e.
    # every single-digit ID). min_df=1: with few labels, a bigram seen once is still evidence.
    vectorizer = TfidfVectorizer(token_pattern=r"\S+", ngram_range=(1, 2), sublinear_tf=True, lowercase=False)
    features = vectorizer.fit_transform([_text(e) for e in train])
    classifier = LogisticRegression(C=10.0, max_iter=2000, random_state=seed).fit(features, labels)
    predicted = classifier.predict(vectorizer.transform([_text(e) for e in dev]))
    return classification_metrics(np.array([e.label for e in dev]), predicted, num_labels)
