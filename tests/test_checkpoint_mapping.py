"""The mapping table and the coverage accounting (minibert/checkpoint/mapping.py, convert.py).

Names are checked against the REAL parameter names of minibert's models and of transformers' models (built
from a config, no weights downloaded); drift cases (prefixes, legacy names, buffers, tied weights) use small
synthetic HF state dicts made by renaming transformers' own.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import tiny_config

from minibert import BertForMaskedLM, BertForPreTraining, BertModel
from minibert.checkpoint import CheckpointError, apply_plan, minibert_to_hf, plan_conversion
from minibert.checkpoint.mapping import BERT_ROWS, HEAD_ROWS
from minibert.heads import BertForSequenceClassification, BertForTokenClassification

transformers = pytest.importorskip(
    "transformers", reason="transformers (the parity reference) is a test extra; make test installs it")


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def hf_config(config):
    return transformers.BertConfig(**config.to_dict())


def test_table_rows_are_unique_and_three_worlds_line_up():
    rows = BERT_ROWS + HEAD_ROWS
    assert len({r.minibert for r in rows}) == len(rows)
    assert all(len(r.hf) == len(r.tf) for r in rows)
    assert all(r.tf_transpose == r.tf[0].endswith("/kernel") for r in rows)  # exactly the dense kernels
    # The matrices NOT transposed: lookup tables and Google's [out, in] output_weights (NSP, run_classifier).
    config = tiny_config()
    matrices = {name for name, p in BertForPreTraining(config).named_parameters() if p.dim() == 2}
    untransposed = {r.minibert for r in rows if not r.tf_transpose and (r.minibert in matrices
                                                                         or "bert." + r.minibert in matrices)}
    assert untransposed == {"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                            "embeddings.token_type_embeddings.weight", "nsp_head.weight"}


@pytest.mark.parametrize("minibert_cls, hf_name", [(BertModel, "BertModel"), (BertForMaskedLM, "BertForMaskedLM"),
                                                   (BertForPreTraining, "BertForPreTraining")])
def test_export_names_are_exactly_transformers_names(minibert_cls, hf_name):
    config = tiny_config()
    ours = minibert_to_hf(minibert_cls(config).state_dict(), config.num_hidden_layers)
    theirs = getattr(transformers, hf_name)(hf_config(config)).state_dict()
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}  # tied on both sides
    assert set(ours) == set(theirs) - tied
    assert all(tuple(ours[k].shape) == tuple(theirs[k].shape) for k in ours)


def test_every_minibert_parameter_of_every_model_has_a_row():
    config = tiny_config()
    for model in (BertModel(config), BertForMaskedLM(config), BertForPreTraining(config),
                  BertForSequenceClassification(config, 3, representation="pooler"),
                  BertForTokenClassification(config, 5)):
        exported = minibert_to_hf(model.state_dict(), config.num_hidden_layers)
        assert sum(v.numel() for v in exported.values()) == sum(v.numel() for v in model.state_dict().values())


def hf_mlm_state(config, prefix="bert."):
    """transformers' BertForMaskedLM state dict, as a checkpoint file would hold it."""
    state = transformers.BertForMaskedLM(hf_config(config)).state_dict()
    return {k.replace("bert.", prefix, 1) if k.startswith("bert.") else k: v for k, v in state.items()}


def test_hf_qkv_fused_in_query_key_value_order_and_values_copied():
    config = tiny_config()
    source = hf_mlm_state(config)
    target = BertForMaskedLM(config).state_dict()
    plan = plan_conversion(shapes(source), "hf", shapes(target), config.num_hidden_layers)
    loaded = apply_plan(plan, source.__getitem__)
    qkv = loaded["bert.encoder.layers.1.attention.qkv.weight"]
    H = config.hidden_size
    for part, name in enumerate(("query", "key", "value")):
        assert torch.equal(qkv[part * H:(part + 1) * H], source[f"bert.encoder.layer.1.attention.self.{name}.weight"])
    assert torch.equal(loaded["mlm_head.bias"], source["cls.predictions.bias"])
    assert set(loaded) == set(target)


def test_key_drift_prefix_legacy_names_buffers_and_tied_decoder_are_all_explained():
    config = tiny_config()
    source = hf_mlm_state(config, prefix="")  # keys WITHOUT the bert. prefix
    source["embeddings.LayerNorm.gamma"] = source.pop("embeddings.LayerNorm.weight")  # pre-2019 names
    source["embeddings.LayerNorm.beta"] = source.pop("embeddings.LayerNorm.bias")
    source["embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    source["cls.predictions.decoder.weight"] = source["embeddings.word_embeddings.weight"].clone()
    source["cls.predictions.decoder.bias"] = source["cls.predictions.bias"].clone()
    target = BertForPreTraining(config).state_dict()
    plan = plan_conversion(shapes(source), "hf", shapes(target), config.num_hidden_layers)
    report = plan.report
    assert {s for s, _ in report.consumed} | {s for s, _ in report.skipped} == set(source)
    assert ("embeddings.LayerNorm.gamma", "bert.embeddings.layer_norm.weight") in report.consumed
    skipped = dict(report.skipped)
    assert "positions on the fly" in skipped["embeddings.position_ids"]
    assert "tied to the word embeddings" in skipped["cls.predictions.decoder.weight"]
    assert "duplicate of cls.predictions.bias" in skipped["cls.predictions.decoder.bias"]
    fresh = dict(report.fresh)  # an MLM checkpoint has neither pooler nor NSP head
    assert set(fresh) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "nsp_head.weight", "nsp_head.bias"}
    assert "no NSP head" in fresh["nsp_head.weight"] and "no pooler" in fresh["bert.pooler.dense.bias"]
    loaded = apply_plan(plan, source.__getitem__)  # tied copies are identical: accepted
    assert torch.equal(loaded["bert.embeddings.layer_norm.weight"], source["embeddings.LayerNorm.gamma"])
    source["cls.predictions.decoder.bias"] = source["cls.predictions.bias"] + 1.0  # HF's duplicate bias, diverged
    with pytest.raises(CheckpointError, match="cls.predictions.decoder.bias"):
        apply_plan(plan, source.__getitem__)
    source["cls.predictions.decoder.bias"] = source["cls.predictions.bias"].clone()
    source["cls.predictions.decoder.weight"] = source["cls.predictions.decoder.weight"] + 1.0  # untied
    with pytest.raises(CheckpointError, match="minibert ties them"):
        apply_plan(plan, source.__getitem__)


def test_missing_tied_decoder_is_noted():
    config = tiny_config()
    source = hf_mlm_state(config)
    del source["cls.predictions.decoder.weight"], source["cls.predictions.decoder.bias"]  # files store them once
    plan = plan_conversion(shapes(source), "hf", shapes(BertForMaskedLM(config).state_dict()), 2)
    assert any("taken from the word embeddings" in note for note in plan.report.notes)


def test_unexplained_tensor_is_an_error():
    config = tiny_config()
    source = shapes(hf_mlm_state(config))
    source["bert.encoder.layer.0.attention.self.rotary.weight"] = (4, 4)
    with pytest.raises(CheckpointError, match=r"1 hf tensor\(s\) not explained .*rotary"):
        plan_conversion(source, "hf", shapes(BertForMaskedLM(config).state_dict()), config.num_hidden_layers)


@pytest.mark.parametrize("wrapper", ["module.", "_orig_mod."])
def test_a_state_dict_saved_from_a_training_wrapper_names_the_wrapper(wrapper):
    """The course's 003 unwraps model.module before saving; a file saved WITHOUT that has 'module.bert.encoder.layer.0
    ...' keys, which the layer hint alone would misread as extra layers."""
    config = tiny_config()
    source = {wrapper + name: shape for name, shape in shapes(hf_mlm_state(config)).items()}
    says = rf"every hf tensor name starts with '{re.escape(wrapper)}'.*removeprefix"
    with pytest.raises(CheckpointError, match=says) as error:
        plan_conversion(source, "hf", shapes(BertForMaskedLM(config).state_dict()), config.num_hidden_layers)
    assert "extra layers" not in str(error.value)


def test_extra_layers_hint_at_num_hidden_layers():
    config = tiny_config()
    source = shapes(hf_mlm_state(config.replace(num_hidden_layers=3)))
    with pytest.raises(CheckpointError, match="config says num_hidden_layers=2"):
        plan_conversion(source, "hf", shapes(BertForMaskedLM(config).state_dict()), config.num_hidden_layers)


def test_missing_encoder_weight_is_an_error_not_a_fresh_init():
    config = tiny_config()
    source = shapes(hf_mlm_state(config))
    del source["bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointError, match=r"no tensor for bert.encoder.layers.1.ffn.down.weight"):
        plan_conversion(source, "hf", shapes(BertForMaskedLM(config).state_dict()), config.num_hidden_layers)
    source = shapes(hf_mlm_state(config))
    del source["bert.encoder.layer.0.attention.self.value.bias"]  # two of the three fused parts
    with pytest.raises(CheckpointError, match="all of .* are needed for bert.encoder.layers.0.attention.qkv.bias"):
        plan_conversion(source, "hf", shapes(BertForMaskedLM(config).state_dict()), config.num_hidden_layers)


def test_shape_mismatch_names_key_and_both_shapes():
    config = tiny_config()
    source = shapes(hf_mlm_state(config))
    target = shapes(BertForMaskedLM(config.replace(intermediate_size=128)).state_dict())
    with pytest.raises(CheckpointError, match=r"shape mismatch for bert.encoder.layers.0.ffn.up.weight: checkpoint "
                                              r"bert.encoder.layer.0.intermediate.dense.weight gives \[64, 32\], "
                                              r"the model expects \[128, 32\]"):
        plan_conversion(source, "hf", target, config.num_hidden_layers)


def test_new_classifier_head_is_fresh_with_reason():
    config = tiny_config()
    source = hf_mlm_state(config)
    target = BertForSequenceClassification(config, 3).state_dict()  # "cls" representation: no pooler
    plan = plan_conversion(shapes(source), "hf", shapes(target), config.num_hidden_layers)
    assert dict(plan.report.fresh) == {"classifier.weight": "new task head: freshly initialised, trained during "
                                       "fine-tuning", "classifier.bias": "new task head: freshly initialised, "
                                       "trained during fine-tuning"}
    assert "no MLM head" in dict(plan.report.skipped)["cls.predictions.bias"]
