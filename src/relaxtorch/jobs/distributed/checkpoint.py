"""Checkpoints of a distributed run: every rank's state, gathered to rank 0 and written atomically.

A checkpoint is a dict of tensors and plain values (loadable with
``torch.load(weights_only=True)``)::

    {"version": 1, "run": name, "spec": RunSpec dict, "world": N, "seed": s, "step": t, "done": bool,
     "shared": {...rank 0's bookkeeping: history, totals...},
     "ranks": [{"model": state_dict, "optimizer": state_dict, "stats": {...}, ...} for each rank]}

Every rank's model and algorithm state (error-feedback residuals, gossip
buffers, generators) is kept, so a resumed run continues bit for bit; the data
order is a function of (seed, rank, step) and needs only the step.  Rank 0
reads it back and scatters each rank its part, so ranks on other machines need
no shared file system.  What travels between ranks is tensors (``wire.py``), never a pickle.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
import torch.distributed as dist

from ..._files import atomic_write
from . import wire

VERSION = 1


def to_cpu(tree):
    """``tree`` with every tensor moved to the CPU (and detached), containers rebuilt."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return type(tree)((k, to_cpu(v)) for k, v in tree.items())
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a namedtuple
        return type(tree)(*(to_cpu(v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree



def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file, the reader (rank 0) and why."""


_ZIP_MAGIC = b"PK\x03\x04"
_NOT_OURS = "not a relaxtorch dist checkpoint"


def load(path: str | os.PathLike) -> dict:
    """A checkpoint written by :func:`save_atomic` (tensors on the CPU; no arbitrary objects unpickled).

    A file that is empty, truncated, not torch's zip format, or holds anything but tensors and
    plain values raises :class:`CheckpointError` saying which, never torch's own advice (a
    checkpoint is only ever read with ``weights_only=True``)."""
    why = _damage(path)
    if why:
        raise CheckpointError(f"{path}: {_NOT_OURS}: {why}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except pickle.UnpicklingError:  # weights_only refused an object: torch's message suggests unsafe loading
        raise CheckpointError(f"{path}: {_NOT_OURS}: it holds objects other than tensors and plain values "
                              "(refused: reading a checkpoint never runs code)") from None
    except Exception as exc:  # noqa: BLE001 - a damaged archive (bad CRC, missing record): torch's words vary
        raise CheckpointError(f"{path}: {_NOT_OURS}: damaged torch archive ({type(exc).__name__})") from None


def _damage(path) -> str | None:
    """Why the file at ``path`` cannot be a torch.save zip archive (None when it may be)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if size == 0:
        return "empty file"
    if head != _ZIP_MAGIC:
        return f"not a torch.save zip archive (starts with {head!r})"
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
    except zipfile.BadZipFile:
        return f"truncated zip archive (EOF: {size} bytes, no central directory)"
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    return None


def gather_and_save(path, rank_state: dict, header: dict, group=None) -> Path | None:
    """Collective: gather every rank's ``rank_state`` to rank 0, which writes ``{**header, "ranks": [...]}``."""
    parts = wire.gather(to_cpu(rank_state), group=group)
    if dist.get_rank(group) != 0:
        return None
    return save_atomic({"version": VERSION, **header, "ranks": parts}, path)


def load_and_scatter(path, group=None) -> tuple[dict | None, dict | None]:
    """Collective: rank 0 reads ``path`` (if it exists) and sends each rank its part.

    Returns ``(header, rank_state)``: the checkpoint without ``"ranks"`` (the same on
    every rank) and this rank's entry; ``(None, None)`` on every rank when there is no file.
    A file rank 0 cannot read, or one written for another world size, raises :class:`CheckpointError`
    (a ValueError) on every rank, saying that rank 0 read it.
    """
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    ck, parts = (_read(path, world), None) if rank == 0 else (None, None)
    if isinstance(ck, dict):
        parts = ck.pop("ranks")
    header = wire.broadcast(ck, group=group)
    if isinstance(header, str):  # rank 0's reason, raised on every rank (the launcher blames rank 0)
        raise CheckpointError(header)
    if header is None:
        return None, None
    return header, wire.scatter(parts, group=group)


def check(path, world: int) -> str | None:
    """Why the checkpoint at ``path`` cannot resume a job of ``world`` ranks (None when it can,
    or when there is no file).  The launcher calls it before starting any rank."""
    ck = _read(path, world)
    return ck if isinstance(ck, str) else None


def _read(path, world: int):
    """Rank 0's side of ``load_and_scatter``: the checkpoint, None (no file) or an error message."""
    if not os.path.exists(path):
        return None
    reader = "checkpoint read by rank 0"
    try:
        ck = load(path)
    except CheckpointError as exc:  # a torn or foreign file: say which, on every rank
        return f"{reader}: {exc}"
    if not isinstance(ck, dict) or ck.get("version") != VERSION or not isinstance(ck.get("ranks"), list):
        return f"{reader}: {path}: {_NOT_OURS} (version {VERSION})"
    if len(ck["ranks"]) != world:
        return f"{reader}: {path} was written by {len(ck['ranks'])} ranks, this job has {world}"
    try:  # what cannot travel is refused here, on every rank, not in the middle of a collective
        for tree in [{k: v for k, v in ck.items() if k != "ranks"}, *ck["ranks"]]:
            wire.encode(tree)
    except ValueError as exc:
        return f"{reader}: {path} holds what cannot be sent between ranks: {exc}"
    return ck
