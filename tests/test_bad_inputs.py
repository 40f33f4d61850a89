"""Bad inputs fail early with ONE clear ValueError line naming the argument, the offending value and the limit,
instead of the opaque IndexError (CPU) or 'device-side assert triggered' (CUDA) that torch would give."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_config
from minibert import BertForMaskedLM, BertForPreTraining, BertModel

CFG = tiny_config()  # V=97, type_vocab_size=2, max_position_embeddings=64
B, T = 2, 7


def good_inputs() -> dict:
    return dict(input_ids=torch.randint(0, CFG.vocab_size, (B, T)), token_type_ids=torch.zeros(B, T, dtype=torch.long),
                attention_mask=torch.ones(B, T, dtype=torch.long))


def with_bad(**changes) -> dict:
    inputs = good_inputs()
    inputs.update(changes)
    return inputs


def ids_with(value: int) -> torch.Tensor:
    ids = torch.randint(0, CFG.vocab_size, (B, T))
    ids[1, 3] = value
    return ids


# (case id, inputs, words the message must contain: the argument, the offending value, the limit)
BAD_INPUTS = [
    ("id == vocab_size", lambda: with_bad(input_ids=ids_with(97)), ["input_ids", "97", "vocab_size=97"]),
    ("id >> vocab_size", lambda: with_bad(input_ids=ids_with(30521)), ["input_ids", "30521", "vocab_size=97"]),
    ("negative id", lambda: with_bad(input_ids=ids_with(-3)), ["input_ids", "-3", "vocab_size=97"]),
    ("token type 2", lambda: with_bad(token_type_ids=torch.full((B, T), 2)),
     ["token_type_ids", "2", "type_vocab_size=2"]),
    ("negative token type", lambda: with_bad(token_type_ids=torch.full((B, T), -1)),
     ["token_type_ids", "-1", "type_vocab_size=2"]),
    ("too long", lambda: dict(input_ids=torch.randint(0, 97, (B, 65))),
     ["input_ids", "65", "max_position_embeddings=64"]),
    ("mask shape", lambda: with_bad(attention_mask=torch.ones(B, T - 2, dtype=torch.long)),
     ["attention_mask", "(2, 5)", "(2, 7)"]),
    ("mask 4-D", lambda: with_bad(attention_mask=torch.ones(B, 1, 1, T)), ["attention_mask", "(2, 1, 1, 7)"]),
    ("additive mask", lambda: with_bad(attention_mask=torch.tensor([[0.0] * (T - 2) + [-10000.0] * 2] * B)),
     ["attention_mask contains -10000", "additive"]),
    ("mask of 2s", lambda: with_bad(attention_mask=torch.full((B, T), 2)), ["attention_mask contains 2"]),
    ("token type shape", lambda: with_bad(token_type_ids=torch.zeros(B, T + 1, dtype=torch.long)),
     ["token_type_ids", "(2, 8)", "(2, 7)"]),
    ("float ids", lambda: with_bad(input_ids=torch.randint(0, 97, (B, T)).float()),
     ["input_ids", "torch.float32", "long"]),
    ("bool ids", lambda: with_bad(input_ids=torch.ones(B, T, dtype=torch.bool)), ["input_ids", "torch.bool"]),
    ("int16 ids", lambda: with_bad(input_ids=torch.ones(B, T, dtype=torch.int16)), ["input_ids", "torch.int16"]),
    ("float token types", lambda: with_bad(token_type_ids=torch.zeros(B, T)), ["token_type_ids", "torch.float32"]),
    ("bool token types", lambda: with_bad(token_type_ids=torch.zeros(B, T, dtype=torch.bool)),
     ["token_type_ids", "torch.bool"]),
    ("1-D ids", lambda: dict(input_ids=torch.randint(0, 97, (T,))), ["input_ids", "(7,)", "unsqueeze(0)"]),
    ("empty sequence", lambda: dict(input_ids=torch.zeros(B, 0, dtype=torch.long)), ["input_ids", "(2, 0)"]),
]


@pytest.mark.parametrize("make_inputs, words", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
@pytest.mark.parametrize("model_class", [BertModel, BertForMaskedLM, BertForPreTraining])
def test_bad_input_raises_one_clear_value_error(model_class, make_inputs, words):
    model = model_class(CFG).eval()
    with pytest.raises(ValueError) as info:
        model(**make_inputs())
    message = str(info.value)
    assert "\n" not in message  # one line, so a CLI can print it as it is
    for word in words:
        assert word in message, (word, message)


def test_good_inputs_pass_the_checks():
    # The control for every case above: the same model runs on the unmodified inputs.
    H, V = CFG.hidden_size, CFG.vocab_size
    assert BertModel(CFG).eval()(**good_inputs()).last_hidden_state.shape == (B, T, H)
    assert BertForMaskedLM(CFG).eval()(**good_inputs()).logits.shape == (B, T, V)
    out = BertForPreTraining(CFG).eval()(**good_inputs())
    assert out.mlm_logits.shape == (B, T, V) and out.nsp_logits.shape == (B, 2)
    assert BertModel(CFG).eval()(ids_with(96).int()).last_hidden_state.shape == (B, T, H)  # int32, the largest ID
    long = BertModel(CFG).eval()(torch.randint(0, 97, (1, 64))).last_hidden_state  # exactly max_position_embeddings
    assert long.shape == (1, 64, H) and torch.isfinite(long).all()


# Why the checks exist: what torch does with the same mistakes, without them.
def test_raw_torch_gives_opaque_errors_for_the_same_mistakes():
    embedding = nn.Embedding(97, 8)
    with pytest.raises(IndexError) as info:
        embedding(torch.tensor([[5, 97]]))
    assert "vocab" not in str(info.value)  # "index out of range in self": neither the argument nor the limit
    with pytest.raises(IndexError):
        embedding(torch.tensor([[-3]]))
    with pytest.raises(RuntimeError):  # a float tensor: a dtype complaint from deep inside embedding()
        embedding(torch.tensor([[1.0]]))
    positions = nn.Embedding(64, 8)  # a too-long input fails on the position table, far from its cause
    with pytest.raises(IndexError):
        positions(torch.arange(65))


def test_checks_can_be_switched_off_and_then_torch_fails_opaquely():
    # Proves the ValueError above comes from minibert's check, not from something torch does anyway.
    model = BertModel(CFG).eval()
    model.check_inputs = False
    with pytest.raises(IndexError):
        model(ids_with(97))
