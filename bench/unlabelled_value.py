"""Could unlabelled documents help this classifier at all? A count-based answer, before blaming the encoder.

    python -m bench.unlabelled_value                        # the embedded corpus and `make finetune TASK=cls` data
    python -m bench.unlabelled_value --unlabelled runs/anon/sst2-train.tsv \\
        --train runs/anon/sst2-train.tsv --dev runs/anon/sst2-dev.tsv --train-fraction 0.1

Pretraining can only help a classifier if the UNLABELLED corpus holds label-relevant structure that the labelled
examples do not show: with few labels, most of a class's words never occur in the labelled training set, and
TF-IDF + LR knows nothing about them. Latent semantic analysis (LSA, Deerwester et al. 1990: TF-IDF of the
unlabelled corpus, then a truncated SVD) is the oldest way to learn from unlabelled text which words go together.
This script fits LSA on the unlabelled corpus only, maps each labelled document to its k-dimensional LSA vector,
and trains logistic regression on those; the TF-IDF + LR row is `finetune.baseline.tfidf_baseline`, the row that
`make finetune` prints. Both use the same stratified subset as `python -m finetune --train-fraction F --seed S`,
and pick C by 3-fold cross-validation on that subset (the dev split stays unseen).

`--encoder runs/pretrain/final` adds two rows: the encoder's predicted words (bench/predicted_words.py: its MLM
head's guesses, every token masked once, averaged over the document), frozen, + LR; and the same read-out of a
random-init model of its shape, the control that shows what pretraining added.

Reading the result: if LSA beats TF-IDF + LR, the unlabelled corpus can lift a few-labels classifier, and a
pretrained encoder that does not beat TF-IDF there is leaving that gain on the table (docs/finetune_lab.md, "Could
the unlabelled corpus help at all?", measures this for the embedded corpus). If LSA does not beat it, the corpus
has little to give, whatever the encoder.

Dimension legend: D documents, V TF-IDF vocabulary, K LSA components.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from finetune.baseline import fit_by_cv, sklearn_class_weight, stratified_subset, tfidf_baseline
from finetune.data import FORMATS, check_class_labels, read_tsv
from finetune.metrics import classification_metrics
from minibert.cli import OneLineParser, run_cli
from minibert.training.io import atomic_write_text

LSA_C_GRID = (1.0, 10.0, 100.0)
# Standardised predicted-word features: rarer words get unit scale too, so smaller C values are in play.
ENCODER_C_GRID = (0.01, 0.1, 1.0, 10.0)


def lsa_baseline(unlabelled: list[str], train: list, dev: list, num_labels: int, components: int,
                 seed: int = 0, class_weight: str = "none") -> dict:
    """LSA fitted on `unlabelled` texts, then logistic regression (C by stratified CV) on the train examples.

    Args:
        unlabelled: the pretraining corpus's texts (whitespace tokens); the labelled texts are NOT part of the fit.
        train, dev: TextExample lists (single-label).
        components: K, the SVD rank.
        class_weight: "none" or "balanced", as finetune's --class-weight.
    Returns:
        classification_metrics of the dev predictions plus "chosen": {"C", "cv_macro_f1", "folds"}.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import Normalizer

    tfidf = TfidfVectorizer(token_pattern=r"\S+", sublinear_tf=True, lowercase=False).fit(unlabelled)  # V words
    if components >= len(tfidf.vocabulary_):
        raise ValueError(f"--components {components}: the unlabelled corpus has only {len(tfidf.vocabulary_)} "
                         f"distinct tokens; pass fewer components, e.g. --components {len(tfidf.vocabulary_) // 2}")
    svd = TruncatedSVD(components, random_state=seed).fit(tfidf.transform(unlabelled))                # [K,V]
    # Unit-length LSA vectors: the usual LSA step (cosine geometry), so document length does not set the scale.
    def embed(examples):
        return Normalizer().transform(svd.transform(tfidf.transform([e.text for e in examples])))   # [D,K]
    regression = LogisticRegression(C=10.0, max_iter=3000, random_state=seed,
                                    class_weight=sklearn_class_weight(class_weight))
    return fit_c_and_score(regression, "C", LSA_C_GRID, (embed(train), train), (embed(dev), dev), num_labels, seed,
                           "LSA + LR: choosing C")


MAX_UNKNOWN_SHARE = 0.05  # of the documents' tokens that --encoder's vocab may miss ([UNK])


def encoder_features(encoder: str, texts: list[str], seed: int) -> dict[str, np.ndarray]:
    """{row name: [D,V] predicted-word features} for the encoder at `encoder` and a random-init model of its shape
    (seeded, at BERT's init std whatever the encoder's config.json says), read by the encoder's own whitespace
    vocabulary."""
    import torch

    from bench.predicted_words import predicted_words
    from minibert import BertForMaskedLM
    from minibert.checkpoint import load_pretrained
    from minibert.config import BERT_INITIALIZER_RANGE
    from minibert.tokenizers import WhitespaceTokenizer

    loaded = load_pretrained(BertForMaskedLM, encoder, require_vocab=True)
    tokenizer = WhitespaceTokenizer.from_file(loaded.source.vocab_path)
    # [UNK] is never masked, so a document the encoder's vocab does not cover would read as an all-zero row: refuse
    # an encoder pretrained on another corpus instead of scoring it on the tokens it happens to share.
    ids = np.concatenate(tokenizer.encode_ids_batch(texts) or [np.zeros(0, np.int32)])
    unknown = float(np.mean(ids == tokenizer.unk_id)) if len(ids) else 0.0
    if unknown > MAX_UNKNOWN_SHARE:
        raise ValueError(f"--encoder {encoder}: {unknown:.0%} of the documents' tokens are not in its vocab.txt "
                         f"(at most {MAX_UNKNOWN_SHARE:.0%}); pass an encoder pretrained on this corpus "
                         f"(python -m pretrain --corpus <the --unlabelled file>)")
    torch.manual_seed(seed)
    models = {"the encoder's predicted words (frozen) + LR": loaded.model,
              "random init's predicted words (frozen, the control) + LR":
                  BertForMaskedLM(loaded.config.replace(initializer_range=BERT_INITIALIZER_RANGE))}
    return {name: predicted_words(model, tokenizer, texts) for name, model in models.items()}


def features_baseline(train_features: np.ndarray, dev_features: np.ndarray, train: list, dev: list, num_labels: int,
                      seed: int, class_weight: str) -> dict:
    """Logistic regression on standardised frozen features ([D,V] rows in the order of `train` / `dev`), C by
    stratified CV on the training subset."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000, random_state=seed,
                                                                  class_weight=sklearn_class_weight(class_weight)))
    return fit_c_and_score(pipeline, "logisticregression__C", ENCODER_C_GRID, (train_features, train),
                           (dev_features, dev), num_labels, seed, "encoder features + LR: choosing C")


def fit_c_and_score(estimator, c_name: str, c_grid, train: tuple, dev: tuple, num_labels: int, seed: int,
                    announce: str) -> dict:
    """Choose C by stratified CV on the training (features, examples), score dev (features, examples) with the
    refitted model. Returns classification_metrics plus "chosen": {"C", "cv_macro_f1", "folds"}; with folds 0 (too
    few examples to cross-validate) the estimator's own C is kept."""
    model, best, folds = fit_by_cv(estimator, {c_name: list(c_grid)}, train[0], np.array([e.label for e in train[1]]),
                                   seed, announce)
    chosen = {"C": best["params"][c_name] if folds else estimator.get_params()[c_name],
              "cv_macro_f1": best["score"] if folds else None, "folds": folds}
    metrics = classification_metrics(np.array([e.label for e in dev[1]]), model.predict(dev[0]), num_labels)
    return {**metrics, "chosen": chosen}


def default_paths(cache: Path) -> tuple[Path, Path, Path]:
    """The embedded pretraining corpus (what `make pretrain` trains on) and `make finetune TASK=cls`'s split."""
    from finetune.toy_data import default_data
    from pretrain.corpus import generate_corpus

    corpus = cache / "default_corpus.tsv"
    generate_corpus(corpus, num_docs=4000, seed=0)  # pretrain's defaults: --docs 4000 --seed 0
    train, dev = default_data("cls")
    return corpus, train, dev


def compare(unlabelled_path, train_path, dev_path, fraction: float | None, seeds: int, components: int,
            first_seed: int = 0, class_weight: str = "none", encoder: str | None = None) -> dict:
    """Both rows (four with `encoder`) on `seeds` stratified subsets (seed first_seed, first_seed + 1, ...).

    Returns {"rows": {name: {mean, sd, runs}}}.
    """
    tianchi = FORMATS["tianchi"]
    unlabelled = [e.text for e in read_tsv(unlabelled_path, tianchi, with_labels=False)]  # labels unused
    train_all, dev = read_tsv(train_path, tianchi), read_tsv(dev_path, tianchi)
    num_labels = 1 + max(e.label for e in train_all + dev)
    check_class_labels(train_all, num_labels, train_path)  # a -1 would surface as a numpy error deep in sklearn
    check_class_labels(dev, num_labels, dev_path)
    names = ("TF-IDF + LR (labelled documents only)", f"LSA ({components} dims, fitted on the unlabelled corpus) + LR")
    subsets = {seed: stratified_subset(train_all, fraction, seed) if fraction else train_all
               for seed in range(first_seed, first_seed + (seeds if fraction else 1))}
    features = {}
    if encoder:  # one read of every training document some subset uses (by its line), and of dev
        used = sorted({e.line for subset in subsets.values() for e in subset})
        row_of, text_of = {line: i for i, line in enumerate(used)}, {e.line: e.text for e in train_all}
        read = encoder_features(encoder, [text_of[line] for line in used] + [e.text for e in dev], first_seed)
        features = {name: (f[:len(used)], f[len(used):]) for name, f in read.items()}
    runs: dict = {name: [] for name in (*names, *features)}
    for seed, train in subsets.items():
        print(f"seed {seed}: {len(train):,} labelled training documents, {len(unlabelled):,} unlabelled", flush=True)
        results = {names[0]: tfidf_baseline(train, dev, num_labels, seed, (class_weight,)),
                   names[1]: lsa_baseline(unlabelled, train, dev, num_labels, components, seed, class_weight)}
        for name, (train_features, dev_features) in features.items():
            results[name] = features_baseline(train_features[[row_of[e.line] for e in train]], dev_features, train,
                                              dev, num_labels, seed, class_weight)
        for name, result in results.items():
            runs[name].append({"seed": seed, "macro_f1": result["macro_f1"], "chosen": result["chosen"]})
            print(f"  {name}: dev macro-F1 {result['macro_f1']:.3f}", flush=True)
    rows = {name: {"mean": float(np.mean([r["macro_f1"] for r in rs])),
                   "sd": float(np.std([r["macro_f1"] for r in rs], ddof=1)) if len(rs) > 1 else 0.0, "runs": rs}
            for name, rs in runs.items()}
    return {"train_fraction": fraction, "components": components, "class_weight": class_weight,
            "encoder": encoder, "rows": rows}


def unlabelled_value_cli(argv: list[str]) -> int:
    parser = OneLineParser(prog="python -m bench.unlabelled_value", description=__doc__.split("\n")[0])
    parser.add_argument("--unlabelled", help="pretraining corpus, Tianchi TSV (default: the embedded corpus)")
    parser.add_argument("--train", help="labelled training TSV (label, text); default: the embedded cls data")
    parser.add_argument("--dev", help="labelled dev TSV; default: the embedded cls data")
    parser.add_argument("--train-fraction", type=float, default=0.1,
                        help="share of labels, stratified; 1 = all (default 0.1)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="subsets to draw (seed --seed, --seed + 1, ...; default 3)")
    parser.add_argument("--seed", type=int, default=0, help="the first subset's seed: match python -m finetune's "
                        "--seed (finetune.cross_validate's folds use 42, 43, ...; default 0)")
    parser.add_argument("--components", type=int, default=100, help="LSA dimensions K (default 100)")
    parser.add_argument("--class-weight", choices=("none", "balanced"), default="none",
                        help="both rows' logistic regression: as python -m finetune's --class-weight (default none)")
    parser.add_argument("--encoder", help="a pretrained folder (e.g. runs/pretrain/final): add its frozen "
                                          "predicted-word rows, and random init's as the control")
    parser.add_argument("--out", default="runs/unlabelled_value.json",
                        help="JSON of every row, per seed (default runs/unlabelled_value.json)")
    args = parser.parse_args(argv)
    for flag, value, ok, rule in (("--train-fraction", args.train_fraction, 0 < args.train_fraction <= 1,
                                   "in (0, 1], e.g. 0.1 (1 = all labels)"),
                                  ("--seeds", args.seeds, args.seeds >= 1, "at least 1"),
                                  ("--components", args.components, args.components >= 1, "at least 1")):
        if not ok:
            raise ValueError(f"{flag} {value}: must be {rule}")
    if (args.train is None) != (args.dev is None) or (args.train is not None and args.unlabelled is None):
        raise ValueError("pass --unlabelled, --train and --dev together, or none of them for the embedded data")
    with tempfile.TemporaryDirectory() as scratch:
        paths = (args.unlabelled, args.train, args.dev) if args.train else default_paths(Path(scratch))
        result = compare(*paths, None if args.train_fraction >= 1 else args.train_fraction, args.seeds,
                         args.components, args.seed, args.class_weight, args.encoder)
    for name, row in result["rows"].items():
        spread = f"± {row['sd']:.3f}" if args.seeds > 1 else "(one seed: no spread to show)"
        print(f"{name:>60}: dev macro-F1 {row['mean']:.3f} {spread}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 measured and written, 2 bad input (one `error:` line; see minibert/cli.py)."""
    return run_cli(unlabelled_value_cli, argv)


if __name__ == "__main__":
    sys.exit(main())
