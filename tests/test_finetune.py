"""Fine-tuning (finetune/): label validation, truncation, NER label alignment, batching, gradient accumulation,
and a tiny end-to-end run through the CLI that learns."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from finetune.__main__ import main
from finetune.data import FORMATS, DataError, read_cluener, read_tsv, label_set_report, check_class_labels
from finetune.features import (Feature, bucketed_batches, collate, encode_ner, longest_first, truncate)
from finetune.tasks import balanced_class_weights
from finetune.train import accumulate_gradients
from minibert.heads import BertForSequenceClassification, BertForTokenClassification
from minibert.training.device import make_grad_scaler


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---- label validation ------------------------------------------------------------------------------------------
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


def test_ner_spans_outside_the_text_are_refused_with_the_line(tmp_path):
    good = {"text": "王小明在北京", "label": {"name": {"王小明": [[0, 2]]}, "address": {"北京": [[4, 5]]}}}
    outside = {"text": "张三", "label": {"name": {"张三丰": [[0, 2]]}}}
    shifted = {"text": "去上海", "label": {"address": {"上海": [[0, 1]]}}}
    path = write(tmp_path / "train.json", "\n".join(json.dumps(r, ensure_ascii=False) for r in (good, outside, shifted)))
    with pytest.raises(DataError) as error:
        read_cluener(path)
    message = str(error.value)
    assert "line 2: name '张三丰' span [0, 2] outside text of length 2" in message
    assert "line 3: address span [0, 1] covers '去上'" in message
    assert read_cluener(write(tmp_path / "ok.json", json.dumps(good)))[0].entities == [("name", 0, 2), ("address", 4, 5)]


def test_column_formats_cola_and_sst2(tmp_path):
    cola = read_tsv(write(tmp_path / "cola.tsv", "gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThe more.\n"),
                    FORMATS["cola"])
    assert [(e.label, e.text) for e in cola] == [(1, "Our friends won't buy this."), (0, "The more.")]
    sst = read_tsv(write(tmp_path / "sst.tsv", "sentence\tlabel\nhide new secretions \t0\n"), FORMATS["sst2"])
    assert (sst[0].label, sst[0].line) == (0, 2)


# ---- truncation ------------------------------------------------------------------------------------------------
def test_truncation_modes():
    ids = np.arange(100)
    assert truncate(ids, 10, "head").tolist() == list(range(10))
    assert truncate(ids, 10, "tail").tolist() == list(range(90, 100))
    assert truncate(ids, 12, "head+tail").tolist() == [0, 1, 2] + list(range(91, 100))  # 1/4 head, 3/4 tail
    assert truncate(ids, 510 - 400, "head+tail")[:28].tolist() == list(range(28))  # round(110·128/510) = 28
    assert truncate(ids[:5], 10, "head+tail").tolist() == list(range(5))  # short texts are untouched
    with pytest.raises(ValueError, match="--truncate"):
        truncate(ids, 10, "middle")


def test_longest_first_matches_the_token_by_token_loop():
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b, budget = (int(v) for v in rng.integers(0, 40, 3))
        loop_a, loop_b = a, b
        while loop_a + loop_b > budget:
            if loop_a > loop_b:
                loop_a -= 1
            else:
                loop_b -= 1
        assert longest_first(a, b, budget) == (loop_a, loop_b)


# ---- NER label alignment ---------------------------------------------------------------------------------------
class SplittingTokenizer:
    """A stand-in tokenizer where 'X' splits into two sub-tokens and ' ' into none (as WordPiece may)."""
    pad_id, unk_id, cls_id, sep_id = 0, 1, 2, 3

    def encode_ids_batch(self, texts):
        table = {"X": [10, 11], " ": []}
        return [np.array(table.get(t, [20 + ord(t) % 50]), np.int32) for t in texts]


def test_ner_labels_sit_on_first_sub_tokens_with_minus_100_elsewhere():
    from finetune.data import NerExample
    example = NerExample("aX b", [("name", 0, 1), ("company", 3, 3)])  # 'aX' is a name, 'b' a company
    tokenizer = SplittingTokenizer()
    (bio,) = encode_ner(tokenizer, [example], max_length=32, types=["company", "name"], scheme="bio")
    # tokens: [CLS] a X1 X2 [UNK](space) b [SEP]
    assert bio.input_ids.tolist() == [2, 20 + ord("a") % 50, 10, 11, 1, 20 + ord("b") % 50, 3]
    # tags: O=0, B-company=1, I-company=2, B-name=3, I-name=4
    assert bio.label.tolist() == [-100, 3, 4, -100, 0, 1, -100]
    assert bio.token_to_char.tolist() == [-1, 0, 1, -1, 2, 3, -1]
    (spans,) = encode_ner(tokenizer, [example], max_length=32, types=["company", "name"], scheme="spans")
    assert spans.label.tolist() == [[1, 1, 2], [0, 5, 5]]  # (type, first token of start, first token of end)
    batch = collate([bio, Feature(np.array([2, 5, 3]), None, np.array([-100, 0, -100]))], 0, "tags", 5)
    assert batch["labels"][1].tolist() == [-100, 0, -100] + [-100] * 4  # padding is -100 too


def test_ner_truncation_drops_cut_entities_from_training_labels():
    from finetune.data import NerExample
    example = NerExample("abcdef", [("name", 1, 2), ("name", 3, 5)])
    (f,) = encode_ner(SplittingTokenizer(), [example], max_length=6, types=["name"], scheme="spans")
    assert len(f.input_ids) == 6 and f.label.tolist() == [[0, 2, 3]]  # only the entity that fits


# ---- batching --------------------------------------------------------------------------------------------------
def test_bucketed_batches_cover_every_example_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(5, 500, 1000)
    batches = bucketed_batches(lengths, 16, shuffle=True, seed=1, bucket_batches=10)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    random_spread = np.mean([np.ptp(lengths[i:i + 16]) for i in range(0, 1000, 16)])
    assert spread < random_spread / 4
    assert bucketed_batches(lengths, 16, shuffle=True, seed=2)[0].tolist() != batches[0].tolist()


# ---- gradient accumulation -------------------------------------------------------------------------------------
def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_accumulated_gradient_equals_the_full_batch_gradient():
    config = tiny_config()
    model = BertForSequenceClassification(config, num_labels=3).eval()
    lengths = [4, 9, 6, 12] * 8  # 32 examples of different lengths
    features = [Feature(np.random.randint(5, 97, n), None, int(np.random.randint(3))) for n in lengths]
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
    features = [Feature(np.random.randint(5, 97, 4 + i % 7), None, label) for i, label in enumerate(labels)]
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
    def feature(n, labelled):
        label = np.full(n, -100)
        label[1:1 + labelled] = np.random.randint(0, 3, labelled)
        return Feature(np.random.randint(5, 97, n), None, label)
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


# ---- end to end ------------------------------------------------------------------------------------------------
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


# ---- pairs, multi-label, NER and long inputs through the same code paths ---------------------------------------
def test_pair_features_have_segments_and_longest_first_truncation(tmp_path):
    from finetune.features import encode_texts
    from minibert.tokenizers import WhitespaceTokenizer
    tsv = write(tmp_path / "pair.tsv", "label\ttext_a\ttext_b\n1\ta b c d e f\tx y\n")
    examples = read_tsv(tsv, FORMATS["pair"])
    tokenizer = WhitespaceTokenizer.build(["a b c d e f x y"])
    (f,) = encode_texts(tokenizer, examples, max_length=8, truncate_mode="head")  # 5 text tokens fit
    tokens = tokenizer.convert_ids_to_tokens(f.input_ids)
    assert tokens == ["[CLS]", "a", "b", "c", "[SEP]", "x", "y", "[SEP]"]
    assert f.token_type_ids.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert collate([f], tokenizer.pad_id, "class", 2)["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]


def test_multi_label_rows_become_multi_hot_and_thresholded_predictions(tmp_path):
    from finetune.tasks import TaskSpec, decode
    tsv = write(tmp_path / "m.tsv", "label\ttext\n0,2\t5 6\n1\t7\n")
    examples = read_tsv(tsv, FORMATS["tianchi"], multi_label=True)
    assert [e.label for e in examples] == [[0, 2], [1]]
    features = [Feature(np.array([2, 9, 3]), None, e.label) for e in examples]
    assert collate(features, 0, "multi", 3)["labels"].tolist() == [[1, 0, 1], [0, 1, 0]]
    spec = TaskSpec("cls", "tianchi", "multi", 3, ["0", "1", "2"], "micro_f1", ("classifier",))
    assert decode(spec, torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -1.0]]), features, 0.5) == [[0, 2], []]


def test_bio_decoding_to_entities():
    from finetune.tasks import bio_to_entities
    # tags: O=0, B-a=1, I-a=2, B-b=3, I-b=4
    tags = np.array([1, 2, 0, 3, 4, 4, 2, 0, 4, 1])
    assert bio_to_entities(tags, ["a", "b"]) == {("a", 0, 1), ("b", 3, 5), ("a", 9, 9)}  # stray I-tags ignored


def write_ner(path, rng, n):
    rows = []
    for _ in range(n):
        filler = "".join(rng.choice(list("的了是在有这个我们"), size=int(rng.integers(2, 6))))
        name = "王" + "".join(rng.choice(list("小明华"), size=2))
        text = filler + name + filler
        rows.append(json.dumps({"text": text, "label": {"name": {name: [[len(filler), len(filler) + 2]]}}},
                               ensure_ascii=False))
    write(path, "\n".join(rows) + "\n")


@pytest.mark.parametrize("head", ["globalpointer", "softmax"])
def test_tiny_ner_end_to_end_with_hierarchical_positions(tmp_path, capsys, head):
    rng = np.random.default_rng(0)
    write_ner(tmp_path / "train.json", rng, 48)
    write_ner(tmp_path / "dev.json", rng, 16)
    tiny_config(vocab_size=32, max_position_embeddings=16).to_json(tmp_path / "tiny.json")
    args = ["--task", "ner", "--head", head, "--train", str(tmp_path / "train.json"), "--dev",
            str(tmp_path / "dev.json"), "--init", "random", "--model-config", str(tmp_path / "tiny.json"),
            "--lr", "3e-3", "--head-lr", "3e-3", "--epochs", "3", "--batch-size", "8", "--max-length", "24",
            "--globalpointer-head-size", "8", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(args) == 2 and "--hierarchical-positions" in capsys.readouterr().err  # 24 > 16 positions
    assert main(args + ["--hierarchical-positions", "--predict", str(tmp_path / "dev.json")]) == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "per_type"} <= set(summary["best"])
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    predicted = [json.loads(line) for line in (tmp_path / "run" / "predictions.json").read_text().splitlines()]
    assert len(predicted) == 16 and all(set(p) == {"text", "label"} for p in predicted)


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
