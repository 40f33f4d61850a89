"""Fine-tuning from a pretrained MLM folder. --mlm-weight (finetune/auxiliary.py): the auxiliary MLM loss reaches the
encoder and the checkpoint's MLM head, the reported training loss stays the task's, and the random-init comparison
row runs without it. --representation pooler: the pooler such a folder lacks learns at the head's LR."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from finetune_helpers import pretrained_folder
from finetune.__main__ import main
from finetune.auxiliary import AuxiliaryMLM, build_auxiliary_mlm
from finetune.features import Feature, collate
from finetune.train import accumulate_gradients
from minibert.checkpoint import load_pretrained, save_pretrained
from minibert.heads import BertForSequenceClassification
from minibert.model import MLMHead, prediction_positions
from minibert.tokenizers import WhitespaceTokenizer
from minibert.training.device import make_grad_scaler
from pretrain.masking import DynamicMasking
from test_finetune import make_learnable_tsv  # label = whether token 7 occurs


def batch_of(features):
    return collate(features, 0, "class", 3)


class EveryThirdToken(AuxiliaryMLM):
    """Masks a fixed pattern (ids divisible by 3 become [MASK]), so one batch and its micro-batches get the same."""

    def mask(self, input_ids):
        labels = torch.where((input_ids % 3 == 0) & (input_ids > 4), input_ids, -100)  # [B,T]
        return torch.where(labels != -100, 4, input_ids), labels, prediction_positions(labels)


def test_accumulation_with_the_auxiliary_loss_equals_the_full_batch():
    # 梯度累积: the MLM loss is a mean over masked positions, so its micro-batches weigh m_i / Σm, not n_i / Σn.
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(), num_labels=3).eval()
    lengths = [4, 30, 6, 25, 9, 3]  # masked positions per row differ a lot, and so per micro-batch
    rng = np.random.default_rng(0)
    features = [Feature(rng.integers(5, 97, n), None, int(rng.integers(3))) for n in lengths]
    auxiliary = EveryThirdToken(MLMHead(model.bert.config), None, weight=1.0, seed=0)
    scaler = make_grad_scaler(torch.device("cpu"), None)
    accumulate_gradients(model, [batch_of(features)], "class", scaler, "cpu", None, auxiliary)
    full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    chunks = [batch_of(features[:1]), batch_of(features[1:4]), batch_of(features[4:])]
    accumulate_gradients(model, chunks, "class", scaler, "cpu", None, auxiliary)
    for name, grad in model.named_parameters():
        torch.testing.assert_close(grad.grad, full[name], atol=1e-6, rtol=1e-5)


def test_auxiliary_loss_moves_the_encoder_and_head_but_not_the_reported_task_loss():
    model = BertForSequenceClassification(tiny_config(), num_labels=3).eval()  # eval: no dropout, same task loss
    rng = np.random.default_rng(0)
    features = [Feature(rng.integers(5, 97, n), None, int(rng.integers(3))) for n in (6, 9, 12, 7)]
    scaler = make_grad_scaler(torch.device("cpu"), None)
    plain_loss, _ = accumulate_gradients(model, [batch_of(features)], "class", scaler, "cpu", None)
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    head = MLMHead(model.bert.config)
    masking = DynamicMasking(model.bert.config.vocab_size, [0, 1, 2, 3, 4], 4, mask_rate=0.3)
    auxiliary = AuxiliaryMLM(head, masking, weight=1.0, seed=0)
    loss, _ = accumulate_gradients(model, [batch_of(features)], "class", scaler, "cpu", None, auxiliary)
    assert loss.item() == pytest.approx(plain_loss.item(), abs=1e-6)  # the stats table shows the task loss
    encoder = "bert.encoder.layers.0.attention.qkv.weight"
    assert not torch.allclose(dict(model.named_parameters())[encoder].grad, plain[encoder])
    assert torch.allclose(model.classifier.weight.grad, plain["classifier.weight"])  # the MLM loss skips the head
    assert head.dense.weight.grad is not None and head.dense.weight.grad.abs().sum() > 0
    # the decoder is the classifier's word-embedding matrix: the MLM loss reaches it
    word = "bert.embeddings.word_embeddings.weight"
    assert not torch.allclose(dict(model.named_parameters())[word].grad, plain[word])


def test_the_head_is_the_checkpoint_s_and_a_missing_one_is_fresh_and_said(tmp_path):
    folder, saved = pretrained_folder(tmp_path)
    tokenizer = WhitespaceTokenizer.from_file(folder / "vocab.txt")
    classifier = load_pretrained(BertForSequenceClassification, folder, num_labels=2).model
    auxiliary, notes = build_auxiliary_mlm(0.5, str(folder), classifier, tokenizer, seed=0)
    torch.testing.assert_close(auxiliary.head.dense.weight, saved.mlm_head.dense.weight)
    assert auxiliary.weight == 0.5 and "uses the MLM head of" in notes[0]
    assert auxiliary.masking.mask_token_id == tokenizer.mask_id
    # a checkpoint without an MLM head (a saved classifier) and random init get a fresh head, and say so
    headless = save_pretrained(classifier, tmp_path / "classifier", vocab=folder / "vocab.txt")
    fresh, notes = build_auxiliary_mlm(1.0, str(headless), classifier, tokenizer, seed=0)
    assert not torch.allclose(fresh.head.dense.weight, saved.mlm_head.dense.weight)
    assert "has no MLM head" in notes[0] and "fresh head" in notes[0]
    assert "random init" in build_auxiliary_mlm(1.0, "random", classifier, tokenizer, seed=0)[1][0]
    assert build_auxiliary_mlm(0.0, str(folder), classifier, tokenizer, seed=0) == (None, [])


def test_cli_trains_with_it_and_compares_with_random_init_without_it(tmp_path, capsys):
    folder, _ = pretrained_folder(tmp_path)
    rng = np.random.default_rng(0)
    make_learnable_tsv(tmp_path / "train.tsv", 48, rng)
    make_learnable_tsv(tmp_path / "dev.tsv", 16, rng)
    common = ["--task", "cls", "--data", str(tmp_path), "--init", str(folder), "--epochs", "2", "--lr", "1e-3",
              "--max-length", "32", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    assert main(common + ["--mlm-weight", "1", "--compare-random", "--out", str(tmp_path / "aux")]) == 0
    printed = capsys.readouterr().out
    assert "auxiliary MLM head" in printed and "uses the MLM head of" in printed  # group table, note
    assert "random init, same recipe and steps, no auxiliary MLM" in printed
    assert json.loads((tmp_path / "aux-random" / "finetune_config.json").read_text())["mlm_weight"] == 0.0
    losses = [[row["train_loss"] for row in json.loads((tmp_path / run / "metrics.json").read_text())["history"]]
              for run in ("plain", "aux")]
    assert losses[0][0] != losses[1][0]  # the auxiliary loss changed the encoder's updates


def test_a_pooler_the_encoder_lacks_learns_at_the_head_lr(tmp_path, capsys):
    from finetune.config import parse_config
    from finetune.prepare import prepare

    folder, _ = pretrained_folder(tmp_path)
    make_learnable_tsv(tmp_path / "train.tsv", 16, np.random.default_rng(0))
    args = ["--task", "cls", "--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "train.tsv"), "--init",
            str(folder), "--lr", "1e-4", "--head-lr", "1e-3", "--max-length", "32", "--out", str(tmp_path / "out")]
    for representation, head_prefixes in (("pooler", ("classifier", "bert.pooler")), ("mean", ("classifier",))):
        assert prepare(parse_config(args + ["--representation", representation])).spec.head_prefixes == head_prefixes


def test_a_negative_weight_is_refused_in_one_line(tmp_path, capsys):
    assert main(["--task", "cls", "--init", "random", "--mlm-weight", "-1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--mlm-weight" in err and "-1" in err and len(err.strip().splitlines()) == 1
