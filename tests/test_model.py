"""model.py: output shapes, the sparse-MLM loss against the full-logits loss, BERT's initialisation, the tied
decoder, and the small corner cases (no_grad, batch 1, one token)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_config
from minibert import IGNORE_INDEX, BertConfig, BertForMaskedLM, BertForPreTraining, BertModel
from minibert.layers import LayerNorm
from minibert.model import prediction_positions


def random_labels(ids: torch.Tensor, rate: float = 0.3, attention_mask: torch.Tensor | None = None):
    """MLM labels: the original ID at ~rate of the real positions, -100 elsewhere (at least one labelled)."""
    chosen = torch.rand(ids.shape) < rate
    if attention_mask is not None:
        chosen &= attention_mask.bool()
    chosen[0, 0] = True
    return torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))  # [B,T]


# ---- BertModel ---------------------------------------------------------------------------------------------------
def test_bert_model_output_shapes():
    cfg = tiny_config(num_hidden_layers=3)
    out = BertModel(cfg).eval()(torch.randint(0, 97, (2, 11)), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 11, 32)
    assert out.pooler_output.shape == (2, 32)
    assert len(out.hidden_states) == 4 and all(h.shape == (2, 11, 32) for h in out.hidden_states)
    assert out.attentions is None
    assert BertModel(cfg, add_pooling_layer=False)(torch.randint(0, 97, (2, 3))).pooler_output is None


def test_pooler_is_tanh_dense_of_cls():
    model = BertModel(tiny_config()).eval()
    out = model(torch.randint(0, 97, (3, 6)))
    expected = torch.tanh(out.last_hidden_state[:, 0] @ model.pooler.dense.weight.T + model.pooler.dense.bias)
    torch.testing.assert_close(out.pooler_output, expected, atol=1e-6, rtol=0)


def test_token_type_ids_default_to_segment_a_and_segment_b_changes_the_output():
    model = BertModel(tiny_config()).eval()
    ids = torch.randint(0, 97, (2, 8))
    default = model(ids).last_hidden_state
    zeros = model(ids, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    pair = model(ids, token_type_ids=(torch.arange(8) >= 4).long().expand(2, 8)).last_hidden_state
    assert torch.equal(default, zeros)
    assert (default - pair).abs().max().item() > 1e-3


def test_eval_is_deterministic_and_train_mode_applies_dropout():
    model = BertModel(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    ids = torch.randint(0, 97, (2, 8))
    model.eval()
    assert torch.equal(model(ids).last_hidden_state, model(ids).last_hidden_state)
    model.train()
    assert not torch.equal(model(ids).last_hidden_state, model(ids).last_hidden_state)


def test_no_grad_batch_of_one_single_token():
    model = BertForMaskedLM(tiny_config()).eval()
    ids = torch.tensor([[5]])
    with torch.no_grad():
        encoded = model.bert(ids, attention_mask=torch.ones(1, 1, dtype=torch.long), output_attentions=True)
        full = model(ids)
        sparse = model(ids, labels=ids)
    assert encoded.last_hidden_state.shape == (1, 1, 32) and encoded.attentions[0].shape == (1, 4, 1, 1)
    assert torch.all(encoded.attentions[0] == 1)  # one key: all the weight on it
    assert full.logits.shape == (1, 1, 97) and not full.logits.requires_grad
    assert sparse.logits.shape == (1, 97) and sparse.num_predictions == 1
    assert torch.isfinite(sparse.loss) and not sparse.loss.requires_grad
    pooled = BertModel(tiny_config()).eval()
    with torch.no_grad():
        assert pooled(ids).pooler_output.shape == (1, 32)


# ---- Masked LM ---------------------------------------------------------------------------------------------------
def test_mlm_without_labels_returns_full_logits():
    out = BertForMaskedLM(tiny_config()).eval()(torch.randint(0, 97, (3, 9)))
    assert out.logits.shape == (3, 9, 97) and out.loss is None and out.num_predictions is None


@pytest.mark.parametrize("padded", [False, True])
def test_sparse_mlm_loss_equals_full_logits_loss(padded):
    model = BertForMaskedLM(tiny_config()).eval()
    ids = torch.randint(0, 97, (4, 12))
    attention_mask = (torch.arange(12)[None] < torch.tensor([[12], [9], [5], [2]])).long() if padded else None
    labels = random_labels(ids, attention_mask=attention_mask)
    sparse = model(ids, attention_mask=attention_mask, labels=labels)
    full_logits = model(ids, attention_mask=attention_mask).logits  # [B,T,V]
    full_loss = F.cross_entropy(full_logits.reshape(-1, 97), labels.reshape(-1), ignore_index=-100)
    selected = labels != -100
    assert sparse.num_predictions == int(selected.sum()) > 1
    assert sparse.logits.shape == (sparse.num_predictions, 97)
    assert (sparse.logits - full_logits[selected]).abs().max().item() <= 1e-5  # same rows, same order
    assert abs(sparse.loss.item() - full_loss.item()) <= 1e-6
    # the loss is the MEAN over the M labelled positions (not a sum, not over all B*T)
    per_position = F.cross_entropy(full_logits[selected], ids[selected], reduction="none")
    assert abs(sparse.loss.item() - per_position.mean().item()) <= 1e-6
    # Positions found on the CPU beforehand (the training loops' sync-free path) give the very same bits.
    given = model(ids, attention_mask=attention_mask, labels=labels,
                  prediction_positions=prediction_positions(labels))
    assert torch.equal(given.logits, sparse.logits) and torch.equal(given.loss, sparse.loss)


def test_pretraining_loss_is_mlm_plus_nsp():
    model = BertForPreTraining(tiny_config()).eval()
    ids = torch.randint(0, 97, (3, 8))
    labels = random_labels(ids)
    nsp_labels = torch.tensor([0, 1, 0])
    out = model(ids, labels=labels, next_sentence_label=nsp_labels)
    mlm_only = BertForMaskedLM.forward(model, ids, labels=labels)  # same bert + mlm_head attributes
    nsp = F.cross_entropy(out.nsp_logits, nsp_labels)
    assert out.nsp_logits.shape == (3, 2)
    assert abs(out.loss.item() - (mlm_only.loss.item() + nsp.item())) <= 1e-6


# ---- Initialisation ----------------------------------------------------------------------------------------------
def truncated_normal_std(std: float, cut: float = 2.0) -> float:
    """The std of N(0, std²) truncated at ±cut·std: std·sqrt(1 - 2c·φ(c) / (2Φ(c) - 1)) (≈0.88·std at c=2)."""
    pdf = math.exp(-cut ** 2 / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(cut / math.sqrt(2))  # 2Φ(c) - 1
    return std * math.sqrt(1 - 2 * cut * pdf / mass)


@pytest.mark.parametrize("initializer_range", [0.02, 0.05])
def test_weights_start_from_truncated_normal_biases_zero_layer_norm_one_zero(initializer_range):
    cfg = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, initializer_range=initializer_range)
    model = BertForPreTraining(cfg)
    expected_std = truncated_normal_std(initializer_range)
    matrices = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    assert len(matrices) == 3 + 2 * 4 + 1 + 1 + 1  # 3 embeddings, qkv/out/up/down per layer, pooler, mlm, nsp
    for weight in matrices:
        w = weight.detach()
        if w.numel() < 4000:  # the [2,H] NSP / [2,H] token-type tables are too small for a std estimate
            assert w.abs().max().item() <= 2 * initializer_range
            continue
        assert abs(w.mean().item()) < 0.1 * initializer_range
        assert abs(w.std().item() - expected_std) < 0.05 * expected_std, w.shape
        assert w.abs().max().item() <= 2 * initializer_range  # cut at 2σ, as TF's truncated_normal
        assert w.abs().max().item() > 1.8 * initializer_range  # ... but not narrower
    for module in model.modules():
        if isinstance(module, nn.Linear):
            assert torch.all(module.bias == 0)
        if isinstance(module, LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    assert torch.all(model.mlm_head.bias == 0)


def test_two_models_start_from_different_random_weights():
    a, b = BertModel(tiny_config()), BertModel(tiny_config())
    assert not torch.equal(a.encoder.layers[0].attention.qkv.weight, b.encoder.layers[0].attention.qkv.weight)


# ---- Tied decoder ------------------------------------------------------------------------------------------------
def test_decoder_is_tied_to_the_word_embeddings():
    cfg = tiny_config()
    model = BertForMaskedLM(cfg)
    vocab_matrices = [name for name, p in model.named_parameters() if p.shape == (cfg.vocab_size, cfg.hidden_size)]
    assert vocab_matrices == ["bert.embeddings.word_embeddings.weight"]  # no second [V,H] matrix
    assert not any("decoder" in key for key in model.state_dict())
    # the logits really are h·Eᵀ + b with E the (live) embedding table: edit E, the logits follow
    ids = torch.randint(0, 40, (2, 5))  # row 42 is never an input: only the decoder can see the edit
    model.eval()
    before = model(ids).logits
    with torch.no_grad():
        # a random direction: a constant shift would be invisible, LayerNorm's output sums to zero over H
        model.bert.embeddings.word_embeddings.weight[42] += torch.randn(cfg.hidden_size)
    after = model(ids).logits
    assert (after[..., 42] - before[..., 42]).abs().max().item() > 1e-3
    assert torch.equal(after[..., :42], before[..., :42])  # the other logits are untouched


def test_mlm_gradient_reaches_embedding_rows_only_the_decoder_uses():
    cfg = tiny_config()
    model = BertForMaskedLM(cfg)
    ids = torch.randint(0, 10, (2, 6))  # inputs use rows 0..9 only
    labels = random_labels(ids)
    model(ids, labels=labels).loss.backward()
    grad = model.bert.embeddings.word_embeddings.weight.grad  # [V,H]
    assert grad is not None
    # rows 10..V-1 are never looked up: their gradient can only come through the tied decoder (softmax over V)
    assert torch.all(grad[10:].abs().sum(dim=1) > 0)
    assert model.mlm_head.bias.grad is not None and model.mlm_head.bias.grad.abs().sum() > 0


def test_mlm_labels_outside_the_vocab_raise_a_clear_error():
    config = tiny_config()
    model = BertForMaskedLM(config).eval()
    ids = torch.randint(5, config.vocab_size, (2, 6))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[1, 2] = config.vocab_size + 3
    with pytest.raises(ValueError, match=rf"labels contains {config.vocab_size + 3}, outside \[0, vocab_size="):
        model(ids, labels=labels)


def test_mlm_batch_without_any_prediction_adds_zero_loss_not_nan():
    # An accumulation micro-batch can end up with no masked token; it must contribute 0, not poison the sum.
    model = BertForMaskedLM(tiny_config())
    ids = torch.randint(5, 50, (2, 6))
    out = model(ids, labels=torch.full_like(ids, IGNORE_INDEX))
    assert out.num_predictions == 0
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_an_additive_attention_mask_is_refused_not_inverted():
    # (0 keep, -10000 pad) turned into bool would mask the real tokens and attend to the padding
    config = tiny_config()
    ids = torch.randint(5, config.vocab_size, (2, 5))
    additive = torch.tensor([[0.0, 0, 0, -10000, -10000]] * 2)
    with pytest.raises(ValueError, match="attention_mask contains -10000.0; expected 1 for real tokens"):
        BertModel(config)(ids, attention_mask=additive)
    assert BertModel(config)(ids, attention_mask=(additive == 0).long()).last_hidden_state.shape == (2, 5, 32)


def test_nsp_labels_are_checked():
    config = tiny_config()
    model = BertForPreTraining(config)
    ids = torch.randint(5, config.vocab_size, (2, 5))
    with pytest.raises(ValueError, match=r"next_sentence_label contains 2, outside \[0, classes=2\)"):
        model(ids, next_sentence_label=torch.tensor([0, 2]))  # torch: "Target 2 is out of bounds"
    with pytest.raises(ValueError, match="next_sentence_label contains -100"):
        model(ids, next_sentence_label=torch.tensor([0, -100]))  # torch would silently drop it
