"""Embedded data sets (no downloads): scikit-learn's bundled sets and seeded generators.

``load_dataset(name, seed=0, test_fraction=0.25)`` returns a frozen
:class:`Dataset` of float32 features and int64 labels (float32 targets for
regression), split by a seeded permutation and standardized with the training
split's statistics only.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .._seeding import generator, numpy_rng


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split.  ``image_shape`` is (H, W) where rows are images (digits: 8x8)."""

    name: str
    task: str  # "classification" or "regression"
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int | None  # None for regression
    image_shape: tuple[int, int] | None = None
    w_true: torch.Tensor | None = None  # generating weights (synthetic sets), bias last

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    def subsample(self, max_train: int, seed: int = 0) -> "Dataset":
        """The same split with at most ``max_train`` training rows (a seeded random subset)."""
        n = self.X_train.shape[0]
        if max_train <= 0 or max_train >= n:
            return self
        idx = torch.randperm(n, generator=generator(seed, "subsample"))[:max_train].sort().values
        return replace(self, X_train=self.X_train[idx], y_train=self.y_train[idx])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, {self.task}, train={tuple(self.X_train.shape)}, "
                f"test={tuple(self.X_test.shape)}, n_classes={self.n_classes})")


def _split(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    perm = numpy_rng(seed, "split").permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant columns (digits' blank pixels) stay 0
    return (train - mean) / std, (test - mean) / std


def _make(name, task, X, y, seed, test_fraction, *, standardize, n_classes=None, image_shape=None, w_true=None):
    tr, te = _split(len(X), seed, test_fraction)
    X_tr, X_te = (_standardize(X[tr], X[te]) if standardize else (X[tr], X[te]))
    ydt = torch.int64 if task == "classification" else torch.float32
    return Dataset(name, task, torch.tensor(X_tr, dtype=torch.float32), torch.tensor(y[tr], dtype=ydt),
                   torch.tensor(X_te, dtype=torch.float32), torch.tensor(y[te], dtype=ydt), n_classes,
                   image_shape, None if w_true is None else torch.tensor(w_true, dtype=torch.float32))


def _digits(seed, test_fraction):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return _make("digits", "classification", X.astype(np.float64), y, seed, test_fraction,
                 standardize=True, n_classes=10, image_shape=(8, 8))


def _breast_cancer(seed, test_fraction):
    from sklearn.datasets import load_breast_cancer
    X, y = load_breast_cancer(return_X_y=True)
    return _make("breast_cancer", "classification", X.astype(np.float64), y, seed, test_fraction,
                 standardize=True, n_classes=2)


def _diabetes(seed, test_fraction):
    """scikit-learn's diabetes regression set (442 x 10; the target in its raw units)."""
    from sklearn.datasets import load_diabetes
    X, y = load_diabetes(return_X_y=True)
    return _make("diabetes", "regression", X.astype(np.float64), y.astype(np.float64), seed, test_fraction,
                 standardize=True)


def _synthetic_classification(seed, test_fraction, n=1000, d=20):
    """Binary labels drawn from a planted logistic model: P(y=1|x) = sigmoid(x.w + b)."""
    rng = numpy_rng(seed, "synthetic classification")
    w = rng.normal(size=d + 1) / np.sqrt(d)
    X = rng.normal(size=(n, d))
    p = 1.0 / (1.0 + np.exp(-(X @ w[:d] + w[d])))
    y = (rng.random(n) < p).astype(np.int64)
    return _make("synthetic_classification", "classification", X, y, seed, test_fraction,
                 standardize=False, n_classes=2, w_true=w)


def _synthetic_regression(seed, test_fraction, n=1000, d=20, noise=0.1):
    """y = x.w + b + noise: least squares recovers w (the known optimum up to noise)."""
    rng = numpy_rng(seed, "synthetic regression")
    w = rng.normal(size=d + 1) / np.sqrt(d)
    X = rng.normal(size=(n, d))
    y = X @ w[:d] + w[d] + noise * rng.normal(size=n)
    return _make("synthetic_regression", "regression", X, y, seed, test_fraction, standardize=False, w_true=w)


_LOADERS = {"digits": _digits, "breast_cancer": _breast_cancer, "diabetes": _diabetes,
            "synthetic_classification": _synthetic_classification, "synthetic_regression": _synthetic_regression}
DATASETS = tuple(_LOADERS)


def load_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """Load an embedded data set by name (see ``DATASETS``), split with ``seed``."""
    if name not in _LOADERS:
        raise ValueError(f"Invalid name: {name!r} (choose from {', '.join(DATASETS)})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid seed: {seed!r} (must be an int >= 0)")
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"Invalid test_fraction: {test_fraction!r} (must be in (0, 1))")
    return _LOADERS[name](seed, float(test_fraction))
