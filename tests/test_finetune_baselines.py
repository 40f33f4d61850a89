"""The fine-tuning comparison rows: the few-labels subset (--train-fraction), the TF-IDF + LR baseline on full
documents, the three rows of --compare-random --compare-tfidf, and seeds x folds as mean ± sd."""
import json
from collections import Counter

import numpy as np
import pytest
from safetensors.torch import load_file

from finetune_helpers import finetune_args, make_tsv, pretrained_args
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


def test_a_multi_label_subset_is_the_fraction_asked_for_and_keeps_every_label():
    rng = np.random.default_rng(0)
    label_sets = [sorted(set(rng.choice(12, size=int(rng.integers(1, 4))).tolist())) for _ in range(1000)]
    assert len({tuple(s) for s in label_sets}) > 150  # most label sets are rare: strata by set would be singletons
    subset = stratified_subset(examples(label_sets), 0.05, seed=0)
    assert 45 <= len(subset) <= 62  # 50 asked for (plus at most one per stratum from rounding up)
    assert {c for e in subset for c in e.label} == set(range(12))


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


def test_tfidf_tunes_its_ngrams_by_cross_validation_on_train():
    # The class is the ORDER of two tokens ("7 8" vs "8 7"); both classes contain both tokens, so 1-grams see
    # nothing and only the 1-2-gram setting can win. CV on train must find it, without looking at dev.
    rng = np.random.default_rng(3)
    def doc(label):
        tokens = rng.integers(100, 130, size=20).astype(str).tolist()
        at = int(rng.integers(0, 18))
        tokens[at:at + 2] = ["7", "8"] if label else ["8", "7"]
        return TextExample(" ".join(tokens), None, label, 0)
    train = [doc(i % 2) for i in range(200)]
    dev = [doc(i % 2) for i in range(60)]
    result = tfidf_baseline(train, dev, num_labels=2)
    assert result["chosen"]["ngram_range"] == [1, 2] and result["chosen"]["folds"] == 3
    assert result["chosen"]["cv_macro_f1"] > 0.9 and result["accuracy"] > 0.9


def test_tfidf_with_too_few_labels_for_cv_uses_the_defaults():
    train = [TextExample("7 1 2", None, 0, 1), TextExample("8 1 2", None, 1, 2)]  # one example per class
    result = tfidf_baseline(train, train, num_labels=2, class_weights=("balanced", "none"))
    assert result["chosen"] == {"ngram_range": [1, 2], "C": 10.0, "class_weight": "balanced", "cv_macro_f1": None,
                                "folds": 0}  # nothing to choose by: the first weighting offered (the encoder's)


def compare_rows(tmp_path, capsys, seed: int, train: int, dev: int, *flags) -> tuple[dict, str]:
    """`python -m finetune ... --compare-random --compare-tfidf` on make_tsv data: (compare.json, printed)."""
    rng = np.random.default_rng(seed)
    make_tsv(tmp_path / "train.tsv", train, rng)
    make_tsv(tmp_path / "dev.tsv", dev, rng)
    code = main(pretrained_args(tmp_path, "--data", str(tmp_path), "--out", str(tmp_path / "run"), *flags,
                                "--compare-random", "--compare-tfidf"))
    printed = capsys.readouterr().out
    assert code == 0, printed
    return json.loads((tmp_path / "run" / "compare.json").read_text()), printed


def test_three_rows_on_the_same_few_labels(tmp_path, capsys):
    compare, printed = compare_rows(tmp_path, capsys, 1, 200, 40, "--train-fraction", "0.1")
    assert compare["train_examples"] == 20 and "(20 training examples, train fraction 0.1" in printed
    assert len(compare["rows"]) == 3
    for name, value in compare["rows"].items():  # each row printed with its value
        assert f"{name}" in printed and f"{value:.4f}" in printed
    tfidf = [v for name, v in compare["rows"].items() if name.startswith("TF-IDF")][0]
    assert tfidf > 0.7  # one token decides the class: 20 examples already beat chance (0.5) clearly


def test_random_init_after_an_early_stop_follows_the_pretrained_runs_lr_curve(tmp_path, capsys, monkeypatch):
    """The pretrained row stopped early (here: made to report 3 of its 13 steps) with its LR still high; the random-init
    row must train those 3 steps on the SAME curve, not on a schedule squeezed into 3 steps that decays to ~0."""
    import finetune.__main__ as cli
    from minibert.training.schedule import lr_multiplier

    real_train, calls = cli.train, []

    def train_then_pretend_an_early_stop(cfg, prepared):
        summary = real_train(cfg, prepared)
        calls.append(cfg)
        return {**summary, "steps": 3} if len(calls) == 1 else summary

    monkeypatch.setattr(cli, "train", train_then_pretend_an_early_stop)
    rng = np.random.default_rng(5)
    make_tsv(tmp_path / "train.tsv", 100, rng)
    make_tsv(tmp_path / "dev.tsv", 20, rng)
    assert main(pretrained_args(tmp_path, "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--epochs", "1",
                                "--warmup-ratio", "0.25", "--compare-random")) == 0
    schedule = json.loads((tmp_path / "run" / "metrics.json").read_text())["schedule_steps"]
    assert schedule == 13 and calls[1].max_steps == 3 and calls[1].schedule_steps == 13  # ceil(100 / 8) steps
    logged = [json.loads(line) for line in (tmp_path / "run-random" / "metrics.jsonl").read_text().splitlines()]
    lrs = [row["lr"] for row in logged if "lr" in row]
    assert lrs == pytest.approx([3e-3 * lr_multiplier(s, 3, 13) for s in range(3)])  # warmup 3 of 13: 1/3, 2/3, 1


def test_the_random_init_control_starts_at_berts_init_std_whatever_the_encoder_says(tmp_path, capsys):
    """make pretrain's config.json records its recipe's init std, 0.03 (its way off the MLM plateau). The control of
    --compare-random takes the encoder's SHAPE, not that: it starts at BERT's 0.02, as --init random does, so a
    pretraining recipe cannot move the row it is compared with (0.03 cost random init 0.024 at full labels, one seed:
    docs/results.md)."""
    rng = np.random.default_rng(6)
    make_tsv(tmp_path / "train.tsv", 40, rng)
    make_tsv(tmp_path / "dev.tsv", 10, rng)
    assert main(pretrained_args(tmp_path, "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--max-steps", "2",
                                "--compare-random", initializer_range=0.03)) == 0
    capsys.readouterr()

    def init_std(run):
        return json.loads((tmp_path / run / "best" / "config.json").read_text())["initializer_range"]

    assert init_std("run") == 0.03 and init_std("run-random") == 0.02


def test_initializer_range_sets_a_random_init_and_is_refused_for_a_trained_encoder(tmp_path, capsys):
    rng = np.random.default_rng(7)
    make_tsv(tmp_path / "train.tsv", 40, rng)
    make_tsv(tmp_path / "dev.tsv", 10, rng)
    data = ["--data", str(tmp_path), "--max-steps", "1"]
    assert main(finetune_args(tmp_path, *data, "--out", str(tmp_path / "wide"), "--initializer-range", "0.5")) == 0
    weights = load_file(tmp_path / "wide" / "best" / "model.safetensors")
    position_std = float(weights["bert.embeddings.position_embeddings.weight"].std())
    assert 0.3 < position_std < 0.6  # 0.5 cut at ±2 std reads 0.44; BERT's 0.02 would read 0.018 (one step moves 3e-3)
    capsys.readouterr()
    assert main(pretrained_args(tmp_path, *data, "--out", str(tmp_path / "run"), "--initializer-range", "0.05")) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--initializer-range 0.05" in error and "--init random" in error


def test_balanced_class_weights_reach_every_row_and_the_saved_model(tmp_path, capsys):
    compare, printed = compare_rows(tmp_path, capsys, 3, 60, 20, "--class-weight", "balanced")
    assert "the encoders with balanced class weights" in printed and compare["class_weight"] == "balanced"
    # the TF-IDF row chose its own weighting by CV, and says which
    chosen = compare["tfidf_chosen"]
    said = {"none": "no class weights;", "balanced": "balanced class weights;"}[chosen["class_weight"]]
    assert f"C={chosen['C']:g}, {said}" in printed
    labels = [int(line.split("\t")[0]) for line in (tmp_path / "train.tsv").read_text().splitlines()[1:]]
    spec = json.loads((tmp_path / "run" / "best" / "finetune.json").read_text())["spec"]
    assert spec["class_weights"] == pytest.approx([len(labels) / (2 * labels.count(c)) for c in (0, 1)])
    # NER has no class weights: a one-line error (exit 2), not a silent no-op
    assert main(["--task", "ner", "--class-weight", "balanced", "--no-progress", "--out", str(tmp_path / "ner")]) == 2
    assert "--class-weight balanced: for --task cls and pair" in capsys.readouterr().err


def test_balanced_tfidf_finds_the_rare_class():
    # Class 1 is rare (4 of 64) and shares most of its words with class 0: unweighted, C = 1 under-fits it.
    rng = np.random.default_rng(0)
    def doc(label):
        words = rng.integers(100, 130, size=12).astype(str).tolist()
        return TextExample(" ".join(words + (["7"] if label else [])), None, label, 0)
    train = [doc(int(i % 16 == 0)) for i in range(64)]
    dev = [doc(int(i % 4 == 0)) for i in range(40)]
    plain = tfidf_baseline(train, dev, num_labels=2)
    balanced = tfidf_baseline(train, dev, num_labels=2, class_weights=("balanced",))
    assert balanced["macro_f1"] >= plain["macro_f1"] and balanced["per_class"]["1"]["recall"] > 0.5
    assert (plain["chosen"]["class_weight"], balanced["chosen"]["class_weight"]) == ("none", "balanced")
    # Offered both, cross-validation on the training set picks the weighting itself: here the balanced one, so
    # the row is exactly the balanced fit, whichever weighting is listed first (the encoder's, in a comparison).
    for order in (("none", "balanced"), ("balanced", "none")):
        either = tfidf_baseline(train, dev, num_labels=2, class_weights=order)
        assert either["chosen"] == balanced["chosen"] and either["macro_f1"] == balanced["macro_f1"]


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
    # the encoder minus TF-IDF, run by run (same examples, same dev fold), and the figure that draws it
    (encoder, encoder_row), (tfidf, tfidf_row) = result["rows"].items()
    diff = result["paired"][tfidf]
    assert list(result["paired"]) == [tfidf]
    assert diff["runs"] == pytest.approx(np.subtract(encoder_row["runs"], tfidf_row["runs"]).tolist())
    assert diff["ahead"] == sum(d > 0 for d in diff["runs"]) and diff["mean"] == pytest.approx(np.mean(diff["runs"]))
    assert f"{encoder} minus {tfidf}: {diff['mean']:+.4f}" in printed and f"ahead in {diff['ahead']} of 4" in printed
    assert (tmp_path / "cv" / "cross_validation.png").stat().st_size > 10_000
    folder = tmp_path / "cv" / "seed42"  # seeds --seed (42 by default) and 43
    dev = [set((folder / f"fold{k}" / "data" / "dev.tsv").read_text().splitlines()[1:]) for k in (0, 1)]
    assert not dev[0] & dev[1] and len(dev[0] | dev[1]) == 60  # the folds partition the file


def test_paired_differences_count_the_runs_where_the_encoder_is_ahead():
    from finetune.cross_validate import paired_differences

    runs = {"encoder": [0.50, 0.40, 0.60], "random": [0.45, 0.42, 0.50], "tfidf": [0.55, 0.45, 0.65]}
    paired = paired_differences(runs)
    assert list(paired) == ["random", "tfidf"]  # the first row is the one the others are subtracted from
    assert paired["random"]["runs"] == pytest.approx([0.05, -0.02, 0.10]) and paired["random"]["ahead"] == 2
    assert paired["random"]["sd"] == pytest.approx(np.std([0.05, -0.02, 0.10], ddof=1))
    assert paired["tfidf"]["mean"] == pytest.approx(-0.05) and paired["tfidf"]["ahead"] == 0
    assert paired_differences({"encoder": [0.5]}) == {}  # one row: nothing to pair


def test_cross_validation_averages_random_init_over_folds_of_different_step_counts(tmp_path, capsys):
    # 61 rows in 3 folds: 40 or 41 training rows, so 5 or 6 steps of 8 per fold. The random-init row must stay one
    # row averaged over the folds (its name once carried the step count, which split it into one row per count).
    make_tsv(tmp_path / "train.tsv", 61, np.random.default_rng(3))
    code = cross_validate_main(["--folds", "3", "--seeds", "1", "--", *pretrained_args(
        tmp_path, "--train", str(tmp_path / "train.tsv"), "--out", str(tmp_path / "cv"), "--compare-random")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    steps = {json.loads((tmp_path / "cv" / "seed42" / f"fold{k}" / "run" / "metrics.json").read_text())["steps"]
             for k in range(3)}
    assert len(steps) == 2  # the case this test is about
    result = json.loads((tmp_path / "cv" / "cross_validation.json").read_text())
    assert len(result["rows"]) == 2 and all(len(row["runs"]) == 3 for row in result["rows"].values())


def test_cross_validation_stopped_part_way_goes_on_and_refuses_to_mix_in_other_flags(tmp_path, capsys, monkeypatch):
    import finetune.cross_validate as cv

    make_tsv(tmp_path / "train.tsv", 40, np.random.default_rng(4))
    args = finetune_args(tmp_path, "--train", str(tmp_path / "train.tsv"), "--out", str(tmp_path / "cv"),
                         "--max-steps", "2", "--compare-tfidf")
    trained, real_run = [], cv.run

    def run_then_ctrl_c_on_fold_3(cfg):  # the third (seed, fold) is interrupted, as by Ctrl-C during its training
        trained.append(cfg.out)
        if len(trained) == 3:
            raise KeyboardInterrupt
        return real_run(cfg)

    monkeypatch.setattr(cv, "run", run_then_ctrl_c_on_fold_3)
    assert cross_validate_main(["--folds", "2", "--seeds", "2", "--", *args]) == 130
    assert "run the same command again" in capsys.readouterr().err
    folders = [tmp_path / "cv" / f"seed{s}" / f"fold{k}" for s in (42, 43) for k in (0, 1)]
    assert [(f / "result.json").is_file() for f in folders] == [True, True, False, False]
    earlier = [json.loads((f / "result.json").read_text())["rows"] for f in folders[:2]]

    trained.clear()
    monkeypatch.setattr(cv, "run", lambda cfg: trained.append(cfg.out) or real_run(cfg))
    assert cross_validate_main(["--folds", "2", "--seeds", "2", "--", *args]) == 0
    printed = capsys.readouterr().out
    assert trained == [str(f / "run") for f in folders[2:]]  # only the two runs that had not finished
    assert printed.count("finished earlier") == 2
    result = json.loads((tmp_path / "cv" / "cross_validation.json").read_text())
    for name, row in result["rows"].items():  # the four runs, the first two read back exactly as they were
        assert len(row["runs"]) == 4 and row["runs"][:2] == [earlier[0][name], earlier[1][name]]

    for folder in folders:  # a grid from before a flag existed records no value for it: it ran with the default
        record = json.loads((folder / "result.json").read_text())
        del record["config"]["initializer_range"]
        (folder / "result.json").write_text(json.dumps(record))
    trained.clear()
    assert cross_validate_main(["--folds", "2", "--seeds", "2", "--", *args]) == 0
    assert trained == [] and capsys.readouterr().out.count("finished earlier") == 4

    trained.clear()
    other = [*args[:args.index("--lr") + 1], "1e-3", *args[args.index("--lr") + 2:]]  # --lr 3e-3 -> 1e-3
    assert cross_validate_main(["--folds", "2", "--seeds", "2", "--", *other]) == 2
    error = capsys.readouterr().err.strip()
    assert trained == [] and len(error.splitlines()) == 1
    assert "seed42/fold0/result.json" in error and "--lr 0.003 there, 0.001 now" in error and "--out" in error
    # The same flags on another split: 3 folds instead of 2 (or an edited --train file) is refused too, in one line.
    assert cross_validate_main(["--folds", "3", "--seeds", "2", "--", *args]) == 2
    error = capsys.readouterr().err.strip()
    assert trained == [] and len(error.splitlines()) == 1
    assert "seed42/fold0/result.json" in error and "another split of the data" in error
