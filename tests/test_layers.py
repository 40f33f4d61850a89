"""Each building block of layers.py against its definition: LayerNorm against the formula, attention against an
explicit per-head loop, the SDPA fast path against the reference path, the activations against their formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_config
from minibert import BertForMaskedLM, BertModel
from minibert.layers import FeedForward, LayerNorm, MultiHeadSelfAttention, activation


# ---- LayerNorm ---------------------------------------------------------------------------------------------------
def layer_norm_formula(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """y = gamma * (x - mean) / sqrt(var + eps) + beta over the last axis, in float64."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as TF and torch
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def random_layer_norm(hidden: int, eps: float) -> LayerNorm:
    norm = LayerNorm(hidden, eps)
    with torch.no_grad():  # non-trivial gamma/beta, so a swapped or ignored parameter shows
        norm.weight.copy_(1 + 0.5 * torch.randn(hidden))
        norm.bias.copy_(0.5 * torch.randn(hidden))
    return norm


@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_layer_norm_matches_formula_and_torch(eps):
    norm = random_layer_norm(16, eps)
    x = 3 * torch.randn(3, 5, 16) + 2  # off-centre, not unit scale
    y = norm(x)
    expected = layer_norm_formula(x.double().numpy(), norm.weight.detach().double().numpy(),
                                  norm.bias.detach().double().numpy(), eps)
    np.testing.assert_allclose(y.detach().double().numpy(), expected, atol=1e-5, rtol=0)
    reference = F.layer_norm(x, (16,), norm.weight, norm.bias, eps)  # independent implementation
    assert (y - reference).abs().max().item() < 1e-5


def test_layer_norm_eps_sits_inside_the_square_root():
    # With eps comparable to the variance the two conventions differ a lot; only "inside" must match.
    eps = 0.5
    norm = random_layer_norm(8, eps)
    x = torch.randn(4, 8)
    y = norm(x).detach().double().numpy()
    xd, g, b = x.double().numpy(), norm.weight.detach().double().numpy(), norm.bias.detach().double().numpy()
    inside = layer_norm_formula(xd, g, b, eps)
    mean = xd.mean(-1, keepdims=True)
    outside = g * (xd - mean) / (np.sqrt(((xd - mean) ** 2).mean(-1, keepdims=True)) + eps) + b
    np.testing.assert_allclose(y, inside, atol=1e-5, rtol=0)
    assert np.abs(y - outside).max() > 1e-2
    # and the eps is really used: a different eps gives different numbers
    assert (LayerNorm(8, 1e-12)(x) - LayerNorm(8, eps)(x)).abs().max().item() > 1e-2


def test_every_layer_norm_uses_the_config_eps_and_no_torch_blocks_are_used():
    model = BertForMaskedLM(tiny_config(layer_norm_eps=3e-4))
    norms = [m for m in model.modules() if isinstance(m, LayerNorm)]
    assert len(norms) == 1 + 2 * 2 + 1  # embeddings, 2 per layer, MLM head
    assert all(m.eps == 3e-4 for m in norms)
    # The issue asks for hand-written blocks: none of torch's ready-made ones may appear.
    banned = (nn.LayerNorm, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder)
    assert not [m for m in model.modules() if isinstance(m, banned)]


# ---- Attention ---------------------------------------------------------------------------------------------------
def explicit_attention(x: np.ndarray, qkv_w, qkv_b, out_w, out_b, heads: int, key_mask: np.ndarray | None):
    """softmax(Q Kᵀ/√D) V computed head by head, batch row by batch row, in float64 with plain loops.
    key_mask: [B,T] bool (True = real key). Returns (output [B,T,H], probs [B,N,T,T])."""
    B, T, H = x.shape
    D = H // heads
    w_q, w_k, w_v = qkv_w[:H], qkv_w[H:2 * H], qkv_w[2 * H:]  # Q rows, then K, then V
    b_q, b_k, b_v = qkv_b[:H], qkv_b[H:2 * H], qkv_b[2 * H:]
    out = np.zeros((B, T, H))
    probs = np.zeros((B, heads, T, T))
    for b in range(B):
        head_outputs = []
        for n in range(heads):
            rows = slice(n * D, (n + 1) * D)
            q = x[b] @ w_q[rows].T + b_q[rows]  # [T,D]
            k = x[b] @ w_k[rows].T + b_k[rows]
            v = x[b] @ w_v[rows].T + b_v[rows]
            scores = q @ k.T / math.sqrt(D)  # [T,T]
            if key_mask is not None:
                scores[:, ~key_mask[b]] = -np.inf  # padded keys: exp(-inf) = 0
            weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
            weights /= weights.sum(axis=-1, keepdims=True)
            probs[b, n] = weights
            head_outputs.append(weights @ v)  # [T,D]
        out[b] = np.concatenate(head_outputs, axis=-1) @ out_w.T + out_b
    return out, probs


def attention_and_inputs(hidden=32, heads=4, B=3, T=6):
    attention = MultiHeadSelfAttention(tiny_config(hidden_size=hidden, num_attention_heads=heads)).eval()
    with torch.no_grad():  # nn.Linear's default init has non-zero biases already; make weights large enough
        attention.qkv.weight.mul_(3)
    x = torch.randn(B, T, hidden)
    lengths = torch.tensor([T, T - 2, 1])[:B]
    mask = torch.arange(T)[None, :] < lengths[:, None]  # [B,T] True = real token
    return attention, x, mask


def numpy_params(attention):
    return [p.detach().double().numpy() for p in
            (attention.qkv.weight, attention.qkv.bias, attention.out.weight, attention.out.bias)]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("hidden, heads", [(32, 4), (24, 3), (16, 1)])
def test_reference_attention_matches_explicit_per_head_loop(masked, hidden, heads):
    attention, x, mask = attention_and_inputs(hidden, heads)
    key_mask = mask[:, None, None, :] if masked else None  # [B,1,1,T], the form BertModel passes
    out, probs = attention(x, key_mask, return_probs=True)
    expected_out, expected_probs = explicit_attention(x.double().numpy(), *numpy_params(attention), heads,
                                                      mask.numpy() if masked else None)
    assert probs.shape == (x.shape[0], heads, x.shape[1], x.shape[1])
    np.testing.assert_allclose(probs.detach().double().numpy(), expected_probs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out.detach().double().numpy(), expected_out, atol=1e-5, rtol=0)


def test_padded_keys_get_exactly_zero_attention_weight():
    attention, x, mask = attention_and_inputs()
    _, probs = attention(x, mask[:, None, None, :], return_probs=True)  # [B,N,T,T]
    padded_keys = ~mask[:, None, None, :].expand_as(probs)
    assert padded_keys.any()
    assert torch.all(probs[padded_keys] == 0)  # exactly zero, not just small
    assert torch.all(probs[~padded_keys] > 0)


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_path_equals_reference_path(masked):
    attention, x, mask = attention_and_inputs()
    key_mask = mask[:, None, None, :] if masked else None
    fast, no_probs = attention(x, key_mask)  # default: torch's scaled_dot_product_attention
    reference, probs = attention(x, key_mask, return_probs=True)
    assert no_probs is None and probs is not None
    assert (fast - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_and_reference_give_the_same_model_output(masked):
    model = BertModel(tiny_config()).eval()
    ids = torch.randint(1, 97, (3, 10))
    attention_mask = (torch.arange(10)[None] < torch.tensor([[10], [7], [2]])).long() if masked else None
    fast = model(ids, attention_mask=attention_mask)
    reference = model(ids, attention_mask=attention_mask, output_attentions=True)
    assert (fast.last_hidden_state - reference.last_hidden_state).abs().max().item() <= 1e-5
    assert (fast.pooler_output - reference.pooler_output).abs().max().item() <= 1e-5
    assert fast.attentions is None


def test_output_attentions_gives_one_row_stochastic_tensor_per_layer():
    cfg = tiny_config(num_hidden_layers=3)
    model = BertModel(cfg).eval()
    ids = torch.randint(1, 97, (2, 7))
    attention_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    out = model(ids, attention_mask=attention_mask, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 3
    for probs in out.attentions:
        assert probs.shape == (2, cfg.num_attention_heads, 7, 7)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, cfg.num_attention_heads, 7), atol=1e-6, rtol=0)
        assert torch.all(probs[1, :, :, 4:] == 0)  # row 1's padding is never attended to, in any layer
    assert len(out.hidden_states) == 3 + 1 and out.hidden_states[-1] is out.last_hidden_state


@pytest.mark.parametrize("output_attentions", [False, True])
def test_padding_content_does_not_leak_into_real_positions(output_attentions):
    # What the mask is FOR: changing the tokens under padding must not change any real position's output.
    model = BertModel(tiny_config()).eval()
    ids = torch.randint(1, 97, (2, 9))
    attention_mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    other = ids.clone()
    other[1, 5:] = torch.randint(1, 97, (4,))
    assert not torch.equal(other, ids)
    a = model(ids, attention_mask=attention_mask, output_attentions=output_attentions).last_hidden_state
    b = model(other, attention_mask=attention_mask, output_attentions=output_attentions).last_hidden_state
    assert (a[1, :5] - b[1, :5]).abs().max().item() < 1e-6
    assert (a[0] - b[0]).abs().max().item() == 0
    # and without the mask they DO leak (so the check above is not vacuous)
    c = model(ids).last_hidden_state
    d = model(other).last_hidden_state
    assert (c[1, :5] - d[1, :5]).abs().max().item() > 1e-3


# ---- Activations -------------------------------------------------------------------------------------------------
def test_gelu_exact_and_gelu_new_match_their_formulas_and_differ():
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    erf_gelu = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    tanh_gelu = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(activation("gelu", x), erf_gelu, atol=1e-12, rtol=0)
    torch.testing.assert_close(activation("gelu_new", x), tanh_gelu, atol=1e-12, rtol=0)
    torch.testing.assert_close(activation("relu", x), x.clamp(min=0), atol=0, rtol=0)
    gap = (activation("gelu", x) - activation("gelu_new", x)).abs().max().item()
    assert 1e-4 < gap < 1e-2  # close but not the same function: a checkpoint's hidden_act matters


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_feed_forward_honours_hidden_act(act):
    ffn = FeedForward(tiny_config(hidden_act=act))
    x = 2 * torch.randn(4, 5, 32)
    expected = ffn.down(activation(act, ffn.up(x)))
    torch.testing.assert_close(ffn(x), expected, atol=0, rtol=0)
    others = {"gelu", "gelu_new", "relu"} - {act}
    for other in others:  # the wrong activation would give measurably different numbers
        assert (ffn(x) - ffn.down(activation(other, ffn.up(x)))).abs().max().item() > 1e-5
