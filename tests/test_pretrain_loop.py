"""The pretraining loop end to end on a tiny model: outputs, learning, accumulation, divergence, CLI errors.

Everything runs in-process on a 40-document corpus with a BERT of H32 L2, so each run takes about a second.
"""

import json
import math

import pytest
import torch
from conftest import pretrain_args
from safetensors.torch import load_file

from minibert import BertConfig, BertForMaskedLM
from minibert.checkpoint import from_pretrained
from pretrain import growth, warm_start
from pretrain.__main__ import main
from pretrain.config import PretrainConfig, parse_config
from pretrain.train import train

TINY = ["--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "4",
        "--model.intermediate_size", "64", "--max-len", "32", "--batch-size", "8", "--lr", "3e-3",
        "--warmup-fraction", "0.1", "--num-threads", "1", "--matmul-peak-gflops", "1", "--eval-sequences", "32"]


def args(tmp_path, out, *extra):
    return pretrain_args(tmp_path, out, TINY, 1, *extra)


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_learns_and_writes_everything(tmp_path, restore_threads, capsys):
    # No growth here (tests/test_growth.py and test_resume.py cover it): one linear schedule, checked below; a zero
    # decoder bias, so that the untrained model scores ln V (the unigram-bias init starts lower, by design).
    result = train(parse_config(args(tmp_path, "run", "--max-steps", "40", "--eval-every", "20",
                                     "--log-every", "5", "--checkpoint-every", "20", "--export-hf",
                                     "--growth-fraction", "0", "--decoder-bias-init", "zero")))
    run = tmp_path / "run"
    for name in ("final/model.safetensors", "final/config.json", "final/vocab.txt", "final/bigram_counts.npz",
                 "checkpoint.pt",
                 "loss_curve.png", "metrics.jsonl", "results.json", "pretrain_config.json"):
        assert (run / name).is_file(), name
    printed = capsys.readouterr().out
    # The final line says where the model stands against counting, with the numbers results.json holds.
    final_line = [line for line in printed.splitlines() if line.startswith("held-out acc")][-1]
    assert final_line.startswith(f"held-out acc {result['eval_acc']:.2f} | ±2 window {result['window2_acc']:.2f} | "
                                 f"bigram {result['bigram_acc']:.2f} | unigram {result['unigram_acc']:.2f}")
    assert "biases+LayerNorm" in printed and "weights" in printed  # the optimizer group table
    # The final model is minibert format: tied decoder stored once, loadable, and it matches the trained weights.
    tensors = load_file(run / "final" / "model.safetensors")
    assert "bert.embeddings.word_embeddings.weight" in tensors and not any("decoder" in n for n in tensors)
    model = from_pretrained(BertForMaskedLM, run / "final")
    assert torch.equal(model.state_dict()["mlm_head.bias"], tensors["mlm_head.bias"])
    # --export-hf: the same weights in the Hugging Face layout, which minibert reads back unchanged.
    assert (run / "final_hf" / "config.json").is_file() and (run / "final_hf" / "vocab.txt").is_file()
    assert f"Hugging Face copy written to {run / 'final_hf'}" in printed  # the last lines name every model folder
    hf_model = from_pretrained(BertForMaskedLM, run / "final_hf")
    for name, tensor in model.state_dict().items():
        assert torch.equal(hf_model.state_dict()[name], tensor), name
    # Every log line landed in metrics.jsonl, and the model learned: held-out loss falls from ~ln V.
    logs = records(run)
    train_lines = [r for r in logs if "loss" in r]
    eval_lines = [r for r in logs if "eval_loss" in r]
    assert [r["step"] for r in train_lines] == list(range(5, 41, 5))
    assert [r["step"] for r in eval_lines] == [0, 20, 40]  # step 0: the untrained model
    for r in eval_lines:  # the baselines and the plateau diagnostics at every evaluation
        assert {"bigram_acc", "window2_acc", "unigram_acc", "attention_entropy", "hidden_cosine"} <= r.keys()
        assert 0 < r["attention_entropy"] <= 1 + 1e-6 and -1 <= r["hidden_cosine"] <= 1
        assert r["bigram_gap"] == pytest.approx(r["eval_acc"] - r["bigram_acc"])
    for r in train_lines:
        assert {"mlm_acc", "lr", "tokens_per_s", "mfu", "grad_norm"} <= r.keys() and r["tokens_per_s"] > 0
    lrs = [r["lr"] for r in train_lines]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.05 * 3e-3  # linear decay to ~0 at max_steps
    vocab_size = json.loads((run / "final" / "config.json").read_text())["vocab_size"]
    # The untrained model (step 0) scores about ln V; after 20 and 40 steps the held-out loss must sit below it and keep falling.
    assert eval_lines[0]["eval_loss"] == pytest.approx(math.log(vocab_size), abs=0.5)
    assert eval_lines[-1]["eval_loss"] < eval_lines[1]["eval_loss"] < math.log(vocab_size)
    assert eval_lines[-1]["eval_ppl"] == pytest.approx(math.exp(eval_lines[-1]["eval_loss"]))
    assert result["eval_acc"] == eval_lines[-1]["eval_acc"] and 0 < result["unigram_acc"] < 1


def test_evaluation_is_deterministic(tmp_path, restore_threads):
    """Two evaluations of the same weights score the same masked positions: identical numbers."""
    train(parse_config(args(tmp_path, "run", "--max-steps", "4", "--eval-every", "2", "--lr", "1e-9",
                            "--warmup-fraction", "0", "--growth-fraction", "0")))  # no growth between them
    _, first, second = [r for r in records(tmp_path / "run") if "eval_loss" in r]  # steps 0, 2, 4
    assert first["eval_predictions"] == second["eval_predictions"]
    assert first["eval_loss"] == pytest.approx(second["eval_loss"], abs=1e-6)


def test_accumulation_in_the_loop_matches_one_big_batch(tmp_path, restore_threads):
    """batch 8 in 4 micro-batches of 2 == batch 8 at once: same rows, same masks, same weights (dropout 0)."""
    common = ("--max-steps", "3", "--model.hidden_dropout_prob", "0", "--eval-every", "3")
    train(parse_config(args(tmp_path, "big", *common)))
    train(parse_config(args(tmp_path, "micro", *common, "--gradient-accumulation", "4")))
    big = load_file(tmp_path / "big" / "final" / "model.safetensors")
    micro = load_file(tmp_path / "micro" / "final" / "model.safetensors")
    for name in big:
        torch.testing.assert_close(micro[name], big[name], rtol=1e-4, atol=1e-5, msg=name)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, restore_threads, capsys):
    class Poisoned(BertForMaskedLM):
        """Returns a NaN loss from the 5th training forward on: a stand-in for a real divergence."""
        calls = 0

        def forward(self, *a, **kw):
            out = super().forward(*a, **kw)
            Poisoned.calls += self.training  # training forwards only (evaluations come and go)
            if Poisoned.calls >= 5 and self.training:
                out.loss = out.loss * float("nan")
            return out

    for module in (warm_start, growth):  # where the run builds its models: the first one, and the grown one
        monkeypatch.setattr(module, "BertForMaskedLM", Poisoned)
    argv = args(tmp_path, "run", "--max-steps", "10", "--checkpoint-every", "2")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]  # the rest is the progress bar
    assert len(error_lines) == 1
    assert "diverged at step 5" in error_lines[0] and "(step 4)" in error_lines[0] and "--lr" in error_lines[0]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize("flags, words", [
    (["--lr", "-1"], ["--lr=-1.0"]),
    (["--corpus", "/no/such/corpus.tsv"], ["/no/such/corpus.tsv"]),
    (["--set", "hidden_size=abc"], ["hidden_size=abc"]),
    (["--set", "no_such_field=1"], ["no_such_field"]),
    (["--model.num_attention_heads", "5"], ["num_attention_heads=5"]),
    (["--config", "/no/such.json"], ["/no/such.json"]),
    (["--mask-rate", "1.5"], ["--mask-rate"]),
    (["--max-len", "600"], ["--max-len=600"]),
])
def test_bad_flags_are_one_clear_line(tmp_path, capsys, flags, words):
    argv = args(tmp_path, "run", "--max-steps", "2") + flags
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"lr": 5e-4, "max_steps": 50, "model": {"hidden_size": 128}}))
    cfg = parse_config(["--config", str(path), "--max-steps", "70", "--model.num_hidden_layers", "2",
                        "--set", "intermediate_size=512"])
    assert (cfg.lr, cfg.max_steps) == (5e-4, 70)  # from the file, then the flag wins
    config = cfg.bert_config(vocab_size=1000)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (128, 2, 512)
    assert config.vocab_size == 1000 and config.num_attention_heads == 4  # the rest is BERT-mini
    assert config.attention_probs_dropout_prob == 0.0  # the recipe's default override survives the JSON's
    assert PretrainConfig().bert_config(7008).hidden_size == 256


def test_the_recipe_initialises_at_0_03_and_a_flag_or_bert_config_keeps_0_02():
    """The recipe's init std (docs/pretrain.md, "The levers one at a time") reaches the small model's weights; BERT's
    0.02 stays BertConfig's default, and --model.initializer_range overrides the recipe."""
    config = PretrainConfig().bert_config(2000)
    assert config.initializer_range == 0.03 and BertConfig.mini(2000).initializer_range == 0.02
    small = BertForMaskedLM(growth.small_config(config, 1, growth.SMALL_LAYERS))  # what the run trains first
    weights = small.bert.encoder.layers[0].ffn.up.weight  # [I/2, H/2]: 65k draws
    assert weights.std().item() == pytest.approx(0.03 * 0.88, rel=0.05)  # truncated at ±2σ: std 0.88σ
    assert parse_config(["--model.initializer_range", "0.02"]).bert_config(2000).initializer_range == 0.02


def test_config_file_with_unknown_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"learning_rate": 1e-3}))
    with pytest.raises(ValueError, match="unknown field.*learning_rate"):
        parse_config(["--config", str(path)])


def test_no_run_is_silently_overwritten(tmp_path, restore_threads, capsys):
    argv = args(tmp_path, "run", "--max-steps", "2")
    assert main(argv) == 0
    final = (tmp_path / "run" / "final" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2  # a finished run (results.json written) may be an hour's encoder: refused, one line
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "finished run (2 steps, held-out acc" in err and "--overwrite" in err and "another --out" in err
    assert (tmp_path / "run" / "final" / "model.safetensors").read_bytes() == final  # untouched
    assert main(argv + ["--overwrite"]) == 0
    (tmp_path / "run" / "results.json").unlink()  # now it looks like a run killed before its end
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unfinished run" in err and "--resume" in err and "--overwrite" in err
    assert main(argv + ["--overwrite"]) == 0


def test_grad_clip_reaches_the_update(tmp_path, restore_threads):
    # A global norm clipped to 1e-8 leaves per-weight gradients far below AdamW's eps (1e-6): the weights barely
    # move. Unclipped (--grad-clip 0, only measured) they move by about lr per step: the two runs must differ.
    finals = {}
    for clip in ("1e-8", "0"):
        train(parse_config(args(tmp_path, f"clip{clip}", "--max-steps", "3", "--growth-fraction", "0",
                                "--grad-clip", clip, "--eval-every", "3")))
        finals[clip] = load_file(tmp_path / f"clip{clip}" / "final" / "model.safetensors")
    moved = max((finals["0"][name] - tensor).abs().max().item() for name, tensor in finals["1e-8"].items())
    assert moved > 1e-3


def test_uniform_attention_has_entropy_one_on_padded_rows_too():
    # Zero Q and K: every query spreads its attention evenly over the real keys of ITS row, whose count sets the
    # maximum entropy ln(keys): a padded row of 3 keys is as uniform as a full row of 8.
    from conftest import tiny_config
    from pretrain.diagnostics import context_diagnostics

    model = BertForMaskedLM(tiny_config())
    with torch.no_grad():
        for layer in model.bert.encoder.layers:
            layer.attention.qkv.weight.zero_()
            layer.attention.qkv.bias.zero_()
    ids = torch.randint(5, 97, (2, 8))
    mask = torch.tensor([[1] * 8, [1] * 3 + [0] * 5])
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
    diagnostics = context_diagnostics(model, batch, torch.device("cpu"))
    assert diagnostics["attention_entropy"] == pytest.approx(1.0, abs=1e-5)


def test_no_progress_hides_the_bar_but_not_the_evaluation_lines(tmp_path, restore_threads, capsys):
    for flag, name in (("--progress", "bar"), ("--no-progress", "quiet")):
        train(parse_config(args(tmp_path, name, "--max-steps", "2", "--growth-fraction", "0", flag)))
        captured = capsys.readouterr()
        assert ("it/s" in captured.err) == (flag == "--progress")
        assert "step 2: held-out acc" in captured.out
