"""The building blocks of one BERT layer, written out by hand: LayerNorm, multi-head self-attention, the FFN and
the post-LN residual block (Vaswani et al. 2017, §3; Devlin et al. 2019, §3).

Dimension legend (used in every shape comment):
    B  batch size                 T  sequence length (tokens)
    H  hidden size                N  number of attention heads
    D  head size = H / N          I  intermediate (FFN) size
    L  number of layers (blocks)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, BertConfig


class LayerNorm(nn.Module):
    """层归一化 Layer normalisation (Ba et al. 2016): epsilon sits INSIDE the square root, in TF and torch alike.

    y = gamma * (x - mean) / sqrt(var + eps) + beta, with mean and (biased) variance over the last axis H. Some
    tutorials write (x - mean) / (std + eps) instead: close, but not what a checkpoint was trained with. What does
    differ between frameworks is the default eps: BERT's 1e-12 (config.layer_norm_eps) against torch's 1e-5.
    Google's checkpoints call gamma/beta `gamma`/`beta`; here they are `weight`/`bias` (see checkpoint/mapping.py).
    """

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))  # gamma [H]
        self.bias = nn.Parameter(torch.zeros(hidden_size))  # beta  [H]

    def formula(self, x: torch.Tensor) -> torch.Tensor:
        """The definition, step by step (the reference the fast path is tested against). x: [..., H]."""
        mean = x.mean(dim=-1, keepdim=True)  # [..., 1]
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # [..., 1] biased variance, as in TF and torch
        return self.weight * (x - mean) * torch.rsqrt(var + self.eps) + self.bias  # [..., H]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., H]
        # torch's fused kernel computes exactly `formula` above (eps inside the square root, biased variance) in
        # one pass over x; the step-by-step version makes ~10 passes and measured ~5x slower on CPU, forward +
        # backward. tests/test_fast_paths.py checks that the two agree, values and gradients.
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)  # [..., H]


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """The config's `hidden_act`. "gelu" is the exact (erf) GELU; "gelu_new" is the tanh approximation of Hendrycks
    & Gimpel 2016 (GPT-2). Google's 2018 BERT checkpoints were trained with the erf form, but google-research/bert's
    `gelu` became the tanh form in February 2019, so models pretrained with that code since then (Datawhale's Task 6
    among them) used tanh even though their config says "gelu". The two differ by at most ≈5e-4 per value."""
    if name == "gelu":
        return F.gelu(x)  # 0.5 x (1 + erf(x / sqrt 2))
    if name == "gelu_new":
        return F.gelu(x, approximate="tanh")  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    if name == "relu":
        return F.relu(x)
    raise ValueError(f"hidden_act={name!r}: must be one of {', '.join(ACTIVATIONS)}")  # never a silent ReLU


class MultiHeadSelfAttention(nn.Module):
    """多头自注意力 Multi-head self-attention: softmax(Q Kᵀ / √D) V, once per head, heads concatenated.

    Q, K and V come from ONE fused projection `qkv` ([3H, H]: the Q rows, then K, then V): one big matmul is
    faster than three small ones. Google/HF checkpoints store them separately; checkpoint/mapping.py concatenates.

    Two paths compute the same thing:
      * the reference path spells out the math and can return the attention probabilities;
      * the fast path calls torch's fused `scaled_dot_product_attention`, which picks a kernel by device, dtype
        and mask (on a GPU, FlashAttention or the memory-efficient kernel avoid materialising the [B,N,T,T]
        probabilities; Flash takes no padding mask and no fp32). It is the default.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads  # N
        self.head_size = config.head_size  # D
        self.dropout_p = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)  # [3H, H]
        self.out = nn.Linear(config.hidden_size, config.hidden_size)  # [H, H] mixes the heads back together

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            x: [B,T,H] hidden states.
            key_mask: [B,1,1,T] bool, True where a key may be attended to (False = padding), or None.
            return_probs: take the reference path and also return the attention probabilities.
        Returns:
            ([B,T,H] attention output, [B,N,T,T] probabilities or None)
        """
        B, T, H = x.shape
        qkv = self.qkv(x)  # [B,T,3H]: the 3H axis is (Q | K | V), each cut into N heads of D
        # [B,T,3H] -> [B,T,3,N,D] -> [3,B,N,T,D]; unpacked along the first axis: q, k, v each [B,N,T,D]
        q, k, v = qkv.view(B, T, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        dropout_p = self.dropout_p if self.training else 0.0
        if return_probs:
            context, probs = self.reference_attention(q, k, v, key_mask, dropout_p)  # [B,N,T,D], [B,N,T,T]
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
            probs = None
        context = context.transpose(1, 2).reshape(B, T, H)  # [B,T,N,D] -> [B,T,H]: concatenate the heads
        return self.out(context), probs  # [B,T,H]

    def reference_attention(self, q, k, v, key_mask, dropout_p):
        """softmax(Q Kᵀ/√D + mask) V, step by step (the readable path; SDPA computes the same, fused).

        Args:
            q, k, v: [B,N,T,D].
            key_mask: [B,1,1,T] bool (True = a real token) or None.
            dropout_p: 0 in eval: F.dropout's `training` flag defaults to True, so the caller passes 0 then.
        Returns:
            (context [B,N,T,D], probs [B,N,T,T] before dropout; HF returns them after dropout, the same in eval).
        """
        # √D keeps the dot products at unit variance; without it softmax saturates (Vaswani et al. 2017, §3.2.1).
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)  # [B,N,T,T]
        if key_mask is not None:
            # The most negative finite value of the dtype, not a constant like -10000 or -1e9: -1e9 overflows
            # to -inf in fp16, and a row of -inf gives NaN; finfo.min is exact in every dtype.
            scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)  # padded keys -> weight 0
        probs = scores.softmax(dim=-1)  # [B,N,T,T], each row sums to 1
        context = F.dropout(probs, p=dropout_p) @ v  # [B,N,T,D]
        return context, probs  # [B,N,T,D], [B,N,T,T]


class FeedForward(nn.Module):
    """前馈网络 Position-wise FFN: up-project H -> I, activation, down-project I -> H."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.act = config.hidden_act
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)  # [I, H]
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)  # [H, I]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B,T,H]
        return self.down(activation(self.act, self.up(x)))  # [B,T,I] -> [B,T,H]


class TransformerBlock(nn.Module):
    """One encoder layer, 后置层归一化 POST-LN as in the original BERT: x = LN(x + Dropout(Sublayer(x))).

    Post-LN normalises after the residual add; pre-LN (x + Sublayer(LN(x)), GPT-2 and most modern models) trains
    more stably without warmup (Xiong et al. 2020), but BERT checkpoints are post-LN, so this must be too.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = MultiHeadSelfAttention(config)
        self.attention_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [B,T,H]; key_mask: [B,1,1,T] bool or None. Returns ([B,T,H], [B,N,T,T] or None)."""
        attended, probs = self.attention(x, key_mask, return_probs)  # [B,T,H]
        x = self.attention_norm(x + self.dropout(attended))  # [B,T,H] 残差连接 residual, then LayerNorm
        x = self.ffn_norm(x + self.dropout(self.ffn(x)))  # [B,T,H]
        return x, probs
