"""NER fine-tuning (finetune/ner_data.py, both heads): CLUENER spans checked against their text, and a tiny
end-to-end run through the CLI that learns, with hierarchical positions past the model's table."""

import json

import numpy as np
import pytest

from conftest import tiny_config
from finetune.__main__ import main
from finetune.data import DataError
from finetune.ner_data import read_cluener


def test_ner_spans_outside_the_text_are_refused_with_the_line(tmp_path):
    good = {"text": "王小明在北京", "label": {"name": {"王小明": [[0, 2]]}, "address": {"北京": [[4, 5]]}}}
    outside = {"text": "张三", "label": {"name": {"张三丰": [[0, 2]]}}}
    shifted = {"text": "去上海", "label": {"address": {"上海": [[0, 1]]}}}
    path = tmp_path / "train.json"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in (good, outside, shifted)), encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_cluener(path)
    message = str(error.value)
    assert "line 2: name '张三丰' span [0, 2] outside text of length 2" in message
    assert "line 3: address span [0, 1] covers '去上'" in message
    (tmp_path / "ok.json").write_text(json.dumps(good), encoding="utf-8")
    assert read_cluener(tmp_path / "ok.json")[0].entities == [("name", 0, 2), ("address", 4, 5)]


def write_ner(path, rng, n):
    rows = []
    for _ in range(n):
        filler = "".join(rng.choice(list("的了是在有这个我们"), size=int(rng.integers(2, 6))))
        name = "王" + "".join(rng.choice(list("小明华"), size=2))
        text = filler + name + filler
        rows.append(json.dumps({"text": text, "label": {"name": {name: [[len(filler), len(filler) + 2]]}}},
                               ensure_ascii=False))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.mark.parametrize("head", ["globalpointer", "softmax"])
def test_tiny_ner_end_to_end_with_hierarchical_positions(tmp_path, capsys, head):
    rng = np.random.default_rng(0)
    write_ner(tmp_path / "train.json", rng, 48)
    write_ner(tmp_path / "dev.json", rng, 16)
    tiny_config(vocab_size=32, max_position_embeddings=16).to_json(tmp_path / "tiny.json")
    args = ["--task", "ner", "--head", head, "--train", str(tmp_path / "train.json"), "--dev",
            str(tmp_path / "dev.json"), "--init", "random", "--model-config", str(tmp_path / "tiny.json"),
            "--lr", "3e-3", "--head-lr", "3e-3", "--epochs", "12", "--patience", "0", "--batch-size", "8",
            "--max-length", "24", "--globalpointer-head-size", "8", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(args) == 2 and "--hierarchical-positions" in capsys.readouterr().err  # 24 > 16 positions
    assert main(args + ["--hierarchical-positions", "--predict", str(tmp_path / "dev.json")]) == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "per_type"} <= set(summary["best"])
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    assert summary["best"]["f1"] > 0.8, summary["best"]  # it learns: every name is 王 + two of 小明华
    predicted = [json.loads(line) for line in (tmp_path / "run" / "predictions.json").read_text().splitlines()]
    assert len(predicted) == 16 and all(set(p) == {"text", "label"} for p in predicted)
    gold = [json.loads(line) for line in (tmp_path / "dev.json").read_text().splitlines()]
    found = sum(p["label"] == g["label"] for p, g in zip(predicted, gold))  # predictions in input order
    assert found >= 12, (found, predicted[:3])
