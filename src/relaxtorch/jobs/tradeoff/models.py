"""Models of the sweep and the loss / error they are trained and scored with.

``logreg``: one linear layer (binary: one logit, loss softplus(-y z); multiclass:
softmax regression; regression: least squares) - convex with L2.
``mlp``: features-128-outputs with ReLU.  ``cnn``: two 3x3 convolutions with
batch norm on ``image_shape`` images (digits), max pooling, a linear head.
The L2 term ``weight_decay/2 * |params|^2`` is part of the loss (every
parameter, biases included), so full gradients (SVRG, HALP) contain it.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..._seeding import build_module
from ...data import Dataset

MODELS = ("logreg", "mlp", "cnn")
CONVEX_MODELS = ("logreg",)


class _Image(nn.Module):
    """Reshape flat feature rows to 1-channel images."""

    def __init__(self, shape: tuple[int, int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], 1, *self.shape)


def n_outputs(data: Dataset) -> int:
    return 1 if data.task == "regression" or data.n_classes == 2 else data.n_classes


def model_error(name: str, data: Dataset) -> str | None:
    """Why ``name`` cannot run on ``data`` (None when it can)."""
    if name not in MODELS:
        return f"unknown model {name!r} (choose from {', '.join(MODELS)})"
    if name == "cnn" and data.image_shape is None:
        return f"model 'cnn' needs an image data set; {data.name!r} has no image_shape"
    return None


def build_model(name: str, data: Dataset, generator: torch.Generator | None = None) -> nn.Module:
    """A freshly initialised model, PyTorch's default initialisation drawn from ``generator``
    (a fixed seed without one; torch's global RNG is never used)."""
    why = model_error(name, data)
    if why:
        raise ValueError(why)
    return build_module(lambda: _layers(name, data), generator or torch.Generator().manual_seed(0))


def _layers(name: str, data: Dataset) -> nn.Module:
    d, k = data.n_features, n_outputs(data)
    if name == "logreg":
        return nn.Sequential(nn.Linear(d, k))
    if name == "mlp":
        return nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, k))
    h, w = data.image_shape
    return nn.Sequential(
        _Image((h, w)),
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * (h // 2) * (w // 2), k))


def data_loss(out: torch.Tensor, y: torch.Tensor, data: Dataset) -> torch.Tensor:
    """Mean loss of outputs ``out`` for targets ``y`` (no regularizer)."""
    if data.task == "regression":
        return 0.5 * (out.squeeze(-1) - y).pow(2).mean()
    if data.n_classes == 2:
        return F.binary_cross_entropy_with_logits(out.squeeze(-1), y.to(out.dtype))  # = softplus(-y z), y in +-1
    return F.cross_entropy(out, y)


def l2(model: nn.Module, weight_decay: float) -> torch.Tensor | float:
    if weight_decay == 0:
        return 0.0
    return 0.5 * weight_decay * sum(p.pow(2).sum() for p in model.parameters())


def error(out: torch.Tensor, y: torch.Tensor, data: Dataset) -> float:
    """Test error: misclassified fraction, or mean squared error for regression."""
    if data.task == "regression":
        return float((out.squeeze(-1) - y).pow(2).mean())
    pred = (out.squeeze(-1) > 0).long() if data.n_classes == 2 else out.argmax(-1)
    return float((pred != y).float().mean())
