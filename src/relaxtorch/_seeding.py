"""Explicit randomness: every stream of random numbers is derived from the user's seed and a name.

``derive(seed, "order", epoch)`` gives a 63-bit seed for one purpose, independent of the
streams for other purposes and equal on every run, machine and Python version (no
``hash()``); ``generator``/``numpy_rng`` wrap it.  ``init_default_`` initialises a module's
layers with PyTorch's default distribution from a generator, so building a model never
reads or seeds torch's global RNG.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _key(value) -> int:
    if isinstance(value, str):
        return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value) & _MASK64
    raise TypeError(f"Invalid key: {value!r} (seeds are derived from integers and strings)")


def derive(seed: int, *keys: int | str) -> int:
    """A 63-bit seed from ``seed`` and ``keys`` (splitmix64's finaliser folded over each).

    >>> derive(0, "order", 3) == derive(0, "order", 3) != derive(0, "order", 4)
    True
    """
    h = 0x9E3779B97F4A7C15
    for v in (seed, *keys):
        h = (h ^ _key(v)) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


def generator(seed: int, *keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with ``derive(seed, *keys)``."""
    return torch.Generator(device=device).manual_seed(derive(seed, *keys))


def numpy_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A NumPy ``Generator`` seeded with ``derive(seed, *keys)``."""
    return np.random.default_rng(derive(seed, *keys))


def build_module(factory: Callable[[], torch.nn.Module], gen: torch.Generator) -> torch.nn.Module:
    """``factory()`` built without drawing from torch's global RNG (on the meta device), then
    initialised by :func:`init_default_` from ``gen``."""
    with torch.device("meta"):
        module = factory()
    return init_default_(module.to_empty(device="cpu"), gen)


def init_default_(module: torch.nn.Module, gen: torch.Generator) -> torch.nn.Module:
    """Draw every Linear/Conv weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's
    default for these layers) with ``gen``, layer by layer, weight before bias; batch norm is
    reset to its deterministic defaults.  Returns ``module``."""
    with torch.no_grad():
        for m in module.modules():
            own = list(m.parameters(recurse=False))
            if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
                for p in (m.weight, m.bias):
                    if p is not None:
                        p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) * (2 * bound) - bound)
            elif isinstance(m, torch.nn.modules.batchnorm._NormBase):
                m.reset_parameters()
            elif own:
                raise TypeError(f"Invalid module: {type(m).__name__} (init_default_ knows Linear, Conv and "
                                f"BatchNorm layers only)")
    return module
