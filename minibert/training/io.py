"""Atomic writes: a crash (or SIGKILL) mid-write must never leave a half-written checkpoint behind.

The trick: write to a temporary file IN THE SAME FOLDER, flush it to disk, then `os.replace` it over the target.
A rename within one filesystem is atomic on POSIX and Windows, so a reader sees either the old file or the new one.
The rename itself is an entry in the folder, so on POSIX the folder is fsynced too: after a power cut the name
points at the new file, not at the old one or at nothing (the file's own fsync does not cover its name).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch


TEMP_PATTERN = re.compile(r"^\.(.+)\.pid(\d+)\.[^.]*\.tmp$")  # .<name>.pid<pid>.<random>.tmp, file or folder


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files/folders a KILLED writer left in `folder`. A live run's temps are never
    touched: each temp name carries its writer's pid, and only those of dead processes are removed.

    One kind is restored instead: a writer killed between staging_folder's two renames left the PREVIOUS output
    `<name>` alone inside its temp folder, with `<name>` itself missing; it is moved back, not deleted.

    Returns:
        the removed paths.
    """
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        found = TEMP_PATTERN.match(entry.name)
        if found and int(found.group(2)) != os.getpid() and not _pid_alive(int(found.group(2))):
            target = folder / found.group(1)
            if entry.is_dir() and [child.name for child in entry.iterdir()] == [target.name] \
                    and not target.exists():
                os.replace(entry / target.name, target)  # the previous output comes back
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush `folder`'s entries (a rename into it) to disk. POSIX only: Windows cannot open a folder, and its
    renames are journalled by NTFS. A filesystem that cannot sync a folder (some network and FUSE mounts answer
    EINVAL) is let be: the rename has happened, and failing a finished write over it would lose a checkpoint."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def temp_name(path: Path) -> str:
    """The prefix of a temporary sibling of `path`: hidden, and tagged with this process's pid."""
    return f".{path.name}.pid{os.getpid()}."


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`: a reader (or a crash) sees
    the old file or the new one, never half of it. Stale temps of dead processes in that folder are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_name(path), suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 minus the umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)  # the new name is on disk too


@contextlib.contextmanager
def staging_folder(final: str | os.PathLike):
    """Build a folder under a temporary name beside `final`; on success it replaces `final`.

    A folder cannot be renamed over a non-empty one, so an earlier `final` is first moved aside into a temp folder,
    then the new one is renamed in: between the two renames `final` is briefly absent. On an error the old one is
    moved back; after a kill it waits in the temp folder and the next run's remove_stale_temps restores it. The
    half-built folder is removed now, or by remove_stale_temps on the next run if the process was killed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final.parent)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_name(final), suffix=".tmp"))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        if final.exists():  # an earlier output: swap it out, then drop it
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_name(final), suffix=".tmp"))
            os.replace(final, old / final.name)
            try:
                os.replace(staging, final)
            except BaseException:
                os.replace(old / final.name, final)  # the earlier output goes back where it was
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_folder(final)  # its files' names (renamed into the staging folder or written there)
    fsync_folder(final.parent)  # and its own


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """atomic_write_bytes of `text` as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save into memory, then atomic_write_bytes: a checkpoint is whole or absent."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    """A safetensors file of `tensors` (name -> tensor), written atomically."""
    from safetensors.torch import save

    # safetensors refuses tensors that share storage (the tied decoder) and non-contiguous ones: store copies.
    tensors = {name: t.detach().contiguous().clone() for name, t in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))
