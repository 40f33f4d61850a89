"""--truncate windows (read the whole document, average the windows' log-probabilities) and `python -m
finetune.probe` (a linear probe on each frozen layer against a random-init control)."""
import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from finetune.__main__ import main
from finetune.data import TextExample
from finetune_helpers import finetune_args, make_tsv

pytest.importorskip("sklearn", reason="the linear probe and the TF-IDF row need scikit-learn (the test extras)")


# ---- --truncate windows: read the whole document, average the windows' log-probabilities ---------------------
def test_windows_cover_every_token_and_keep_their_document():
    from finetune.features import encode_texts, windows

    class IdTokenizer:  # whitespace IDs as they are: enough to see the cut
        cls_id, sep_id = 2, 3
        def encode_ids_batch(self, texts):
            return [np.array([int(t) for t in text.split()], np.int64) for text in texts]

    # the last window ends at the text's end: [4, 5, 6], not a 1-token tail [6] that votes as much as a full window
    assert [w.tolist() for w in windows(np.arange(7), 3)] == [[0, 1, 2], [3, 4, 5], [4, 5, 6]]
    assert [w.tolist() for w in windows(np.arange(6), 3)] == [[0, 1, 2], [3, 4, 5]]  # no overlap where none is needed
    assert [w.tolist() for w in windows(np.arange(2), 3)] == [[0, 1]]
    assert [w.tolist() for w in windows(np.arange(0), 3)] == [[]]  # an empty text still gets a prediction
    docs = [TextExample(" ".join(str(10 + i) for i in range(n)), None, n % 2, 0) for n in (9, 2)]
    features = encode_texts(IdTokenizer(), docs, max_length=6, truncate_mode="windows")  # 4 tokens per window
    assert [f.source for f in features] == [0, 0, 0, 1]
    assert [f.input_ids.tolist() for f in features[:3]] == [[2, 10, 11, 12, 13, 3], [2, 14, 15, 16, 17, 3],
                                                           [2, 15, 16, 17, 18, 3]]
    assert [f.label for f in features] == [1, 1, 1, 0]


def test_pool_windows_averages_log_probabilities_per_document():
    from finetune.tasks import pool_windows
    log_probs = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8]]))  # [W=4, C=2]
    # document 0: windows 0-2, geometric means 0.44 vs 0.33 -> class 0 (a majority vote of argmaxes says 1)
    assert pool_windows(log_probs, [0, 0, 0, 1], 2) == [0, 1]


def test_windows_finetune_reads_the_decisive_token_past_the_window(tmp_path, capsys):
    # The class token sits 3 times past the first 20 tokens of a 60-token text: a 16-token head window never sees it.
    rng = np.random.default_rng(3)
    def write_docs(path, n):
        rows = ["label\ttext"]
        for i in range(n):
            tokens = rng.integers(10, 40, size=60).astype(str).tolist()
            for position in rng.choice(np.arange(20, 60), size=3, replace=False):
                tokens[position] = "7" if i % 2 else "8"
            rows.append(f"{i % 2}\t{' '.join(tokens)}")
        path.write_text("\n".join(rows) + "\n")
    write_docs(tmp_path / "train.tsv", 160)
    write_docs(tmp_path / "dev.tsv", 40)
    scores = {}
    for mode in ("head", "windows"):
        code = main(finetune_args(tmp_path, "--data", str(tmp_path), "--out", str(tmp_path / mode), "--epochs", "3",
                                  "--truncate", mode, "--representation", "mean", "--seed", "1"))
        assert code == 0, capsys.readouterr().out
        scores[mode] = json.loads((tmp_path / mode / "metrics.json").read_text())["best"]["accuracy"]
    assert scores["head"] < 0.7 and scores["windows"] > 0.9, scores  # head: chance (0.5)


def test_windows_are_refused_for_pairs_with_one_line(tmp_path, capsys):
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text("label\ttext_a\ttext_b\n1\t5 6\t5 6\n0\t5 6\t7 8\n")
    code = main(["--task", "pair", "--data", str(tmp_path), "--init", "random", "--truncate", "windows",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--truncate windows" in err and "--task pair" in err and "Traceback" not in err
    # the same pairs as --task cls --format pair: once trained cut longest-first, the flag silently ignored
    code = main(["--task", "cls", "--format", "pair", "--data", str(tmp_path), "--init", "random", "--truncate",
                 "windows", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--format pair (sentence pairs)" in err and "Traceback" not in err


# ---- python -m finetune.probe: frozen features, one logistic regression per layer, random-init control ----------
def test_linear_probe_reports_every_layer_for_both_encoders(tmp_path, capsys):
    from finetune.probe import main as probe_main
    from minibert import BertForMaskedLM
    from minibert.checkpoint import save_pretrained
    from minibert.tokenizers.whitespace import WhitespaceTokenizer

    rng = np.random.default_rng(4)
    make_tsv(tmp_path / "train.tsv", 120, rng)  # one token ("7" or "8") decides the class
    make_tsv(tmp_path / "dev.tsv", 40, rng)
    texts = [line.split("\t")[1] for line in (tmp_path / "train.tsv").read_text().splitlines()[1:]]
    tokenizer = WhitespaceTokenizer.build(texts)
    tokenizer.save(tmp_path / "vocab")
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config(vocab_size=tokenizer.vocab_size))
    save_pretrained(model, tmp_path / "encoder", format="minibert", vocab=tmp_path / "vocab" / "vocab.txt")
    (tmp_path / "results.json").write_text('{"eval_max_len": 8}')  # as if pretrained on rows of 8 tokens
    code = probe_main(["--task", "cls", "--data", str(tmp_path), "--init", str(tmp_path / "encoder"),
                       "--max-length", "16", "--truncate", "windows", "--out", str(tmp_path / "probe"),
                       "--num-threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert [r["layer"] for r in result["pretrained"]] == [0, 1, 2] == [r["layer"] for r in result["random"]]
    # The mean of the token embeddings contains the deciding token's embedding: linearly separable at layer 0.
    assert result["pretrained"][0]["accuracy"] >= 0.8 and result["random"][0]["accuracy"] >= 0.8, result  # chance 0.5
    assert "embeddings |" in printed and "layer 2 |" in printed
    assert "positions 8-15 start untrained" in printed  # prepare()'s warnings are printed, as python -m finetune does
    assert probe_main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m finetune.probe")


def test_linear_probe_refuses_other_tasks(tmp_path, capsys):
    from finetune.probe import main as probe_main
    assert probe_main(["--task", "ner", "--init", "random", "--out", str(tmp_path / "p")]) == 2
    assert "finetune.probe" in capsys.readouterr().err


def test_linear_probe_refuses_the_flags_of_a_fine_tuning_run(tmp_path, capsys):
    """A probe trains nothing and predicts nothing: --epochs, --lr, --predict, --compare-tfidf were accepted and
    silently did nothing (exit 0, only probe.json written)."""
    from finetune.probe import main as probe_main
    argv = ["--task", "cls", "--init", "runs/pretrain/final", "--out", str(tmp_path / "p")]
    assert probe_main(argv + ["--epochs", "9", "--lr", "0.1", "--predict", "x.tsv", "--compare-tfidf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--lr, --epochs, --compare-tfidf, --predict would be ignored" in err, err
    assert not (tmp_path / "p").exists()  # refused before any work
