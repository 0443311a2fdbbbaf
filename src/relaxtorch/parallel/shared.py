"""Shared-memory arrays, the fixed-point (Buckwild!) model store, and checkpoints.

Arrays shared between workers are torch tensors in shared memory
(``Tensor.share_memory_()``).  On Linux torch's ``file_descriptor`` strategy
unlinks the segment as soon as it is created and passes file descriptors to the
workers, so the memory is released when the last process holding it exits, even
after a crash or ``SIGKILL``: nothing is left behind in ``/dev/shm``.

A fixed-point model of ``M`` bits is stored as int8/int16 codes ``c`` meaning
``c * 2**-fl`` (the values of :class:`relaxtorch.FixedPoint` ``(M, fl)``);
:func:`encode` / :func:`decode` convert, and round trips are exact for values on the grid.

Checkpoints are written atomically (temporary file, fsync, rename) with
``torch.save`` of plain tensors and numbers, and read with
``torch.load(weights_only=True)``: no pickled code runs on load.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from .._files import atomic_write
from ..numbers import quantize
from ..numbers.formats import FixedPoint

_DTYPES = {8: torch.int8, 16: torch.int16}
CHECKPOINT_FORMAT = "relaxtorch.hogwild.v1"


def share(array) -> torch.Tensor:
    """A shared-memory tensor holding a copy of ``array`` (numpy array or tensor)."""
    t = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array.contiguous()
    out = torch.empty(t.shape, dtype=t.dtype).share_memory_()
    out.copy_(t)
    return out


def model_format(bits: int, model_range: float) -> FixedPoint:
    """The ``bits``-bit fixed-point format whose range is about +-model_range.

    ``fl = bits - 1 - ceil(log2(model_range))``: range 4 gives FixedPoint(8, 5),
    step 1/32, largest value 127/32 = 3.97.
    """
    if not (isinstance(model_range, (int, float)) and math.isfinite(model_range) and model_range > 0):
        raise ValueError(f"Invalid model_range: {model_range!r} (must be a positive number)")
    if bits not in _DTYPES:
        raise ValueError(f"Invalid bits: {bits!r} (fixed-point models have 8 or 16 bits)")
    return FixedPoint(bits, bits - 1 - math.ceil(math.log2(model_range)))


def code_range(fmt: FixedPoint) -> tuple[int, int]:
    return -(2 ** (fmt.wl - 1)), 2 ** (fmt.wl - 1) - 1


def encode(values, fmt: FixedPoint, rounding: str = "nearest", generator=None) -> torch.Tensor:
    """Integer codes (int8/int16) of ``values`` rounded onto ``fmt`` (saturating)."""
    x = torch.as_tensor(np.asarray(values, dtype=np.float32) if not isinstance(values, torch.Tensor) else values)
    q = quantize(x.float(), fmt, rounding, generator=generator)
    return torch.round(torch.ldexp(q, torch.tensor(fmt.fl))).to(_DTYPES[fmt.wl])


def decode(codes, fmt: FixedPoint) -> np.ndarray:
    """float32 values of int codes."""
    c = codes.numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    return (c.astype(np.float32) * np.float32(fmt.eps)).astype(np.float32)


def data_codes(values: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """Dataset values as ``bits``-bit integers with one scale (nearest rounding); 32 keeps float32."""
    values = np.asarray(values, dtype=np.float32)
    if bits == 32:
        return values, 1.0
    top = 2 ** (bits - 1) - 1
    amax = float(np.abs(values).max()) if values.size else 0.0
    scale = amax / top if amax > 0 else 1.0
    codes = np.clip(np.rint(values / np.float32(scale)), -top, top).astype(np.int8 if bits == 8 else np.int16)
    return codes, scale


def save_checkpoint(path, model: dict, *, raw: dict | None = None, meta: dict | None = None) -> str:
    """Write ``model`` (name -> float32 array) atomically; returns the path.

    ``raw``: the stored codes (name -> int8/int16 array) of a fixed-point model;
    ``meta``: plain numbers and strings (signature, updates, ...).
    """
    path = os.fspath(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: torch.as_tensor(np.ascontiguousarray(v)).clone() for k, v in model.items()},
        "raw": {k: torch.as_tensor(np.ascontiguousarray(v)).clone() for k, v in (raw or {}).items()},
        "meta": dict(meta or {}),
    }
    atomic_write(path, lambda f: torch.save(payload, f))
    return path


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    Returns ``{"model": {name: float32 ndarray}, "raw": {...}, "meta": {...}}``.
    """
    payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"Invalid checkpoint: {os.fspath(path)!r} (not a relaxtorch hogwild checkpoint)")
    return {"model": {k: v.numpy() for k, v in payload["model"].items()},
            "raw": {k: v.numpy() for k, v in payload["raw"].items()},
            "meta": payload["meta"]}
