"""Hostile input, part 3: fine-tuning data and folders, and the Python API. In-process through main(argv)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config
from hostile import assert_outcome, run_cli

from minibert import BertConfig, BertForMaskedLM
from minibert.checkpoint import CheckpointError, save_pretrained

NESTED = {"text": "读了浙商银行的书", "label": {"book": {"浙商银行的书": [[2, 7]]}, "company": {"浙商银行": [[2, 5]]}}}
PLAIN = {"text": "我在北京工作", "label": {"address": {"北京": [[2, 3]]}}}
QUICK = ["--init", "random", "--epochs", "1", "--max-length", "16", "--batch-size", "4", "--no-progress",
         "--num-threads", "1"]


def ner_file(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n",
                    encoding="utf-8")
    return path


def tsv(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# (id, task, train file content, extra flags, words)
DATA_CASES = [
    ("labels not integers", "cls", "label\ttext\nx\t1 2 3\n1\t4 5\n", [], ["label", "line 2"]),
    ("short rows", "cls", "label\ttext\n1\n0\t4 5\n", [], ["line 2", "columns", "the text is read from column 2, "
                                                           "the label from column 1", "--text-column"]),
    ("label sets without --multi-label", "cls", "label\ttext\n0,3\t1 2\n1\t4 5\n", [],
     ["line 2: '0,3'", "label sets", "--multi-label"]),
    ("latin-1 TSV", "cls", b"label\ttext\n1\tcaf\xe9\n", [], ["line 2", "UTF-8"]),
    ("empty TSV", "cls", "", [], ["no examples"]),
    ("label column 9", "cls", "label\ttext\n1\t4 5\n", ["--label-column", "9"], ["columns"]),
    ("a stray huge label", "cls", "label\ttext\n1\t4 5\n99999999999999999999\t6 7\n", [],
     ["label 99999999999999999999 on line 3", "100,000,000,000,000,000,000 classes", "only 3 distinct"]),
    ("--num-labels a billion", "cls", "label\ttext\n1\t4 5\n", ["--num-labels", "1000000000"],
     ["--num-labels makes 1,000,000,000 classes"]),
    ("NER not JSON", "ner", ["{not json"], [], ["line 1", "JSON"]),
    ("NER text not a string", "ner", [{"text": 5, "label": {}}], [], ["line 1", "text"]),
    ("NER label a list", "ner", [{"text": "ab", "label": ["x"]}], [], ["line 1", "label"]),
    ("NER spans not a list", "ner", [{"text": "ab", "label": {"t": {"a": 0}}}], [], ["line 1", "span"]),
    ("NER span outside", "ner", [{"text": "ab", "label": {"t": {"ab": [[0, 5]]}}}], [], ["line 1", "outside"]),
    ("NER nested, BIO head", "ner", [PLAIN, NESTED], [], ["1 entity span", "line 2", "--head globalpointer",
                                                        "--overlapping-spans drop"]),
    ("NER empty texts", "ner", [PLAIN, {"text": ""}, {"text": " "}], [], ["2 record(s) with an empty", "line 2",
                                                                          "line 3", "remove those lines"]),
    ("a folder as --train", "cls", None, [], ["is a folder", "pass the data file itself"]),
    ("NER with --compare-tfidf", "ner", [PLAIN], ["--compare-tfidf"], ["--compare-tfidf", "drop it for --task ner"]),
    ("one class", "cls", "label\ttext\n0\t1 2\n0\t3 4\n", [], ["every training example has label 0",
                                                                 "at least 2 classes"]),
    ("a tab inside a text", "cls", "label\ttext\n1\t1 2\t3 4\n0\t4 5\n", [],
     ["line 2", "more tab-separated columns than the header's 2", "replace it with a space"]),
    ("an empty text", "cls", "label\ttext\n1\t   \n0\t4 5\n", [], ["line 2", "empty text"]),
    ("a missing --predict file", "cls", "label\ttext\n1\t1 2\n0\t4 5\n", ["--predict", "nope.tsv"],
     ["nope.tsv", "no such file"]),
    ("multi-label with --compare-tfidf", "cls", "label\ttext\n0,1\t4 5\n", ["--multi-label", "--compare-tfidf"],
     ["--compare-tfidf", "drop it for --multi-label"]),
    # a "labels" typo: every text all-O, and a model that tags nothing scored as trained
    ("NER without any entity", "ner", [{"text": "我在北京", "labels": {"address": {"北京": [[2, 3]]}}}], [],
     ["none of its 1 records has an entity", "['labels', 'text']", '"label"']),
    ("--num-labels with --task ner", "ner", [PLAIN], ["--num-labels", "3", "--multi-label"],
     ["--num-labels, --multi-label", "unused by --task ner"]),
    ("--threshold without --multi-label", "cls", "label\ttext\n1\t1 2\n0\t4 5\n", ["--threshold", "0.3"],
     ["--threshold 0.3", "argmax", "--multi-label"]),
    ("--model-config with a pretrained --init", "cls", "label\ttext\n1\t1 2\n0\t4 5\n",
     ["--init", "runs/pretrain/final", "--model-config", "c.json"], ["--model-config c.json", "--init random"]),
    ("a pair file for a one-text model", "cls", "label\ttext\ttext_b\n1\t1 2\t3 4\n0\t4 5\t6 7\n", [],
     ["second text ('text_b')", "drop unseen", "--task pair"]),
    # columns go by position: a header that says otherwise is another layout, read wrongly
    ("a file without its header", "cls", "0\t5 6 7\n1\t4 5\n", [],
     ["first line '0\\t5 6 7' is an example, not a header", "would be dropped", "--header false"]),
    ("ids where the label is read", "cls", "id\ttext\tlabel\n7\t1 2\t0\n8\t4 5\t1\n", [],
     ["names 'label' as column 2", "read from column 0 ('id')", "--label-column 2"]),
    ("the text named in another column", "cls", "label\tid\ttext\n0\t7\t1 2\n1\t8\t4 5\n", [],
     ["names 'text' as column 2", "the text is read from column 1 ('id')", "--text-column 2"]),
    ("a row-number column and no labels", "cls", "id\ttext\n0\t1 2\n1\t4 5\n", [],
     ["calls the label column 0 (counting from 0) 'id'", "no label", "--predict", "--label-column N"]),
    # random init against random init: the same model twice, two equal rows presented as a comparison
    ("--compare-random from --init random", "cls", "label\ttext\n1\t1 2\n0\t4 5\n", ["--compare-random"],
     ["--compare-random", "already starts from random init (--init random)", "pass a pretrained --init folder"]),
    ("--compare-random for NER's default init", "ner", [PLAIN], ["--init", "auto", "--compare-random"],
     ["--compare-random", "--task ner's default --init", "drop --compare-random"]),
]


@pytest.mark.parametrize("case_id, task, content, extra, words", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_finetune_data(case_id, task, content, extra, words, capsys, tmp_path):
    if task == "ner":
        train = ner_file(tmp_path / "train.json", content)
        dev = ner_file(tmp_path / "dev.json", [PLAIN])
    else:
        train, dev = tsv(tmp_path / "train.tsv", content or ""), tsv(tmp_path / "dev.tsv", "label\ttext\n0\t1 2\n")
    if content is None:  # a folder where the file should be
        train.unlink()
        train.mkdir()
    argv = ["--task", task, "--train", train, "--dev", dev, "--out", tmp_path / "out", *QUICK, *extra]
    assert_outcome(*run_cli("finetune", argv, capsys)[::2], 2, words)
    assert not (tmp_path / "out" / "metrics.json").exists()  # refused before any training


def test_records_keep_a_line_separator_inside_a_text(tmp_path):
    from finetune.data import FORMATS, read_tsv
    from finetune.ner_data import read_cluener
    # str.splitlines() would cut these records in two: U+2028 as json.dumps(ensure_ascii=False) writes it, \x85, \x0c
    record = {"text": "张三\u2028在北京", "label": {"name": {"张三": [[0, 1]]}}}
    (example,) = read_cluener(ner_file(tmp_path / "t.json", [record]))
    assert example.text == "张三\u2028在北京" and example.entities == [("name", 0, 1)]
    rows = read_tsv(tsv(tmp_path / "s.tsv", "sentence\tlabel\r\na\x85b\x0cc\t1\r\n"), FORMATS["sst2"])
    assert [(e.text, e.label, e.line) for e in rows] == [("a\x85b\x0cc", 1, 2)]


def test_header_false_reads_the_first_line_as_an_example(tmp_path):
    from finetune.data import DataError, FORMATS, read_tsv
    with pytest.raises(DataError, match="/dev/null: is not a regular file"):  # exists, but no file: not "no such"
        read_tsv("/dev/null", FORMATS["tianchi"])
    rows = read_tsv(tsv(tmp_path / "n.tsv", "0\t5 6 7\n1\t4 5\n"), {**FORMATS["tianchi"], "header": False})
    assert [(r.label, r.text, r.line) for r in rows] == [(0, "5 6 7", 1), (1, "4 5", 2)]
    named = read_tsv(tsv(tmp_path / "s.tsv", "Sentence\tLabel\nok\t1\n"), FORMATS["sst2"])  # names agree: read
    assert [(r.label, r.text) for r in named] == [(1, "ok")]


def test_prediction_rows_line_up_with_the_input(tmp_path):
    from finetune.data import DataError, FORMATS, read_tsv
    pair = read_tsv(tsv(tmp_path / "p.tsv", "id\tsentence1\tsentence2\n7\t8 9\t10 11\n"), FORMATS["pair"],
                    with_labels=False)
    assert [(e.text, e.text_b) for e in pair] == [("8 9", "10 11")]  # GLUE's names: segment B is not dropped
    with pytest.raises(DataError, match="no segment-B column for a pair model"):
        read_tsv(tsv(tmp_path / "q.tsv", "text\n8 9\n"), FORMATS["pair"], with_labels=False)
    with pytest.raises(DataError, match=r"1 blank row\(s\) inside the file \(line 3: ''\)"):
        read_tsv(tsv(tmp_path / "t.tsv", "text\n5 6 7\n\n8 9\n\n"), FORMATS["tianchi"], with_labels=False)
    assert len(read_tsv(tsv(tmp_path / "u.tsv", "text\n5 6 7\n8 9\n\n"), FORMATS["tianchi"], with_labels=False)) == 2
    with pytest.raises(DataError, match="the first line '5 6 7' names no text column .* add `text` as its first"):
        read_tsv(tsv(tmp_path / "v.tsv", "5 6 7\n8 9\n"), FORMATS["tianchi"], with_labels=False)  # no header row


def test_texts_in_the_label_column_are_cut_short_in_the_error(tmp_path):
    from finetune.data import DataError, FORMATS, read_tsv
    swapped = tsv(tmp_path / "s.tsv", "doc\tclass\n" + " ".join(["7383"] * 300) + "\t3\n")
    with pytest.raises(DataError) as error:
        read_tsv(swapped, FORMATS["tianchi"])  # tianchi: label first, text second
    assert "line 2: '7383 7383 7383 7383 7383 7383 7383 73...'" in str(error.value) and len(str(error.value)) < 300


@pytest.mark.parametrize("head, extra, kept", [("softmax", ["--overlapping-spans", "drop"], 1),
                                               ("globalpointer", [], 2)])
def test_overlapping_spans_drop_or_globalpointer(head, extra, kept, capsys, tmp_path):
    train = ner_file(tmp_path / "train.json", [NESTED, PLAIN] * 4)
    tiny_config(vocab_size=200).to_json(tmp_path / "tiny.json")
    argv = ["--task", "ner", "--train", train, "--dev", train, "--out", tmp_path / "out", "--head", head,
            *QUICK, "--model-config", tmp_path / "tiny.json", "--globalpointer-head-size", "8", *extra]
    code, out, err = run_cli("finetune", argv, capsys)
    assert_outcome(code, err, 0)
    assert ("dropped 4 overlapping" in out) == (head == "softmax")
    assert ("4 dev entity span(s) overlap another" in out) == (head == "softmax")  # dev keeps them, as gold
    from finetune.ner_data import read_cluener, resolve_overlapping_spans
    examples, _ = resolve_overlapping_spans(read_cluener(train), "drop" if extra else "keep", train)
    assert len(examples[0].entities) == kept


def test_globalpointer_encodes_and_decodes_nested_spans():
    """GlobalPointer keeps both nested spans in its labels and decodes a nested pair of scores as two entities."""
    import numpy as np

    from finetune.ner_data import NerExample
    from finetune.features import Feature, encode_ner
    from finetune.tasks import TaskSpec, decode
    from minibert.tokenizers import WhitespaceTokenizer

    text = NESTED["text"]
    tokenizer = WhitespaceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(text)), "test")
    example = NerExample(text, [("book", 2, 7), ("company", 2, 5)], 1)
    feature = encode_ner(tokenizer, [example], 16, ["book", "company"], "spans")[0]
    assert feature.label.tolist() == [[0, 3, 8], [1, 3, 6]]  # token = char + 1 ([CLS])
    spec = TaskSpec("ner", "cluener", "spans", 2, ["book", "company"], "f1", ("ner",))
    scores = torch.full((1, 2, 10, 10), -10.0)  # [B, types, T, T]
    scores[0, 0, 3, 8] = scores[0, 1, 3, 6] = 5.0
    to_char = np.array([-1] + list(range(len(text))) + [-1])
    predicted = decode(spec, scores, [Feature(feature.input_ids, None, None, to_char)], 0.5)
    assert predicted == [{("book", 2, 7), ("company", 2, 5)}]


@pytest.mark.parametrize("case_id, make, words", [
    ("empty folder", lambda p: None, ["--load", "finetune.json"]),
    ("garbage finetune.json", lambda p: (p / "finetune.json").write_text("{oops"), ["--load", "broken"]),
    ("no weights", lambda p: (p / "finetune.json").write_text('{"spec": {}, "config": {}}'), ["--load", "broken"]),
])
def test_broken_load_folder(case_id, make, words, capsys, tmp_path):
    folder = tmp_path / "best"
    folder.mkdir()
    make(folder)
    (tmp_path / "p.tsv").write_text("text\n1 2\n")
    argv = ["--load", folder, "--predict", tmp_path / "p.tsv"]
    assert_outcome(*run_cli("finetune", argv, capsys)[::2], 2, words)


def test_vocab_must_match_the_checkpoint(capsys, tmp_path):
    model = BertForMaskedLM(tiny_config(vocab_size=12))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [str(i) for i in range(7)]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n")
    save_pretrained(model, tmp_path / "enc", vocab=tmp_path / "vocab.txt")
    (tmp_path / "swapped.txt").write_text("\n".join(tokens[:5] + tokens[6:] + tokens[5:6]) + "\n")
    (tmp_path / "small.txt").write_text("\n".join(tokens[:8]) + "\n")
    train = tsv(tmp_path / "t.tsv", "label\ttext\n0\t1 2\n1\t3 4\n")
    for vocab, words in (("swapped.txt", ["line 6", "--vocab"]), ("small.txt", ["--vocab"])):
        argv = ["--task", "cls", "--train", train, "--dev", train, "--init", tmp_path / "enc", "--vocab",
                tmp_path / vocab, "--out", tmp_path / "o", "--no-progress"]
        assert_outcome(*run_cli("finetune", argv, capsys)[::2], 2, words)


# ---- the Python API: (id, call, exception type, words)
API_CASES = [
    ("string dropout", lambda: BertConfig(hidden_dropout_prob="0.1"), ValueError, ["hidden_dropout_prob", "str"]),
    ("bool layers", lambda: BertConfig(num_hidden_layers=True), ValueError, ["num_hidden_layers"]),
    ("nan eps", lambda: BertConfig(layer_norm_eps=float("nan")), ValueError, ["layer_norm_eps"]),
    ("negative init range", lambda: BertConfig(initializer_range=-1.0), ValueError, ["initializer_range"]),
    ("from_dict list", lambda: BertConfig.from_dict([1]), ValueError, ["JSON object"]),
    ("from_dict string int", lambda: BertConfig.from_dict({"hidden_size": "256"}), ValueError, ["hidden_size"]),
    ("PretrainConfig nan lr", lambda: __import__("pretrain.config").config.PretrainConfig(lr=float("nan")),
     ValueError, ["--lr"]),
    ("FinetuneConfig bool string", lambda: __import__("finetune.config").config.FinetuneConfig(multi_label="false"),
     ValueError, ["--multi-label"]),
    ("labels wrong shape", lambda: BertForMaskedLM(tiny_config())(torch.ones(2, 5, dtype=torch.long),
                                                                  labels=torch.ones(2, 4, dtype=torch.long)),
     ValueError, ["labels", "shape"]),
    ("labels wrong dtype", lambda: BertForMaskedLM(tiny_config())(torch.ones(2, 5, dtype=torch.long),
                                                                  labels=torch.ones(2, 5)), ValueError, ["dtype"]),
    ("float token ids", lambda: BertForMaskedLM(tiny_config())(torch.ones(2, 5)), ValueError, ["input_ids"]),
    ("config not a config", lambda: BertForMaskedLM.from_pretrained(".", config=5), TypeError, ["config=5"]),
    ("save NaN model", lambda: save_pretrained(nan_model(), "never-written"), CheckpointError, ["NaN"]),
]


def nan_model():
    model = BertForMaskedLM(tiny_config())
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[3, 0] = float("inf")
    return model


@pytest.mark.parametrize("case_id, call, error, words", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_refuses_in_one_line(case_id, call, error, words, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as info:
        call()
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "never-written").exists()


def test_save_pretrained_writes_nothing_with_a_missing_vocab(tmp_path):
    with pytest.raises(CheckpointError, match="nope.txt"):
        save_pretrained(BertForMaskedLM(tiny_config()), tmp_path / "m", vocab=tmp_path / "nope.txt")
    assert not (tmp_path / "m").exists()


def test_from_pretrained_accepts_a_config_dict(tmp_path):
    model = BertForMaskedLM(tiny_config())
    (tmp_path / "vocab.txt").write_text("\n".join(str(i) for i in range(97)) + "\n")
    save_pretrained(model, tmp_path / "m", vocab=tmp_path / "vocab.txt")
    loaded = BertForMaskedLM.from_pretrained(tmp_path / "m", config=model.config.to_dict())
    assert torch.equal(loaded.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)


def test_a_vocab_that_does_not_fit_the_data_is_refused_or_warned(capsys, tmp_path):
    model = BertForMaskedLM(tiny_config(vocab_size=12))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [str(i) for i in range(7)]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n")
    save_pretrained(model, tmp_path / "enc", vocab=tmp_path / "vocab.txt")
    dev = tsv(tmp_path / "d.tsv", "label\ttext\n0\t1 2\n")
    words = tsv(tmp_path / "words.tsv", "label\ttext\n0\tthe cat sat\n1\ton the mat\n")  # an ID vocab, words given
    argv = ["--task", "cls", "--train", words, "--dev", dev, "--init", tmp_path / "enc", "--out", tmp_path / "o",
            *QUICK[2:]]
    assert_outcome(*run_cli("finetune", argv, capsys)[::2], 2, ["words.tsv", "100% of the training tokens are [UNK]",
                                                                "--tokenizer wordpiece"])
    some = tsv(tmp_path / "some.tsv", "label\ttext\n0\t1 2 3 4 5 x\n1\t6 1 2 3 4 5\n")  # 1 token in 12 unknown
    argv[3] = some
    code, out, _ = run_cli("finetune", argv, capsys)
    assert code == 0 and "some.tsv: 8% of the training tokens are [UNK]" in out and "(refused above 50%)" in out


def test_ner_predict_and_evaluate_files_a_model_cannot_read_as_meant(tmp_path, capsys):
    """A trained NER model, then input it would mishandle in silence: a blank line (the predictions would shift), a
    text past --max-length (its tail is never tagged: warned), an entity type it never learnt (a KeyError before)."""
    train = ner_file(tmp_path / "train.json", [PLAIN] * 4)
    argv = ["--task", "ner", "--train", train, "--dev", train, "--out", tmp_path / "out", *QUICK]
    assert run_cli("finetune", argv, capsys)[0] == 0
    load = ["--load", tmp_path / "out" / "best", "--out", tmp_path / "pred", "--no-progress"]
    blank = ner_file(tmp_path / "blank.json", [{"text": "我在北京"}, "", {"text": "北京"}])
    assert_outcome(*run_cli("finetune", [*load, "--predict", blank], capsys)[::2], 2,
                   ["blank.json", "1 blank line(s) inside the file", "line 2", "remove them"])
    long = ner_file(tmp_path / "long.json", [{"text": "我在北京工作" * 5}, {"text": "北京"}])
    code, out, _ = run_cli("finetune", [*load, "--predict", long], capsys)
    assert code == 0 and "long.json: 1 of 2 texts are longer than --max-length 16 allows (the first on line 1)" in out
    unknown = ner_file(tmp_path / "unknown.json", [{"text": "我看电影", "label": {"movie": {"电影": [[2, 3]]}}}])
    assert_outcome(*run_cli("finetune", [*load[:2], "--evaluate", unknown], capsys)[::2], 2,
                   ["unknown.json", "['movie']", "line 1", "['address']"])


def test_a_model_config_too_small_for_the_vocab_names_the_flag(tmp_path, capsys):
    train = tsv(tmp_path / "train.tsv", "label\ttext\n1\t1 2 3 4\n0\t5 6 7 8\n")
    tiny_config(vocab_size=8).to_json(tmp_path / "tiny.json")  # the vocab built from train.tsv: 5 specials + 8 ids
    argv = ["--task", "cls", "--train", train, "--dev", train, "--out", tmp_path / "out", *QUICK,
            "--model-config", tmp_path / "tiny.json"]
    assert_outcome(*run_cli("finetune", argv, capsys)[::2], 2,
                   ["--model-config", "vocab_size 8", "13 entries", "leave --model-config out"])


def test_a_pair_task_needs_two_token_types(tmp_path, capsys):
    """type_vocab_size 1 has no embedding for segment B: named at start-up with its config, not as an input error."""
    tiny_config(type_vocab_size=1).to_json(tmp_path / "one-type.json")
    pairs = tsv(tmp_path / "train.tsv", "label\ttext_a\ttext_b\n1\t1 2\t3 4\n0\t4 5\t6 7\n")
    argv = ["--task", "pair", "--train", pairs, "--dev", pairs, "--out", tmp_path / "out", *QUICK,
            "--model-config", tmp_path / "one-type.json"]
    assert_outcome(*run_cli("finetune", argv, capsys)[::2], 2,
                   ["one-type.json: type_vocab_size 1", "segment B with token type 1", "type_vocab_size 2"])
