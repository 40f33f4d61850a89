"""断点续训 Resume: save and restore EVERYTHING a training run depends on, so a resumed run continues exactly.

"Exactly" means bit for bit: on CPU, a run killed with SIGKILL and resumed from its last checkpoint ends with the
same weights as a run that was never interrupted (tests/test_resume.py checks it). That needs more than weights:

  * model weights, and the optimizer state: AdamW's first and second moments (m, v) and its step counts. Without
    them the resumed run restarts Adam's bias correction and takes a few wild steps;
  * the LR scheduler's position (else warmup would start again) and the fp16 GradScaler's current scale;
  * every random number generator: Python's `random`, NumPy's global one, torch's CPU generator (dropout) and
    each CUDA device's generator, for EVERY rank under DDP (each rank draws its own dropout masks). A restored
    model with a fresh RNG draws different dropout masks;
  * where the data stream stood (epoch, shuffle order, position), handed in by the caller as `data_state`;
  * the step number, and anything else the caller wants back (`extra`).

The file is written atomically (minibert.training.io): a kill during the write leaves the previous checkpoint
intact, never half a file. It is loaded with `weights_only=True`, so it holds tensors and plain Python values
only (NumPy's RNG key is stored as a tensor for that reason) and loading cannot execute code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .io import atomic_torch_save

FORMAT_VERSION = 1


def capture_rng_state() -> dict:
    """The state of every global random number generator a training step may draw from."""
    kind, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    """Put every global generator back where `capture_rng_state` found it."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))  # tuples may come back as lists
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch_cpu"])
    if state["torch_cuda"] and torch.cuda.is_available():
        if len(state["torch_cuda"]) != torch.cuda.device_count():
            raise ValueError(f"resume: the checkpoint saved {len(state['torch_cuda'])} CUDA RNG states but "
                             f"{torch.cuda.device_count()} GPUs are visible; resume with the same GPUs "
                             f"(CUDA_VISIBLE_DEVICES) to continue exactly")
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def gather_rng_states() -> list[dict]:
    """[capture_rng_state() of rank 0, of rank 1, ...]. A collective under DDP: EVERY rank must call it."""
    state = capture_rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def save_training_state(path: str | os.PathLike, *, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler, scaler: torch.amp.GradScaler | None, data_state: dict,
                        rng_states: list[dict], extra: dict | None = None) -> None:
    """Write one checkpoint file atomically (call it on rank 0 only).

    Args:
        step: optimizer steps completed; a resumed run starts at step + 1.
        rng_states: gather_rng_states(), one entry per rank.
        model: the bare model (not the DDP / torch.compile wrapper: their state_dict keys carry prefixes).
        scheduler: an LR scheduler with state_dict(); scaler: a GradScaler or None.
        data_state: the batch iterator's state_dict(), so the data stream continues where it stopped.
        extra: any other values torch.load(weights_only=True) can read (plain Python, tensors), back on resume.
    """
    state = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_states,
        "data": data_state,
        "extra": extra or {},
    }
    atomic_torch_save(state, path)


def load_training_state(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler, scaler: torch.amp.GradScaler | None, rank: int = 0, world_size: int = 1,
                        check=None) -> dict:
    """Restore model, optimizer, scheduler, scaler and this rank's RNGs from a checkpoint, in place.

    `check(extra)`, if given, runs BEFORE anything is restored: it raises to refuse the checkpoint (e.g. when the
    run's fingerprint differs), so a mismatch is reported as such, not as a tensor size error.

    Returns:
        {"step": int, "data": the saved data_state, "extra": dict}.
    Raises:
        FileNotFoundError / ValueError with one line naming the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume: no checkpoint at {path}; run without --resume to start fresh, "
                                f"or pass the --out folder of the run to continue")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one, not a pickle traceback
        raise ValueError(f"resume: {path} is not a readable training checkpoint ({type(error).__name__}); "
                         f"delete it to start fresh") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise ValueError(f"resume: {path} has format_version={version}, this code reads "
                         f"{FORMAT_VERSION}; start a fresh run")
    if not isinstance(state, dict) or not {"model", "optimizer", "rng", "step"} <= set(state):
        raise ValueError(f"resume: {path} is not a minibert training checkpoint; delete it to start fresh")
    if check is not None:
        check(state.get("extra", {}))
    for name, tensor in state["model"].items():  # resumed, a NaN weight diverges again at once, every time
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"resume: {path}: tensor {name} holds NaN/inf values (the file was damaged: training "
                             f"never checkpoints non-finite weights), so the run cannot go on from it; start a "
                             f"fresh run")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise ValueError(f"resume: {path} does not fit this model/optimizer ({first}); resume with the flags "
                         f"of the run that wrote it") from None
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and scaler.is_enabled() and state["scaler"]:  # {} from a run without fp16 (CPU, bf16):
        scaler.load_state_dict(state["scaler"])  # an fp16 run resumed from it starts with a fresh loss scale
    if len(state["rng"]) != world_size:
        raise ValueError(f"resume: {path} was written by a run with {len(state['rng'])} process(es), this one has "
                         f"{world_size}; resume with the same --nproc_per_node to continue exactly")
    restore_rng_state(state["rng"][rank])
    return {"step": state["step"], "data": state["data"], "extra": state["extra"]}
