"""What a checkpoint's weights do not say, and paths that mean more than one thing: a classifier's representation
and loss kind survive a save and are checked on load; conversion (convert_checkpoint and its CLI weights_convert.py)
keeps a classifier head and never deletes a folder it did not write; "." works as a path; a folder holding two
checkpoints is refused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from minibert import BertConfig, BertModel
from minibert.checkpoint import CheckpointError, load_pretrained, open_source, save_pretrained
from minibert.checkpoint.conversion import convert_checkpoint
from minibert.checkpoint.conversion import fixed_outputs
from minibert.heads import BertForSequenceClassification, BertForTokenClassification
from minibert.validation import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
import weights_convert  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tf_tiny"


def classifier(representation="pooler", multi_label=False, num_labels=3):
    return lambda config: BertForSequenceClassification(config, num_labels, representation=representation,
                                                         multi_label=multi_label)


def test_a_minibert_classifier_records_its_head_and_refuses_another(tmp_path):
    model = load_pretrained(classifier("cls"), FIXTURE).model
    save_pretrained(model, tmp_path, vocab=FIXTURE / "vocab.txt")
    assert json.loads((tmp_path / "config.json").read_text())["representation"] == "cls"
    with pytest.raises(CheckpointError, match="trained with representation='cls'; this model uses "
                                              "representation='mean'"):
        load_pretrained(classifier("mean"), tmp_path)
    with pytest.raises(CheckpointError, match="trained with multi_label=False; this model uses multi_label=True"):
        load_pretrained(classifier("cls", multi_label=True), tmp_path)
    again = load_pretrained(classifier("cls"), tmp_path).model
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_finetuned_folder_is_checked_through_its_finetune_json(tmp_path):
    model = load_pretrained(classifier("mean"), FIXTURE).model
    model.config.to_json(tmp_path / "config.json")  # what finetune/checkpoints.py:save_finetuned writes
    save_pretrained(model, tmp_path / "tmp")
    shutil.move(tmp_path / "tmp" / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "finetune.json").write_text(json.dumps({"config": {"representation": "mean", "multi_label": False}}))
    with pytest.raises(CheckpointError, match="representation='mean'; this model uses representation='cls'"):
        load_pretrained(classifier("cls"), tmp_path)
    load_pretrained(classifier("mean"), tmp_path)


def test_a_multi_label_export_tells_transformers_and_is_checked_back(tmp_path):
    model = load_pretrained(classifier("pooler", multi_label=True), FIXTURE).model
    save_pretrained(model, tmp_path, format="hf", vocab=FIXTURE / "vocab.txt")
    assert json.loads((tmp_path / "config.json").read_text())["problem_type"] == "multi_label_classification"
    with pytest.raises(CheckpointError, match="multi_label=True; this model uses multi_label=False"):
        load_pretrained(classifier("pooler"), tmp_path)
    load_pretrained(classifier("pooler", multi_label=True), tmp_path)


def test_the_vocabulary_is_saved_under_the_name_the_loaders_read(tmp_path):
    odd = tmp_path / "bert-tiny-vocab.txt"
    shutil.copy(FIXTURE / "vocab.txt", odd)
    save_pretrained(load_pretrained(BertModel, FIXTURE).model, tmp_path / "out", vocab=odd)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    load_pretrained(BertModel, tmp_path / "out", require_vocab=True)


def test_a_cased_model_stays_cased_through_loading_and_conversion(tmp_path):
    """A vocab.txt carries no settings and, read alone, lower-cases: a cased model's folder must be read through its
    tokenizer.json, and converting it must carry that file along (and drop a stale one from an older save)."""
    from minibert.tokenizers import WordPieceTokenizer

    words = tmp_path / "words.txt"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Paris", "paris"]
    words.write_text("\n".join(tokens + [f"w{i}" for i in range(100 - len(tokens))]) + "\n")  # the fixture's V
    cased = WordPieceTokenizer.from_vocab_txt(words, lowercase=False)
    assert cased.encode("Paris")["input_ids"] == [2, 5, 3]
    save_pretrained(load_pretrained(BertModel, FIXTURE).model, tmp_path / "cased", format="hf", vocab=cased)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "tokenizer.json").write_text("{}")  # an older save's, unreadable: must not survive
    for folder in (tmp_path / "cased", convert_checkpoint(tmp_path / "cased", tmp_path / "hf", to="hf", log=len)):
        vocab = load_pretrained(BertModel, folder).source.vocab_path
        assert vocab.name == "tokenizer.json" and (folder / "vocab.txt").is_file()
        assert WordPieceTokenizer.from_file(vocab).encode("Paris")["input_ids"] == [2, 5, 3], folder


def test_a_tokenizer_json_without_a_template_still_adds_cls_and_sep(tmp_path):
    from minibert.tokenizers import WordPieceTokenizer

    bare = json.loads(WordPieceTokenizer.from_file(FIXTURE / "vocab.txt").backend.to_str())
    bare["post_processor"] = None  # a raw `tokenizers` WordPiece, valid JSON: HF's AutoTokenizer adds them
    (tmp_path / "tokenizer.json").write_text(json.dumps(bare))
    ids = WordPieceTokenizer.from_file(tmp_path / "tokenizer.json").encode("hello")["input_ids"]
    assert ids == WordPieceTokenizer.from_file(FIXTURE / "vocab.txt").encode("hello")["input_ids"]
    assert ids[0] != ids[-1] and len(ids) >= 3


def test_dot_is_a_path_and_a_folder_with_two_checkpoints_is_refused(tmp_path, monkeypatch):
    source = tmp_path / "google"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("*.py", "expected.npz"))
    monkeypatch.chdir(source)
    assert load_pretrained(BertModel, ".").source.format == "tf"
    # a model saved back into the Google folder: which one is meant cannot be guessed
    save_pretrained(load_pretrained(BertModel, ".").model, source)
    with pytest.raises(CheckpointError, match="holds a TF checkpoint .bert_model.ckpt. AND model.safetensors: "
                                              "pass the one you mean"):
        load_pretrained(BertModel, source)
    assert load_pretrained(BertModel, source / "model.safetensors").source.format == "minibert"
    assert load_pretrained(BertModel, source / "bert_model.ckpt").source.format == "tf"


@pytest.mark.parametrize("damage, message", [
    ("tokenizer_truncated", "vocabulary .*tokenizer.json is unreadable .JSONDecodeError"),
    ("tokenizer_list", "vocabulary .*tokenizer.json is unreadable .TypeError"),
    ("index_list", "is not a shard index with a 'weight_map' .*'weight_map' is a list"),
    ("index_binary", "is not a shard index .*UnicodeDecodeError"),
    ("nested_state_dict", r"got dict with keys \['state_dict'\]: save model.state_dict\(\) itself"),
])
def test_broken_side_files_name_the_file(tmp_path, damage, message):
    folder = save_pretrained(load_pretrained(BertModel, FIXTURE).model, tmp_path / "m", vocab=FIXTURE / "vocab.txt")
    if damage.startswith("tokenizer"):
        (folder / "vocab.txt").unlink()
        (folder / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0,' if damage == "tokenizer_truncated"
                                               else "[1, 2]")
    elif damage.startswith("index"):
        (folder / "model.safetensors").rename(folder / "shard.safetensors")
        (folder / "model.safetensors.index.json").write_bytes(
            json.dumps({"weight_map": ["shard.safetensors"]}).encode() if damage == "index_list" else b"\xff\xfe\x00")
    else:
        state = load_pretrained(BertModel, folder).model.state_dict()
        (folder / "model.safetensors").unlink()
        torch.save({"state_dict": state}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(BertModel, folder)


def test_a_json_that_is_not_a_bert_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    with pytest.raises(ConfigError, match="has none of vocab_size, hidden_size, num_hidden_layers .* not a BERT"):
        BertConfig.from_json(tmp_path / "config.json")


def convert(capsys, *args):
    status = weights_convert.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_convert_never_deletes_a_folder_it_did_not_write(tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(FIXTURE, models / "google", ignore=shutil.ignore_patterns("*.py", "expected.npz"))
    (models / "notes.txt").write_text("keep me")
    status, _, err = convert(capsys, models / "google", models)  # DST holds the source
    assert status == 2 and "contains the source" in err
    status, _, err = convert(capsys, FIXTURE, models)  # DST holds a file a conversion does not write
    assert status == 2 and "holds ['google', 'notes.txt']" in err
    assert (models / "notes.txt").read_text() == "keep me" and (models / "google" / "vocab.txt").is_file()
    assert convert(capsys, FIXTURE, tmp_path / "out")[0] == 0
    assert convert(capsys, FIXTURE, tmp_path / "out", "--model", "base")[0] == 0  # an earlier output is replaced


@pytest.mark.parametrize("head, architecture", [("cls", "BertForSequenceClassification"),
                                                ("tokens", "BertForTokenClassification")])
def test_convert_keeps_a_classifier_head(tmp_path, capsys, head, architecture):
    build = classifier("pooler", num_labels=5) if head == "cls" else lambda c: BertForTokenClassification(c, 5)
    trained = load_pretrained(build, FIXTURE).model
    with torch.no_grad():
        trained.classifier.weight.normal_()  # a trained head, unlike the fresh one a dropped head would give
    save_pretrained(trained, tmp_path / "src", format="hf", vocab=FIXTURE / "vocab.txt")
    status, out, err = convert(capsys, tmp_path / "src", tmp_path / "out")
    assert status == 0, err
    assert f"-> minibert {architecture}" in out and "reloads identically" in out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [architecture]
    again = load_pretrained(build, tmp_path / "out").model
    assert torch.equal(again.classifier.weight, trained.classifier.weight)
    status, _, err = convert(capsys, FIXTURE, tmp_path / "none", "--model", head)
    assert status == 2 and "holds no classifier" in err


def test_convert_reads_a_finetuned_ner_folder_as_a_token_classifier(tmp_path):
    # finetune's best/ has no `architectures`; its finetune.json says the labels are BIO tags
    trained = load_pretrained(lambda c: BertForTokenClassification(c, 5), FIXTURE).model
    folder = tmp_path / "best"
    save_pretrained(trained, folder, vocab=FIXTURE / "vocab.txt")
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "finetune.json").write_text(json.dumps({"spec": {"label_kind": "tags"}, "config": {}}))
    lines = []
    convert_checkpoint(folder, tmp_path / "out", to="hf", log=lines.append)
    assert lines[0].endswith("-> minibert BertForTokenClassification")


def test_convert_checkpoint_works_from_python_without_the_cli(tmp_path, capsys):
    build = classifier("pooler", num_labels=4)
    trained = load_pretrained(build, FIXTURE).model
    with torch.no_grad():
        trained.classifier.weight.normal_()  # a trained head: a dropped or fresh one would change the outputs
    save_pretrained(trained, tmp_path / "src", vocab=FIXTURE / "vocab.txt")
    lines = []
    out = convert_checkpoint(str(tmp_path / "src"), tmp_path / "hf", to="hf", log=lines.append)
    assert out == tmp_path / "hf" and capsys.readouterr().out == ""  # progress goes to `log`, not stdout
    assert "reloads identically" in lines[-2] and lines[-1] == f"wrote hf layout to {out}"
    assert open_source(out).format == "hf"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    again = load_pretrained(build, out).model
    assert all(torch.equal(a, b) for a, b in zip(fixed_outputs(trained), fixed_outputs(again), strict=True))
    with pytest.raises(CheckpointError, match="is the source's own folder"):  # raised, not an exit status
        convert_checkpoint(out, out)
    with pytest.raises(CheckpointError, match="model='bogus': expected 'auto' or one of base, mlm"):
        convert_checkpoint(out, tmp_path / "other", model="bogus")
    assert not (tmp_path / "other").exists()
