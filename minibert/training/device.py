"""Device and precision: CUDA when there is a GPU, the CPU otherwise, and the mixed precision each supports.

  * CUDA with bf16 support (Ampere+): autocast to bf16. Same exponent range as fp32, so no loss scaling.
  * Older CUDA: autocast to fp16 with a GradScaler. fp16's range is narrow (largest 65504, smallest subnormal
    ≈6e-8): small gradients underflow to 0 and large activations overflow to inf; the scaler multiplies the loss
    up and skips steps that overflowed (Micikevicius et al. 2018).
  * CPU: fp32 by default, so CPU runs are exact and reproducible (the bit-identical resume test relies on it).
    `precision="bf16"` autocasts to bf16 on the CPU too. Whether that pays depends on the CPU: with native bf16
    dot products (AVX512_BF16, AMX) a BERT-mini training step measured 2.0x FASTER than fp32 (course machine,
    AMD EPYC with AVX512_BF16, `make bench`); CPUs without them emulate bf16 and run it slower than fp32.
"""

from __future__ import annotations

import contextlib

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """The torch device: for "auto", CUDA when a GPU is visible, else the CPU; otherwise the device asked for,
    refused in one line when it is not there. `cuda:N` also becomes the current CUDA device, which
    torch.cuda.synchronize(), the bf16 capability check and any tensor made without device= follow: without it,
    a run on cuda:1 would time its steps by waiting on GPU 0 (and open a CUDA context there)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} but no CUDA GPU is visible; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={requested!r} but only {torch.cuda.device_count()} CUDA GPU(s) are visible; use "
                         f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={requested!r} but this torch has no usable Apple MPS backend; use --device cpu")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `precision` in auto|fp32|bf16|fp16; None means plain fp32."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":  # bf16 where the GPU computes in it (Ampere+); a T4 or V100 only EMULATES bf16, slowly
        return torch.bfloat16 if native_bf16() else torch.float16
    if precision in ("bf16", "fp16"):
        return torch.bfloat16 if precision == "bf16" else torch.float16
    raise ValueError(f"precision={precision!r}: must be auto, fp32, bf16 or fp16")


def native_bf16() -> bool:
    """Whether the GPU computes bf16 natively. torch >= 2.4 counts emulation unless told not to; older torch (the
    keyword does not exist there) only ever answered for native support."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.is_bf16_supported()


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype`, or a no-op context when running in fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 and fp32 don't need loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def move_batch(batch: dict, device: torch.device) -> dict:
    """Copy a batch of tensors to `device`; non_blocking overlaps the copy with compute when the source is pinned."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
