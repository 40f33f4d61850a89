"""Hostile input, part 1: every numeric flag of both training CLIs, and config files, tried as a new user would.

The flag cases are GENERATED from the fields' declared rules (minibert/validation.py), so a new field is covered
the day it is declared: NaN and inf (which pass every `<` check), values just outside the range, wrong types. Each
must give exit 2 and ONE `error:` line naming the flag; none may start a run. Runs in-process through main(argv).
"""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from hostile import assert_outcome, run_cli

from finetune.config import FinetuneConfig
from pretrain.config import PretrainConfig


def bad_values(field_rule) -> list[str]:
    """Strings that the rule must refuse: non-finite, beyond each bound, the wrong type."""
    values = []
    if field_rule.kind is float:
        values += ["nan", "inf", "-inf"]
    if field_rule.kind is int:
        values += ["1.5", "many"]
    for bound, outside in ((field_rule.gt, 0), (field_rule.ge, -1), (field_rule.lt, 0), (field_rule.le, 1)):
        if bound is not None:
            values.append(str(bound + outside) if outside or field_rule.kind is float else str(bound))
    return values


def flag_cases(config_cls, cli: str):
    for f in fields(config_cls):
        field_rule = f.metadata.get("rule")
        if field_rule is None or field_rule.kind not in (int, float):
            continue
        flag = "--" + f.name.replace("_", "-")
        for value in bad_values(field_rule):
            yield pytest.param(cli, flag, value, id=f"{cli} {flag} {value}")


FLAG_CASES = [*flag_cases(PretrainConfig, "pretrain"), *flag_cases(FinetuneConfig, "finetune")]


@pytest.mark.parametrize("cli, flag, value", FLAG_CASES)
def test_out_of_range_flag_is_refused_naming_it(cli, flag, value, capsys, tmp_path):
    code, _, err = run_cli(cli, [flag, value, "--out", tmp_path / "run"], capsys)
    assert_outcome(code, err, 2, [flag])
    assert not (tmp_path / "run").exists(), "a refused flag must not start a run"


# (id, cli, argv, words in the error line). Exit code 2 for all: bad input or usage.
USAGE_CASES = [
    ("pretrain unknown flag", "pretrain", ["--learning-rate", "1"], ["--learning-rate"]),
    ("pretrain --device foo", "pretrain", ["--device", "foo"], ["--device", "foo", "cuda:N"]),
    ("pretrain --device cuda:x", "pretrain", ["--device", "cuda:x"], ["--device"]),
    ("pretrain --schedule exp", "pretrain", ["--schedule", "exp"], ["--schedule", "cosine"]),
    ("pretrain --precision fp8", "pretrain", ["--precision", "fp8"], ["--precision"]),
    ("pretrain --set no =", "pretrain", ["--set", "hidden_size"], ["hidden_size", "FIELD=VALUE"]),
    ("pretrain --set nan", "pretrain", ["--set", "initializer_range=nan"], ["initializer_range", "nan"]),
    ("pretrain --set str", "pretrain", ["--set", "hidden_size=big"], ["big", "int"]),
    ("pretrain --set dropout 1", "pretrain", ["--set", "hidden_dropout_prob=1"], ["hidden_dropout_prob", "[0, 1)"]),
    ("pretrain --set unknown", "pretrain", ["--set", "hiden_size=3"], ["hiden_size"]),
    ("pretrain --set heads", "pretrain", ["--set", "hidden_size=130"], ["num_attention_heads"]),
    ("pretrain --set act", "pretrain", ["--model.hidden_act", "swish"], ["hidden_act", "gelu"]),
    ("pretrain --resume --overwrite", "pretrain", ["--resume", "--overwrite"], ["--resume", "--overwrite"]),
    ("pretrain growth odd I", "pretrain", ["--set", "intermediate_size=63"],
     ["--growth-fraction", "intermediate_size 63", "--growth-fraction 0"]),
    ("pretrain odd head size", "pretrain", ["--set", "hidden_size=24", "--set", "num_attention_heads=8"],
     ["--local-attention-gain", "= 3", "--local-attention-gain 0"]),
    ("pretrain max-len > positions", "pretrain", ["--max-len", "600"], ["--max-len", "max_position_embeddings"]),
    ("pretrain batch not divisible", "pretrain", ["--gradient-accumulation", "3"], ["--batch-size"]),
    ("pretrain --config missing", "pretrain", ["--config", "nope.json"], ["nope.json", "not found"]),
    ("finetune unknown flag", "finetune", ["--epoch", "1"], ["--epoch"]),
    ("finetune --task qa", "finetune", ["--task", "qa"], ["--task", "ner"]),
    ("finetune --head crf", "finetune", ["--head", "crf"], ["--head", "globalpointer"]),
    ("finetune --device foo", "finetune", ["--device", "foo"], ["--device"]),
    ("finetune --header maybe", "finetune", ["--header", "maybe"], ["--header", "maybe"]),
    ("finetune --overlapping-spans x", "finetune", ["--overlapping-spans", "merge"], ["--overlapping-spans"]),
    ("finetune --load alone", "finetune", ["--load", "somewhere"], ["--load", "--predict"]),
    ("finetune --out = --init", "finetune", ["--init", "model", "--out", "model"], ["--out model is the --init"]),
    ("finetune schedule < steps", "finetune", ["--init", "random", "--max-steps", "5", "--schedule-steps", "2"],
     ["--schedule-steps 2 ends before the run's 5 steps", "--max-steps 2"]),
    ("finetune --evaluate without --load", "finetune", ["--evaluate", "dev.tsv"], ["--evaluate dev.tsv", "--load"]),
    ("finetune text = label column", "finetune", ["--init", "random", "--format", "tianchi", "--text-column", "0"],
     ["--text-column and --label-column are both column 0"]),
    ("finetune --config missing", "finetune", ["--config", "nope.json"], ["nope.json", "not found"]),
    ("convert no args", "convert", [], ["src"]),
    ("convert bad --to", "convert", ["a", "b", "--to", "onnx"], ["--to"]),
]


@pytest.mark.parametrize("case_id, cli, argv, words", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_bad_usage_is_one_line(case_id, cli, argv, words, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative paths (nope.json, runs/) land in the test's folder
    code, _, err = run_cli(cli, argv, capsys)
    assert_outcome(code, err, 2, words)


# (id, cli, JSON text of --config, words): wrong JSON types are refused, never coerced.
CONFIG_CASES = [
    ("pack as string", "pretrain", '{"pack": "no"}', ["--pack", "'no'", "true or false"]),
    ("lr as string", "pretrain", '{"lr": "0.001"}', ["--lr", "str"]),
    ("lr as bool", "pretrain", '{"lr": true}', ["--lr", "bool"]),
    ("steps as float", "pretrain", '{"max_steps": 10.5}', ["--max-steps", "10.5"]),
    ("steps as bool", "pretrain", '{"max_steps": true}', ["--max-steps"]),
    ("model field as string", "pretrain", '{"model": {"hidden_size": "128"}}', ["hidden_size", "str"]),
    ("model not an object", "pretrain", '{"model": [1]}', ["model", "object"]),
    ("model vocab_size", "pretrain", '{"model": {"vocab_size": 5}}', ["vocab_size", "--vocab"]),
    ("pretrain not an object", "pretrain", '[1, 2]', ["JSON object"]),
    ("pretrain invalid JSON", "pretrain", '{"lr": ', ["not valid JSON"]),
    ("pretrain unknown key", "pretrain", '{"learning_rate": 0.1}', ["learning_rate", "unknown"]),
    ("pretrain null", "pretrain", '{"max_steps": null}', ["--max-steps"]),
    ("multi_label as string", "finetune", '{"multi_label": "false"}', ["--multi-label", "true or false"]),
    ("finetune lr string", "finetune", '{"lr": "1e-3"}', ["--lr", "str"]),
    ("finetune epochs float", "finetune", '{"epochs": 2.0}', ["--epochs"]),
    ("finetune head_lr negative", "finetune", '{"head_lr": -0.01}', ["--head-lr"]),
    ("finetune not an object", "finetune", '"cls"', ["JSON object"]),
    ("finetune invalid JSON", "finetune", '{', ["not valid JSON"]),
    ("finetune unknown key", "finetune", '{"learning_rate": 1}', ["learning_rate"]),
]


@pytest.mark.parametrize("case_id, cli, text, words", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_file_is_refused_naming_file_and_field(case_id, cli, text, words, capsys, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(text)
    code, _, err = run_cli(cli, ["--config", path, "--out", tmp_path / "run"], capsys)
    assert_outcome(code, err, 2, [*words, "run.json"] if "unknown" not in case_id else words)


def test_int_to_float_and_a_bom_are_fine_in_json(tmp_path):
    """The one allowed widening: `"lr": 1` style ints for float fields; a BOM (Windows editors) is skipped."""
    from finetune.config import parse_config as finetune_config
    from pretrain.config import parse_config as pretrain_config

    path = tmp_path / "run.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"weight_decay": 0, "model": {"layer_norm_eps": 1}}).encode())
    cfg = pretrain_config(["--config", str(path)])
    assert cfg.weight_decay == 0.0 and isinstance(cfg.weight_decay, float)
    assert cfg.bert_config(100).layer_norm_eps == 1.0
    path.write_text(json.dumps({"weight_decay": 0, "head_lr": None}))
    assert finetune_config(["--config", str(path)]).head_lr is None
