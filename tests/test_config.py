"""BertConfig: reads Google's and HF's config files, rejects bad values in one clear line, round-trips JSON,
and casts CLI overrides to each field's type."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import require_shared
from minibert import BertConfig

GOOGLE_MINI = "bert-mini-uncased_L-4_H-256_A-4/bert_config.json"


def test_from_json_reads_googles_real_bert_config():
    path = require_shared(GOOGLE_MINI)
    raw = json.loads(path.read_text())
    cfg = BertConfig.from_json(path)
    for key, value in raw.items():  # every key Google wrote is a BertConfig field, read as it is
        assert getattr(cfg, key) == value, key
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_size) == (256, 4, 4, 64)
    # Google's file has no layer_norm_eps / pad_token_id: the TF defaults apply.
    assert "layer_norm_eps" not in raw and cfg.layer_norm_eps == 1e-12
    assert cfg.pad_token_id == 0
    assert BertConfig.from_json(path.parent) == cfg  # the folder that holds it works too


def test_from_json_reads_hf_config_and_ignores_unknown_keys(tmp_path):
    hf_style = {
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "torch_dtype": "float32",
        "transformers_version": "4.40.0", "position_embedding_type": "absolute", "use_cache": True,
        "classifier_dropout": None, "gradient_checkpointing": False,
        "vocab_size": 5981, "hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2,
        "intermediate_size": 512, "hidden_act": "gelu_new", "hidden_dropout_prob": 0.05,
        "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 256, "type_vocab_size": 3,
        "layer_norm_eps": 1e-6, "initializer_range": 0.03, "pad_token_id": 1,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(hf_style))
    cfg = BertConfig.from_json(path)
    for field in dataclasses.fields(BertConfig):
        assert getattr(cfg, field.name) == hf_style[field.name], field.name
    assert not hasattr(cfg, "architectures") and not hasattr(cfg, "model_type")
    assert BertConfig.from_json(tmp_path) == cfg  # folder form


def test_from_json_reads_a_config_written_by_transformers(tmp_path):
    transformers = pytest.importorskip(
        "transformers", reason="transformers (the parity reference) is a test extra; make test installs it")
    transformers.BertConfig(vocab_size=321, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                            intermediate_size=96, hidden_act="relu", layer_norm_eps=1e-7).to_json_file(
        tmp_path / "config.json")
    cfg = BertConfig.from_json(tmp_path / "config.json")
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_attention_heads, cfg.hidden_act, cfg.layer_norm_eps) == \
        (321, 48, 3, "relu", 1e-7)


def test_from_json_missing_file_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        BertConfig.from_json(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="no config.json or bert_config.json"):
        BertConfig.from_json(tmp_path)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BertConfig.from_json(bad)
    bad.write_text("[768, 12]")
    with pytest.raises(ValueError, match="config.json: expected a JSON object of fields, got list"):
        BertConfig.from_json(bad)


def test_a_config_missing_a_shape_field_or_with_relative_positions_is_refused(tmp_path):
    full = BertConfig.mini(100).to_dict()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in full.items() if k != "num_attention_heads"}))
    # before: num_attention_heads silently bert-base's 12, reported as "hidden_size=256 is not divisible by ... 12"
    with pytest.raises(ValueError, match="lacks num_attention_heads: a model's shape is never guessed"):
        BertConfig.from_json(path)
    path.write_text(json.dumps({**full, "position_embedding_type": "relative_key_query"}))
    with pytest.raises(ValueError, match="'relative_key_query'; minibert's BERT has learned absolute positions only"):
        BertConfig.from_json(path)
    path.write_text(json.dumps({**full, "position_embedding_type": "absolute"}))
    assert BertConfig.from_json(path) == BertConfig.mini(100)


def test_a_config_folder_given_as_the_config_file_is_named_as_a_folder(tmp_path):
    from finetune.config import parse_config as finetune_config
    from pretrain.config import parse_config as pretrain_config

    for parse in (pretrain_config, finetune_config):
        with pytest.raises(FileNotFoundError, match=f"--config {tmp_path}: a folder, not a file; pass a JSON file"):
            parse(["--config", str(tmp_path)])


@pytest.mark.parametrize("overrides, words", [
    (dict(hidden_size=250, num_attention_heads=4), ["hidden_size=250", "num_attention_heads=4", "divisible"]),
    (dict(hidden_act="swish"), ["hidden_act='swish'", "gelu_new"]),
    (dict(hidden_dropout_prob=1.0), ["hidden_dropout_prob=1.0", "[0, 1)"]),
    (dict(attention_probs_dropout_prob=-0.1), ["attention_probs_dropout_prob=-0.1"]),
    (dict(vocab_size=0), ["vocab_size=0", "positive"]),
    (dict(num_hidden_layers=2.0), ["num_hidden_layers=2.0", "integer"]),
    (dict(layer_norm_eps=0.0), ["layer_norm_eps=0.0", "> 0"]),
    (dict(pad_token_id=100, vocab_size=100), ["pad_token_id=100", "vocab_size=100"]),
])
def test_bad_values_fail_with_one_clear_line(overrides, words):
    with pytest.raises(ValueError) as info:
        BertConfig(**overrides)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_divisibility_error_suggests_a_head_count_that_works():
    with pytest.raises(ValueError) as info:
        BertConfig(hidden_size=250, num_attention_heads=4)
    suggested = int(str(info.value).rsplit("num_attention_heads=", 1)[1].split()[0].strip(",."))
    assert 250 % suggested == 0


def test_to_json_round_trip_is_atomic_and_keeps_extra_keys(tmp_path):
    cfg = BertConfig.mini(5981, hidden_act="gelu_new", layer_norm_eps=1e-6, type_vocab_size=3)
    path = tmp_path / "config.json"
    cfg.to_json(path, architectures=["BertForMaskedLM"])
    assert BertConfig.from_json(path) == cfg
    written = json.loads(path.read_text())
    assert written["architectures"] == ["BertForMaskedLM"] and written["hidden_size"] == 256
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left behind
    assert BertConfig.from_dict(cfg.to_dict()) == cfg


def test_mini_preset_matches_turc_et_al():
    cfg = BertConfig.mini(5981)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.intermediate_size) == (5981, 256, 4, 4, 1024)


def test_apply_overrides_casts_each_value_to_the_field_type():
    base = BertConfig.mini(1000)
    cfg = base.apply_overrides(["hidden_size=128", "num_attention_heads=2", "hidden_act=gelu_new",
                                "layer_norm_eps=1e-6", "hidden_dropout_prob=0"])
    assert cfg.hidden_size == 128 and type(cfg.hidden_size) is int
    assert cfg.num_attention_heads == 2 and cfg.head_size == 64
    assert cfg.hidden_act == "gelu_new"
    assert cfg.layer_norm_eps == 1e-6 and type(cfg.layer_norm_eps) is float
    assert cfg.hidden_dropout_prob == 0.0 and type(cfg.hidden_dropout_prob) is float
    assert base.hidden_size == 256 and base.hidden_act == "gelu"  # the original is untouched


def test_apply_overrides_casts_by_declared_type_not_current_value():
    # A hand-written config.json may say "hidden_dropout_prob": 0 (a JSON int); a later override of 0.1
    # must still be read as a float, not rejected by int("0.1").
    cfg = BertConfig.mini(1000, hidden_dropout_prob=0)
    assert cfg.apply_overrides(["hidden_dropout_prob=0.1"]).hidden_dropout_prob == 0.1


@pytest.mark.parametrize("assignment, words", [
    ("hiden_size=128", ["hiden_size=128", "FIELD=VALUE", "hidden_size"]),
    ("hidden_size", ["'hidden_size'", "FIELD=VALUE"]),
    ("hidden_size=big", ["'big'", "int"]),
    ("layer_norm_eps=tiny", ["'tiny'", "float"]),
    ("hidden_size=130", ["hidden_size=130", "num_attention_heads=4"]),  # cast fine, then validated
    ("hidden_act=tanh", ["hidden_act='tanh'"]),
])
def test_apply_overrides_errors_name_the_bad_assignment(assignment, words):
    with pytest.raises(ValueError) as info:
        BertConfig.mini(1000).apply_overrides([assignment])
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_replace_validates_and_rejects_unknown_fields():
    cfg = BertConfig.mini(1000)
    assert cfg.replace(num_hidden_layers=2).num_hidden_layers == 2
    with pytest.raises(ValueError, match="unknown field"):
        cfg.replace(num_layers=2)
    with pytest.raises(ValueError, match="hidden_size=100"):
        cfg.replace(hidden_size=100, num_attention_heads=3)
