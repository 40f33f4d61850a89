"""How `make bench` times fairly (bench/bench_mlm.py measures with it): the implementations' training steps
alternated round by round, and the matmul peaks that MFU divides by, measured in the same run."""

from __future__ import annotations

import time

import torch

from minibert.training.mfu import measure_matmul_peak, peak_matmul_size

BF16_PEAK = "torch_matmul_bf16"  # the key of the bf16 peak among the measured peaks


def time_alternating(steps: dict, rounds: int, warmup: int, sync=lambda: None) -> tuple[dict, dict]:
    """Seconds per step for each named step function, run round-robin; the order rotates every round. `sync`
    waits for the device (a GPU step only queues work). Returns (timed seconds, warm-up seconds) per name."""
    names = list(steps)
    warmup_seconds = {}
    for name in names:  # first steps pay for allocation, thread-pool start-up and torch.compile
        start = time.perf_counter()
        for _ in range(warmup):
            steps[name]()
        sync()
        warmup_seconds[name] = time.perf_counter() - start
    seconds = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync()
            start = time.perf_counter()
            steps[name]()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return seconds, warmup_seconds


def onednn_matmul_peak(size: int, repeats: int = 5) -> float | None:
    """FLOP/s of the best of `repeats` fp32 [size,size] GEMMs run by oneDNN, or None where torch lacks oneDNN.

    Why a second peak: torch's fp32 CPU matmul calls MKL, and MKL runs its AVX2 code on AMD CPUs, about half
    of what their AVX-512 units can do. oneDNN picks kernels by instruction set, not vendor, so it shows the
    hardware's fp32 GEMM peak. torch reaches oneDNN's fp32 GEMM only through this private inference op (no
    autograd), so a training step cannot use it; it serves here as a yardstick only."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        a = torch.randn(size, size).to_mkldnn()  # [size,size] in oneDNN's layout
        w = torch.randn(size, size).to_mkldnn()
        torch._C._nn.mkldnn_linear(a, w, None)  # warm-up: kernel selection, thread pool
    except (AttributeError, RuntimeError):
        return None
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch._C._nn.mkldnn_linear(a, w, None)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def measure_peaks(size: int, device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """The matmul peaks in FLOP/s: torch's own fp32 matmul, oneDNN's fp32 GEMM where available (CPU), and
    torch's bf16 matmul (the yardstick of the bf16 rows). size None: mfu.peak_matmul_size (8192 on a GPU)."""
    size = size or peak_matmul_size(device)
    peaks = {"torch_matmul": measure_matmul_peak(device, torch.float32, size=size)}
    onednn = onednn_matmul_peak(size) if device.type == "cpu" else None
    if onednn is not None:
        peaks["onednn"] = onednn
    return {**peaks, BF16_PEAK: measure_matmul_peak(device, torch.bfloat16, size=size)}
