"""Bad inputs get ONE clear line: malicious pickles, truncated files, shape / vocab mismatches, missing files —
through the library (CheckpointError) and through the `weights_convert.py` CLI (exit status 2, no traceback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minibert import BertForMaskedLM, BertModel
from minibert.checkpoint import CheckpointError, load_pretrained, save_pretrained

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
import weights_convert  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tf_tiny"


class CreatesFileWhenUnpickled:
    """A pickle payload: unpickling calls open(path, "w"), creating the file. Harmless, but proves code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def hf_folder(tmp_path):
    """A valid HF export of the tiny TF fixture (BertForMaskedLM), with config.json and vocab.txt."""
    model = load_pretrained(BertForMaskedLM, FIXTURE).model
    return save_pretrained(model, tmp_path / "hf", format="hf", vocab=FIXTURE / "vocab.txt")


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path, hf_folder):
    marker = tmp_path / "payload_ran.txt"
    (hf_folder / "model.safetensors").unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(100, 32),
                "evil": CreatesFileWhenUnpickled(marker)}, hf_folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"refusing to load .*pytorch_model.bin: the pickle asks to run code"):
        load_pretrained(BertForMaskedLM, hf_folder)
    assert not marker.exists()
    # Control: the payload is live. An unrestricted unpickler DOES run it (in a temp folder, harmlessly).
    torch.load(hf_folder / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("file_name", ["model.safetensors", "pytorch_model.bin"])
def test_truncated_weight_file_is_reported(hf_folder, file_name):
    path = hf_folder / file_name
    if file_name == "pytorch_model.bin":
        torch.save(BertForMaskedLM(load_pretrained(BertForMaskedLM, FIXTURE).config).state_dict(), path)
        (hf_folder / "model.safetensors").unlink()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"cannot read .*{file_name}.*truncated"):
        load_pretrained(BertForMaskedLM, hf_folder)


def test_a_run_folder_or_its_training_checkpoint_points_at_the_model_folder(tmp_path, hf_folder):
    """A pretraining run's folder holds checkpoint.pt (model AND optimizer state) and final/ (the model): passing
    the folder or checkpoint.pt where a model is expected names final/, not a state_dict key that is not there."""
    run = tmp_path / "run"
    shutil.copytree(hf_folder, run / "final")
    model = load_pretrained(BertForMaskedLM, run / "final").model
    torch.save({"model": model.state_dict(), "optimizer": {"state": {}}, "step": 3}, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=rf"holds no checkpoint: .*; it is a run folder: pass {run / 'final'}$"):
        load_pretrained(BertForMaskedLM, run)
    with pytest.raises(CheckpointError, match=rf"is a training checkpoint .*pass the model folder its run exported "
                                              rf"\({run / 'final'} for a pretraining run\)"):
        load_pretrained(BertForMaskedLM, run / "checkpoint.pt")
    load_pretrained(BertForMaskedLM, run / "final")  # control: the folder the messages name loads
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"holds no checkpoint: expected a TF .index file or one of \([^;]*\)$"):
        load_pretrained(BertForMaskedLM, empty)  # no final/ inside: no run-folder hint


def test_shape_mismatch_names_the_key_and_both_shapes(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    config["intermediate_size"] = 128  # the checkpoint has 64
    (hf_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatch for bert.encoder.layers.0.ffn.up.weight: .*"
                                              r"gives \[64, 32\], the model expects \[128, 32\]"):
        load_pretrained(BertForMaskedLM, hf_folder)


def test_a_head_with_a_tensor_missing_is_refused_not_half_initialised(hf_folder):
    """Without its bias the MLM head once loaded its transform, initialised the bias afresh and reported "source has no
    MLM head": a model that predicts worse, with a report that hides why."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(hf_folder / "model.safetensors")
    del tensors["cls.predictions.bias"]
    save_file(tensors, hf_folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"part of its mlm weights but not mlm_head.bias; .* incomplete"):
        load_pretrained(BertForMaskedLM, hf_folder)
    load_pretrained(BertModel, hf_folder)  # a model without that head reads the encoder as before


def test_vocab_mismatch_says_which_one_disagrees(hf_folder):
    vocab = hf_folder / "vocab.txt"
    vocab.write_text(vocab.read_text() + "extra_token\n")  # 101 entries; config and checkpoint say 100
    with pytest.raises(CheckpointError, match=r"vocab size mismatch .*config.json vocab_size=100, checkpoint word "
                                              r"embeddings rows=100, vocab.txt entries=101; the vocab.txt entries "
                                              r"disagrees with the other two"):
        load_pretrained(BertModel, hf_folder)
    shutil.copy(FIXTURE / "vocab.txt", vocab)
    config = json.loads((hf_folder / "config.json").read_text())
    config["vocab_size"] = 120
    (hf_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"the config.json vocab_size disagrees with the other two"):
        load_pretrained(BertModel, hf_folder)


def test_missing_config_and_missing_vocab(hf_folder):
    (hf_folder / "vocab.txt").unlink()
    load_pretrained(BertModel, hf_folder)  # the library can load weights without a vocab...
    with pytest.raises(CheckpointError, match="no vocab.txt or tokenizer.json next to"):
        load_pretrained(BertModel, hf_folder, require_vocab=True)  # ...the CLI insists on one
    (hf_folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json or bert_config.json next to"):
        load_pretrained(BertModel, hf_folder)


def run_cli(capsys, *args):
    status = weights_convert.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_converts_tf_to_hf_with_report_and_self_check(tmp_path, capsys):
    status, out, err = run_cli(capsys, FIXTURE, tmp_path / "out", "--to", "hf")
    assert status == 0, err
    assert "-> minibert BertForPreTraining" in out  # --model auto keeps the NSP and MLM heads
    assert "103 tensors = 46 consumed + 57 skipped" in out and "Adam optimizer slot" in out
    assert "outputs finite" in out and "reloads identically" in out
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "vocab.txt").is_file()


@pytest.mark.parametrize("damage, message", [
    ("missing_path", "does not exist"),
    ("missing_config", "no config.json or bert_config.json"),
    ("missing_vocab", "no vocab.txt or tokenizer.json"),
    ("truncated_data", "is truncated"),
    ("wrong_crc", "crc32c mismatch for TF variable"),
])
def test_cli_bad_input_prints_one_line_and_exits_2(tmp_path, capsys, damage, message):
    source = tmp_path / "src"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("*.py", "expected.npz"))
    data = source / "bert_model.ckpt.data-00000-of-00001"
    if damage == "missing_path":
        source = tmp_path / "nowhere"
    elif damage == "missing_config":
        (source / "bert_config.json").unlink()
    elif damage == "missing_vocab":
        (source / "vocab.txt").unlink()
    elif damage == "truncated_data":
        data.write_bytes(data.read_bytes()[:-100])
    else:
        raw = bytearray(data.read_bytes())
        raw[40] ^= 0x10
        data.write_bytes(bytes(raw))
    status, out, err = run_cli(capsys, source, tmp_path / "out")
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err + out
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_cli_subprocess_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "weights_convert.py"), str(tmp_path / "missing"),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "does not exist" in result.stderr
