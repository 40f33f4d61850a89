"""End to end: TF fixture → minibert (matching TF's own outputs) → HF / minibert files → back, and into transformers.

The expected outputs in tests/fixtures/tf_tiny/expected.npz were computed by make_fixture.py with TensorFlow ops
on Google's variable names: independent of minibert's model code and of its mapping table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from minibert import BertForMaskedLM, BertForPreTraining, BertModel
from minibert.checkpoint import CheckpointError, load_pretrained, save_pretrained
from minibert.heads import BertForGlobalPointerNER, BertForSequenceClassification, BertForTokenClassification

transformers = pytest.importorskip(
    "transformers", reason="transformers (the parity reference) is a test extra; make test installs it")

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tf_tiny"
EXPECTED = np.load(FIXTURE / "expected.npz")
BATCH = {k: torch.from_numpy(EXPECTED[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}


def test_tf_fixture_loads_and_matches_tensorflows_outputs():
    result = load_pretrained(BertForPreTraining, FIXTURE, require_vocab=True)
    report = result.report
    assert result.source.format == "tf"
    assert (len({s for s, _ in report.consumed}), len(report.skipped)) == (46, 57)  # 56 Adam slots + global_step
    assert not report.fresh
    model = result.model
    with torch.no_grad():
        encoded = model.bert(**BATCH)
        heads = model(**BATCH)
    got = {"last_hidden_state": encoded.last_hidden_state, "pooler_output": encoded.pooler_output,
           "mlm_logits": heads.mlm_logits, "nsp_logits": heads.nsp_logits}
    for name, value in got.items():
        expected = torch.from_numpy(EXPECTED[f"out/{name}"])
        assert value.shape == expected.shape, name
        torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-5, msg=name)


def test_tf_to_minibert_to_hf_to_minibert_is_bit_exact(tmp_path):
    original = load_pretrained(BertForPreTraining, FIXTURE).model
    save_pretrained(original, tmp_path / "mb", format="minibert", vocab=FIXTURE / "vocab.txt")
    via_minibert = load_pretrained(BertForPreTraining, tmp_path / "mb")
    assert via_minibert.source.format == "minibert"
    save_pretrained(via_minibert.model, tmp_path / "hf", format="hf", vocab=FIXTURE / "vocab.txt")
    via_hf = load_pretrained(BertForPreTraining, tmp_path / "hf")
    assert via_hf.source.format == "hf"
    first, last = original.state_dict(), via_hf.model.state_dict()
    assert first.keys() == last.keys()
    assert all(torch.equal(first[k], last[k]) for k in first)
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["BertForPreTraining"]


def outputs_of(model, hf: bool):
    with torch.no_grad():
        out = model(**BATCH)
    if hf:
        names = ("last_hidden_state", "pooler_output", "logits", "prediction_logits", "seq_relationship_logits")
        return [getattr(out, n) for n in names if getattr(out, n, None) is not None]
    names = ("last_hidden_state", "pooler_output", "logits", "mlm_logits", "nsp_logits")
    return [getattr(out, n) for n in names if getattr(out, n, None) is not None]


MINIBERT_CLASSES = {  # transformers class name → how to build the minibert model with the same layout
    "BertModel": BertModel,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForPreTraining": BertForPreTraining,
    "BertForSequenceClassification": lambda c: BertForSequenceClassification(c, 3, representation="pooler"),
    "BertForTokenClassification": lambda c: BertForTokenClassification(c, 5),
}


@pytest.mark.parametrize("hf_class", sorted(MINIBERT_CLASSES))
def test_hf_export_loads_in_transformers_without_key_warnings_and_same_outputs(tmp_path, hf_class):
    result = load_pretrained(MINIBERT_CLASSES[hf_class], FIXTURE)
    if hf_class in ("BertForSequenceClassification", "BertForTokenClassification"):
        assert {name for name, _ in result.report.fresh} == {"classifier.weight", "classifier.bias"}
    save_pretrained(result.model, tmp_path, format="hf", vocab=FIXTURE / "vocab.txt")
    hf_model, info = getattr(transformers, hf_class).from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set(), info
    assert info["mismatched_keys"] == set() and not info["error_msgs"], info
    ours, theirs = outputs_of(result.model.eval(), hf=False), outputs_of(hf_model.eval(), hf=True)
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sharded_safetensors_and_pytorch_bin_read_the_same(tmp_path):
    reference = load_pretrained(BertForMaskedLM, FIXTURE).model
    save_pretrained(reference, tmp_path / "hf", format="hf", vocab=FIXTURE / "vocab.txt")
    state = load_file(tmp_path / "hf" / "model.safetensors")
    for layout in ("sharded", "bin"):
        folder = tmp_path / layout
        folder.mkdir()
        for name in ("config.json", "vocab.txt"):
            (folder / name).write_bytes((tmp_path / "hf" / name).read_bytes())
        if layout == "bin":
            torch.save(state, folder / "pytorch_model.bin")
        else:
            names = sorted(state)
            shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
            for shard, keys in shards.items():
                save_file({k: state[k] for k in keys}, folder / shard)
            weight_map = {k: shard for shard, keys in shards.items() for k in keys}
            (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        loaded = load_pretrained(BertForMaskedLM, folder).model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items()), layout


def test_minibert_only_head_fresh_from_tf_kept_in_minibert_format_refused_by_hf(tmp_path):
    model_cls = lambda c: BertForGlobalPointerNER(c, 4, head_size=8)
    result = load_pretrained(model_cls, FIXTURE)
    fresh = dict(result.report.fresh)
    assert set(fresh) == {k for k in result.model.state_dict() if k.startswith("global_pointer.")}
    assert all("GlobalPointer" in reason for reason in fresh.values())
    save_pretrained(result.model, tmp_path / "mb", format="minibert")
    again = load_pretrained(model_cls, tmp_path / "mb")
    assert not again.report.fresh
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in result.model.state_dict().items())
    with pytest.raises(CheckpointError, match="no Hugging Face counterpart; save with format='minibert'"):
        save_pretrained(result.model, tmp_path / "hf", format="hf")


def test_cls_representation_classifier_is_not_exported_as_a_pooler_classifier(tmp_path):
    model = load_pretrained(lambda c: BertForSequenceClassification(c, 3), FIXTURE).model
    with pytest.raises(CheckpointError, match="representation='cls'"):
        save_pretrained(model, tmp_path, format="hf")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_pooler_classifier_does_not_load_into_a_cls_or_mean_model(tmp_path):
    # HF / Google classifiers read the pooler output: on the raw [CLS] state they would score nonsense, silently
    trained = load_pretrained(lambda c: BertForSequenceClassification(c, 3, representation="pooler"), FIXTURE).model
    save_pretrained(trained, tmp_path, format="hf", vocab=FIXTURE / "vocab.txt")
    for representation in ("cls", "mean"):
        with pytest.raises(CheckpointError, match=f"uses representation='{representation}': build it with "
                                                  "representation='pooler'"):
            load_pretrained(lambda c: BertForSequenceClassification(c, 3, representation=representation), tmp_path)
    again = load_pretrained(lambda c: BertForSequenceClassification(c, 3, representation="pooler"), tmp_path)
    assert not again.report.fresh


def test_save_leaves_no_temporary_files(tmp_path):
    model = load_pretrained(BertModel, FIXTURE).model
    for fmt in ("minibert", "hf", "hf"):  # the second hf write replaces the files in place
        save_pretrained(model, tmp_path, format=fmt, vocab=FIXTURE / "vocab.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]


def test_model_classes_have_from_pretrained_and_save_pretrained(tmp_path):
    model = BertForMaskedLM.from_pretrained(FIXTURE)
    assert isinstance(model, BertForMaskedLM) and not model.training
    model.save_pretrained(tmp_path, format="hf", vocab=FIXTURE / "vocab.txt")
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    again = BertForMaskedLM.from_pretrained(tmp_path)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
