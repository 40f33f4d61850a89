"""模型算力利用率 Model FLOPs Utilisation (MFU, Chowdhery et al. 2022, PaLM §B): useful FLOPs per second
divided by the hardware's peak. "Useful" counts the model's math only, once, the way the paper does:
no recomputation, no padding we could have avoided, and the vocabulary projection only at the positions that
are actually predicted.

We MEASURE the peak (a large fp32 or bf16 matmul, in the same process) instead of quoting a datasheet, because
on a shared 2-core CPU the datasheet number means little and the measured one is what our matmuls can get.
"""

from __future__ import annotations

import time

import torch

from ..config import BertConfig


def forward_flops_per_token(config: BertConfig, seq_len: int, predicted_fraction: float = 1.0) -> float:
    """Forward FLOPs for one token of a sequence of length T (a multiply-add counts as 2 FLOPs).

    Per layer: Q,K,V and output projections 2·4H², the FFN 2·2HI, and attention QKᵀ plus probs·V 2·2TH.
    MLM head: transform 2H² + decoder 2HV, paid only at the `predicted_fraction` of tokens that carry a label.
    """
    H, I, V, L = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    per_layer = 2 * (4 * H * H + 2 * H * I) + 4 * seq_len * H
    head = predicted_fraction * (2 * H * H + 2 * H * V)
    return L * per_layer + head


def training_flops_per_token(config: BertConfig, seq_len: int, predicted_fraction: float = 1.0) -> float:
    """Forward + backward: the backward pass costs about twice the forward (gradients w.r.t. inputs and weights)."""
    return 3 * forward_flops_per_token(config, seq_len, predicted_fraction)


def peak_matmul_size(device: torch.device) -> int:
    """The side of the square matmul that measures a peak: 2048 on a CPU (17 GFLOP, tens of ms), 8192 on a GPU,
    where a 2048² bf16 matmul takes tens of µs, no longer than the launch and synchronise timed around it, so the
    peak would read low (and MFU high)."""
    return 8192 if device.type == "cuda" else 2048


def measure_matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, size: int | None = None,
                        repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` square matmuls of `size` (None: peak_matmul_size), after a warm-up."""
    size = size or peak_matmul_size(device)
    # A private generator: drawing from the global one would shift every later dropout mask, so a run would
    # depend on how often it measured (pretrain re-measures at each evaluation, and --eval-every may change on
    # resume).
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    a @ b  # warm-up: thread pools, allocator, kernel selection
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


class ThroughputWindow:
    """Tokens and training FLOPs since the window started. The loop restarts it after each log line, evaluation
    and checkpoint, so their time never counts as training time and every log line reports the latest pace."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.tokens, self.flops, self.start = 0, 0.0, time.perf_counter()

    def add(self, tokens: int, flops: float) -> None:
        self.tokens += tokens
        self.flops += flops

    def rates(self, peak_flops: float) -> tuple[float, float]:
        """(tokens per second, MFU): the FLOP/s achieved since the start, divided by `peak_flops`."""
        elapsed = time.perf_counter() - self.start
        return self.tokens / elapsed, self.flops / elapsed / peak_flops
