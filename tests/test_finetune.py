"""Fine-tuning (finetune/): label validation, gradient accumulation and class weights, and a tiny end-to-end cls run
through the CLI that learns, config precedence. NER: tests/test_finetune_ner.py."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from finetune.__main__ import main
from finetune.data import FORMATS, DataError, read_tsv, label_set_report, check_class_labels
from finetune.features import Feature, collate
from finetune.predict import load_finetuned
from finetune.tasks import balanced_class_weights
from finetune.train import accumulate_gradients
from minibert.heads import BertForSequenceClassification, BertForTokenClassification
from minibert.training.device import make_grad_scaler


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---- label validation ------------------------------------------------------------------------------------------------
def test_bad_class_labels_fail_before_training_with_line_numbers_and_values(tmp_path):
    tsv = write(tmp_path / "train.tsv", "label\ttext\n0\t5 6 7\n-100\t5 6\n1\t7 8\n15\t9 9\n")
    examples = read_tsv(tsv, FORMATS["tianchi"])
    with pytest.raises(DataError) as error:
        check_class_labels(examples, num_labels=14, path=tsv)
    message = str(error.value)
    assert "line 3: '-100'" in message and "line 5: '15'" in message and "[0, num_labels=14)" in message
    assert "\n" not in message  # one line


def test_non_integer_labels_are_listed(tmp_path):
    tsv = write(tmp_path / "train.tsv", "label\ttext\n0\ta\npositive\tb\n1.5\tc\n")
    with pytest.raises(DataError, match=r"line 3: 'positive', line 4: '1.5'"):
        read_tsv(tsv, FORMATS["tianchi"])


def test_cli_refuses_minus_100_with_one_line_and_exit_2(tmp_path, capsys):
    write(tmp_path / "train.tsv", "label\ttext\n0\t5 6 7\n-100\t5 6\n")
    write(tmp_path / "dev.tsv", "label\ttext\n0\t5 6 7\n")
    code = main(["--task", "cls", "--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "dev.tsv"),
                 "--init", "random", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "line 3: '-100'" in err and "Traceback" not in err


def test_label_set_mismatch_is_reported(tmp_path):
    train = read_tsv(write(tmp_path / "t.tsv", "label\ttext\n0\ta\n1\tb\n2\tc\n"), FORMATS["tianchi"])
    dev = read_tsv(write(tmp_path / "d.tsv", "label\ttext\n0\ta\n3\tb\n"), FORMATS["tianchi"])
    report = label_set_report(train, dev)
    assert "dev has label(s) [3]" in report and "train has label(s) [1, 2]" in report
    assert label_set_report(train, train) is None


# ---- gradient accumulation -------------------------------------------------------------------------------------------
def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_accumulated_gradient_equals_the_full_batch_gradient():
    config = tiny_config()
    model = BertForSequenceClassification(config, num_labels=3).eval()
    lengths = [4, 9, 6, 12] * 8  # 32 examples of different lengths
    rng = np.random.default_rng(0)
    features = [Feature(rng.integers(5, 97, n), None, int(rng.integers(3))) for n in lengths]
    scaler = make_grad_scaler(torch.device("cpu"), None)
    full_loss, _ = accumulate_gradients(model, [collate(features, 0, "class", 3)], "class", scaler, "cpu", None)
    full = gradients(model)
    model.zero_grad(set_to_none=True)
    chunks = [features[:5], features[5:16], features[16:24], features[24:]]  # unequal micro-batches
    loss, terms = accumulate_gradients(model, [collate(c, 0, "class", 3) for c in chunks], "class", scaler, "cpu",
                                       None)
    assert terms == 32 and loss.item() == pytest.approx(full_loss.item(), abs=1e-6)
    for name, grad in gradients(model).items():
        torch.testing.assert_close(grad, full[name], atol=1e-6, rtol=1e-5)


def test_balanced_class_weights_accumulate_exactly_and_lift_the_rare_class():
    # 类别权重 class weights: n / (C·n_c), 1 for a class absent from the training labels.
    assert balanced_class_weights([0, 0, 0, 1], 3) == pytest.approx([4 / 6, 2.0, 1.0])
    config = tiny_config()
    labels = [0] * 27 + [1] * 5  # a rare class
    weights = balanced_class_weights(labels, 2)
    model = BertForSequenceClassification(config, num_labels=2, class_weights=weights).eval()
    rng = np.random.default_rng(0)
    features = [Feature(rng.integers(5, 97, 4 + i % 7), None, label) for i, label in enumerate(labels)]
    batch = collate(features, 0, "class", 2)
    out = model(**batch)
    per_example = torch.nn.functional.cross_entropy(out.logits, batch["labels"], reduction="none")  # [B]
    assert out.loss.item() == pytest.approx((per_example * torch.tensor(weights)[batch["labels"]]).mean().item(),
                                            rel=1e-6)
    assert out.loss.item() != pytest.approx(per_example.mean().item(), rel=1e-3)  # the weights do something
    # Micro-batches of different class mixes still give the full batch's gradient (F.cross_entropy's weight=
    # divides by each micro-batch's summed weights, which would not).
    scaler = make_grad_scaler(torch.device("cpu"), None)
    accumulate_gradients(model, [batch], "class", scaler, "cpu", None)
    full = gradients(model)
    model.zero_grad(set_to_none=True)
    chunks = [features[:20], features[20:]]  # only class 0, then class 0 and all of class 1
    accumulate_gradients(model, [collate(c, 0, "class", 2) for c in chunks], "class", scaler, "cpu", None)
    for name, grad in gradients(model).items():
        torch.testing.assert_close(grad, full[name], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="class_weights: 3 weights for 2 labels"):
        BertForSequenceClassification(config, num_labels=2, class_weights=[1.0, 1.0, 1.0])


def test_token_accumulation_weights_micro_batches_by_labelled_tokens():
    config = tiny_config()
    model = BertForTokenClassification(config, num_labels=3).eval()
    rng = np.random.default_rng(0)
    def feature(n, labelled):
        label = np.full(n, -100)
        label[1:1 + labelled] = rng.integers(0, 3, labelled)
        return Feature(rng.integers(5, 97, n), None, label)
    features = [feature(10, 8), feature(10, 1), feature(6, 4), feature(8, 2)]
    scaler = make_grad_scaler(torch.device("cpu"), None)
    accumulate_gradients(model, [collate(features, 0, "tags", 3)], "tags", scaler, "cpu", None)
    full = gradients(model)
    model.zero_grad(set_to_none=True)
    _, terms = accumulate_gradients(model, [collate(features[:1], 0, "tags", 3), collate(features[1:], 0, "tags", 3)],
                                    "tags", scaler, "cpu", None)
    assert terms == 15
    for name, grad in gradients(model).items():
        torch.testing.assert_close(grad, full[name], atol=1e-6, rtol=1e-5)


def test_balanced_weights_with_windows_count_windows_so_every_class_weighs_the_same(tmp_path):
    from finetune.config import parse_config
    from finetune.prepare import prepare
    # class 0: 9 documents of 40 tokens (3 windows of 14 each), class 1: 3 documents of 5 tokens (1 window each)
    rows = ["label\ttext"] + [f"0\t{' '.join(['11'] * 40)}"] * 9 + ["1\t12 13 14 15 16"] * 3
    write(tmp_path / "train.tsv", "\n".join(rows) + "\n")
    write(tmp_path / "dev.tsv", "label\ttext\n0\t11 11\n1\t12 13\n")
    tiny_config(vocab_size=64).to_json(tmp_path / "tiny.json")
    prepared = prepare(parse_config(["--task", "cls", "--train", str(tmp_path / "train.tsv"), "--dev",
                                     str(tmp_path / "dev.tsv"), "--init", "random", "--model-config",
                                     str(tmp_path / "tiny.json"), "--max-length", "16", "--truncate", "windows",
                                     "--class-weight", "balanced", "--out", str(tmp_path / "run")]))
    windows = np.bincount([f.label for f in prepared.train_features])
    assert windows.tolist() == [27, 3]
    weights = prepared.model.class_weights.tolist()
    assert weights == pytest.approx([30 / (2 * 27), 30 / (2 * 3)])  # counted over documents: 12/18 and 12/6
    assert windows[0] * weights[0] == pytest.approx(windows[1] * weights[1])
    assert prepared.spec.class_weights == pytest.approx(weights)


# ---- end to end ------------------------------------------------------------------------------------------------------
def make_learnable_tsv(path, n, rng):
    """Label = whether token 7 occurs; the rest is noise. Learnable, chance = 50%."""
    rows = ["label\ttext"]
    for _ in range(n):
        label = int(rng.random() < 0.5)
        tokens = rng.integers(10, 40, int(rng.integers(6, 20))).tolist()
        if label:
            tokens[int(rng.integers(len(tokens)))] = 7
        rows.append(f"{label}\t{' '.join(map(str, tokens))}")
    write(path, "\n".join(rows) + "\n")


def test_tiny_end_to_end_finetune_learns_saves_and_predicts(tmp_path, capsys):
    rng = np.random.default_rng(0)
    make_learnable_tsv(tmp_path / "train.tsv", 240, rng)
    make_learnable_tsv(tmp_path / "dev.tsv", 80, rng)
    write(tmp_path / "test.tsv", "text\n7 12 13\n12 13 14 15\n")
    tiny_config(vocab_size=64).to_json(tmp_path / "tiny.json")
    out = tmp_path / "run"
    code = main(["--task", "cls", "--data", str(tmp_path),  # = --train tmp/train.tsv --dev tmp/dev.tsv
                 "--init", "random", "--model-config", str(tmp_path / "tiny.json"), "--lr", "3e-3",
                 "--head-lr", "3e-3", "--epochs", "4", "--batch-size", "16", "--gradient-accumulation", "2",
                 "--max-length", "32", "--warmup-ratio", "0.1", "--patience", "0", "--no-progress",
                 "--out", str(out), "--predict", str(tmp_path / "test.tsv")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads((out / "metrics.json").read_text())
    history = summary["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert summary["best"]["accuracy"] > 0.75  # chance is ~0.5
    assert "epoch | train loss | dev loss" in printed and "head weights" in printed  # table + group table
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert (out / "best" / "model.safetensors").is_file() and (out / "best" / "finetune.json").is_file()
    predictions = (out / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "label" and len(predictions) == 3 and set(predictions[1:]) <= {"0", "1"}
    # From Python, as docs/finetune.md shows: load_finetuned rebuilds the same model, and predicts the same labels.
    cfg, loaded = load_finetuned(out / "best")
    batch = loaded.tokenizer.encode_batch(["7 12 13", "12 13 14 15"], max_length=cfg.max_length)  # [B,T] each
    with torch.no_grad():
        logits = loaded.model(**batch).logits  # [B,C]
    assert [loaded.spec.label_names[i] for i in logits.argmax(-1).tolist()] == predictions[1:]
    # Training again into the same --out: refused in one line that names the run, and nothing of it is touched ...
    again = ["--task", "cls", "--data", str(tmp_path), "--init", "random", "--model-config",
             str(tmp_path / "tiny.json"), "--epochs", "1", "--max-length", "32", "--no-progress", "--out", str(out)]
    weights = (out / "best" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(again) == 2
    refusal = capsys.readouterr().err.strip()
    assert len(refusal.splitlines()) == 1 and f"holds a finished fine-tune (dev {summary['metric']} " in refusal, refusal
    assert f"best epoch {summary['best_epoch']}" in refusal and "--overwrite" in refusal
    assert (out / "best" / "model.safetensors").read_bytes() == weights and (out / "predictions.csv").is_file()
    # ... and with --overwrite (no --predict this time) the old model's predictions go, not stay beside the new one.
    assert main(again + ["--overwrite"]) == 0
    assert not (out / "predictions.csv").exists()


def test_dev_fraction_holds_out_dev_from_the_one_labelled_file_for_every_row(tmp_path, capsys):
    make_learnable_tsv(tmp_path / "train.tsv", 200, np.random.default_rng(0))
    tiny_config(vocab_size=64).to_json(tmp_path / "tiny.json")
    out = tmp_path / "run"
    code = main(["--task", "cls", "--train", str(tmp_path / "train.tsv"), "--dev-fraction", "0.25", "--init", "random",
                 "--model-config", str(tmp_path / "tiny.json"), "--epochs", "1", "--max-length", "32",
                 "--no-progress", "--compare-tfidf", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "dev: 50 examples held out of" in printed and "150 left for training" in printed
    assert json.loads((out / "compare.json").read_text())["train_examples"] == 150  # TF-IDF trains on the same 150
    assert len(json.loads((out / "metrics.json").read_text())["best"]["per_class"]) == 2  # both classes in dev
    # --dev-fraction with a dev file, or without --train, is refused before anything runs
    for argv, says in ((["--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "train.tsv")],
                        "--dev already gives a dev file"), ([], "pass --train FILE")):
        assert main(["--task", "cls", "--dev-fraction", "0.1", "--init", "random", *argv]) == 2
        assert says in capsys.readouterr().err
    # --data: a folder with only train.tsv splits it under --dev-fraction, and says what is missing without it
    folder = tmp_path / "only-train"
    folder.mkdir()
    (folder / "train.tsv").write_text((tmp_path / "train.tsv").read_text())
    common = ["--task", "cls", "--init", "random", "--model-config", str(tmp_path / "tiny.json"), "--epochs", "1",
              "--max-length", "32", "--no-progress", "--overwrite", "--out", str(tmp_path / "run2")]
    assert main([*common, "--data", str(folder), "--dev-fraction", "0.25"]) == 0
    assert "dev: 50 examples held out of" in capsys.readouterr().out
    for data, says in ((folder, "the folder has no dev.tsv; add one, or pass --dev-fraction 0.1"),
                       (tmp_path / "nope", "no such folder"), (folder / "train.tsv", "is a file, not a folder")):
        assert main([*common, "--data", str(data)]) == 2
        assert f"--data {data}: {says}" in capsys.readouterr().err


def test_an_interrupted_runs_model_is_not_replaced_silently_either(tmp_path, capsys):
    # An interrupted fine-tune leaves best/ (its best epoch so far) and no metrics.json: still a model to keep.
    (tmp_path / "run" / "best").mkdir(parents=True)
    write(tmp_path / "run" / "best" / "model.safetensors", "weights")
    for name in ("train.tsv", "dev.tsv"):  # --data names a folder with both files; the --out check comes first
        write(tmp_path / name, "label\ttext\n")
    argv = ["--task", "cls", "--data", str(tmp_path), "--init", "random", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    refusal = capsys.readouterr().err.strip()
    assert "holds the model of an earlier fine-tune" in refusal and "--overwrite" in refusal, refusal
    assert (tmp_path / "run" / "best" / "model.safetensors").read_text() == "weights"
    # Nor are the predictions an earlier `--load ... --predict --out` wrote there
    (tmp_path / "preds").mkdir()
    write(tmp_path / "preds" / "predictions.csv", "label\n1\n")
    assert main(argv[:-1] + [str(tmp_path / "preds")]) == 2
    assert "holds the predictions of an earlier --load --predict" in capsys.readouterr().err
    # A pretraining run's folder is never a fine-tune's --out, --overwrite or not: its vocab.txt would be replaced
    (tmp_path / "pretrained").mkdir()
    write(tmp_path / "pretrained" / "results.json", "{}")
    for extra in ([], ["--overwrite"]):
        assert main(argv[:-1] + [str(tmp_path / "pretrained"), *extra]) == 2
        assert "holds a pretraining run" in capsys.readouterr().err


def test_layer_decay_reaches_the_optimizer(tmp_path, capsys):
    rng = np.random.default_rng(0)
    make_learnable_tsv(tmp_path / "train.tsv", 32, rng)
    make_learnable_tsv(tmp_path / "dev.tsv", 16, rng)
    tiny_config(vocab_size=64).to_json(tmp_path / "tiny.json")
    code = main(["--task", "cls", "--data", str(tmp_path), "--init", "random", "--model-config",
                 str(tmp_path / "tiny.json"), "--lr", "1e-3", "--layer-decay", "0.5", "--epochs", "1",
                 "--max-length", "32", "--no-progress", "--out", str(tmp_path / "run")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = {line.split("  ")[0].strip(): line.split()[-2] for line in printed.splitlines() if line.startswith("depth")}
    # tiny_config has L = 2: the top layer gets lr·0.5, the embeddings lr·0.5³
    assert rows["depth 2 weights"] == "5.00e-04" and rows["depth 0 weights"] == "1.25e-04", rows


def test_config_precedence_defaults_json_flags(tmp_path):
    from finetune.config import parse_config
    write(tmp_path / "run.json", json.dumps({"lr": 1e-4, "epochs": 7, "head": "globalpointer"}))
    cfg = parse_config(["--config", str(tmp_path / "run.json"), "--epochs", "2", "--head-lr", "none",
                        "--no-progress", "--header", "false"])
    assert (cfg.lr, cfg.epochs, cfg.head, cfg.head_lr, cfg.progress, cfg.header) == (1e-4, 2, "globalpointer",
                                                                                       None, False, False)
    assert parse_config([]).gradient_accumulation == 1
    write(tmp_path / "typo.json", json.dumps({"learning_rate": 1e-4}))
    with pytest.raises(ValueError, match="unknown field"):
        parse_config(["--config", str(tmp_path / "typo.json")])
    with pytest.raises(ValueError, match="--truncate='middle'"):
        parse_config(["--truncate", "middle"])


def test_first_runs_side_by_side_all_get_the_same_default_cls_data(tmp_path):
    """Seeds of `python -m finetune.cross_validate` started together each generate the embedded cls data on first
    use; a shared scratch file once let one process delete it under another (FileNotFoundError)."""
    import subprocess
    import sys

    code = "import sys; from finetune.toy_data import default_data; default_data('cls', sys.argv[1])"
    runs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "together")], stderr=subprocess.PIPE,
                             text=True) for _ in range(3)]
    errors = [run.communicate()[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], errors
    from finetune.toy_data import DATA_VERSION, default_data
    alone = default_data("cls", tmp_path / "alone")
    together = sorted((tmp_path / "together" / f"cls-v{DATA_VERSION}").iterdir())
    assert [p.name for p in together] == ["dev.tsv", "train.tsv"]                # no scratch files left behind
    assert [p.read_bytes() for p in together] == [alone[1].read_bytes(), alone[0].read_bytes()]
