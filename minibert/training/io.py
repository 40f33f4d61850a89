"""Atomic writes: a crash (or SIGKILL) mid-write must never leave a half-written checkpoint behind.

The trick: write to a temporary file IN THE SAME FOLDER, flush it to disk, then `os.replace` it over the target.
A rename within one filesystem is atomic on POSIX and Windows, so a reader sees either the old file or the new one.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import torch


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    # safetensors refuses tensors that share storage (the tied decoder) and non-contiguous ones: store copies.
    tensors = {name: t.detach().contiguous().clone() for name, t in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))
