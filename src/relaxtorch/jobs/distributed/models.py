"""Models of the distributed runs, initialised from a seed so every rank starts from the same weights.

``mlp``: features-128-classes with ReLU (the digits MLP, 9.6k parameters on digits).
``mlp1m``: features-1024-1024-classes (1.13M parameters on digits), big enough
that communication, not compute, dominates a step on a slow link.
"""
from __future__ import annotations

from torch import nn

from ..._seeding import build_module, generator
from .config import MODELS

_HIDDEN = {"mlp": (128,), "mlp1m": (1024, 1024)}


def build_model(name: str, n_features: int, n_classes: int, *, seed: int = 0) -> nn.Module:
    """A fresh model; weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default
    distribution for ``nn.Linear``) drawn from a generator derived from ``seed``, not the global RNG."""
    if name not in MODELS:
        raise ValueError(f"Invalid name: {name!r} (choose from {', '.join(MODELS)})")
    sizes = (n_features, *_HIDDEN[name], n_classes)

    def layers() -> nn.Module:
        out: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            out.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                out.append(nn.ReLU())
        return nn.Sequential(*out)
    return build_module(layers, generator(seed, "model"))


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
