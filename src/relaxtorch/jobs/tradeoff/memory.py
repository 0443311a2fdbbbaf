"""Count the bytes a run stores: weights and optimizer state, each at its format's bits.

Counts come from the tensors that exist (parameters, the optimizer's ``state``
entries, SWALP's running average), not from estimates, with the rule OptimLP's
``memory_bits`` uses: ``numel * element bits``, plus one 8-bit shared scale per
block for block formats (an MX block of 32 along the last dimension; a
BlockFloat tensor or slice); ``None`` is the tensor's own dtype (float32: 32).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ...quant._checks import tensor_bits  # noqa: F401 - one counting rule for OptimLP and reports


def count(tensors: Iterable[torch.Tensor], fmt=None) -> int:
    """Bytes of ``tensors`` stored in ``fmt`` (rounded up once, over all of them)."""
    return math.ceil(sum(tensor_bits(t, fmt) for t in tensors) / 8)


def state_bytes(state, formats: dict) -> dict[str, int]:
    """Bytes of an optimizer ``state`` (param -> {key: tensor}) by key, ``formats[key]`` per entry.

    Keys not in ``formats`` count at their dtype; non-tensor and 0-d entries
    (step counters) are ignored.
    """
    bits: dict[str, int] = {}
    for entries in state.values():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                bits[key] = bits.get(key, 0) + tensor_bits(value, formats.get(key))
    return {k: math.ceil(b / 8) for k, b in bits.items()}
