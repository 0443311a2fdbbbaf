"""Embedded data sets: shapes, seeded splits, train-only standardization, disjoint splits."""
import numpy as np
import pytest
import torch

from relaxtorch.data import DATASETS, Dataset, load_dataset
from relaxtorch.data.datasets import _split

SHAPES = {  # name: (rows, features, task, n_classes, image_shape)
    "digits": (1797, 64, "classification", 10, (8, 8)),
    "breast_cancer": (569, 30, "classification", 2, None),
    "diabetes": (442, 10, "regression", None, None),
    "synthetic_classification": (1000, 20, "classification", 2, None),
    "synthetic_regression": (1000, 20, "regression", None, None),
}


def test_every_dataset_is_listed():
    assert set(DATASETS) == set(SHAPES)


@pytest.mark.parametrize("name", list(SHAPES))
def test_shapes_dtypes_and_metadata(name):
    rows, feats, task, k, image = SHAPES[name]
    d = load_dataset(name, test_fraction=0.25)
    assert isinstance(d, Dataset) and d.name == name and d.task == task
    assert d.n_classes == k and d.image_shape == image
    n_test = round(rows * 0.25)
    assert d.X_train.shape == (rows - n_test, feats) and d.X_test.shape == (n_test, feats)
    assert d.y_train.shape == (rows - n_test,) and d.y_test.shape == (n_test,)
    assert d.X_train.dtype == d.X_test.dtype == torch.float32
    assert d.y_train.dtype == (torch.int64 if task == "classification" else torch.float32)
    if k:
        assert set(d.y_train.tolist()) == set(range(k))
    with pytest.raises(Exception):
        d.task = "x"  # frozen


@pytest.mark.parametrize("name", list(SHAPES))
def test_same_seed_same_split_other_seed_other_split(name):
    a, b, c = load_dataset(name, seed=3), load_dataset(name, seed=3), load_dataset(name, seed=4)
    for f in ("X_train", "y_train", "X_test", "y_test"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.X_train, c.X_train)


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_standardized_with_training_statistics_only(name):
    from sklearn.datasets import load_breast_cancer, load_digits
    X, _ = (load_digits if name == "digits" else load_breast_cancer)(return_X_y=True)
    d = load_dataset(name, seed=1, test_fraction=0.3)
    tr, te = _split(len(X), 1, 0.3)
    mean, std = X[tr].mean(0), X[tr].std(0)
    std[std == 0] = 1
    np.testing.assert_allclose(d.X_train.numpy(), (X[tr] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.X_test.numpy(), (X[te] - mean) / std, rtol=1e-5, atol=1e-5)
    varying = X[tr].std(0) > 0
    np.testing.assert_allclose(d.X_train.numpy().mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.X_train.numpy().std(0)[varying], 1, atol=1e-4)
    assert np.abs(d.X_test.numpy().mean(0)).max() > 1e-3  # the test split's own mean was not removed


@pytest.mark.parametrize("name", list(SHAPES))
def test_no_example_in_both_splits(name):
    d = load_dataset(name, seed=2)
    train = {tuple(r) for r in d.X_train.numpy().round(5).tolist()}
    test = {tuple(r) for r in d.X_test.numpy().round(5).tolist()}
    assert len(train) == len(d.X_train) and len(test) == len(d.X_test)  # rows are distinct
    assert not train & test
    tr, te = _split(SHAPES[name][0], 2, 0.25)
    assert not set(tr) & set(te) and len(tr) + len(te) == SHAPES[name][0]


def test_synthetic_regression_has_its_planted_optimum():
    d = load_dataset("synthetic_regression")
    X = torch.cat([d.X_train, torch.ones(len(d.X_train), 1)], 1).double()
    w = torch.linalg.lstsq(X, d.y_train.double()[:, None]).solution[:, 0]
    assert float((w - d.w_true.double()).abs().max()) < 0.03  # noise 0.1, 750 rows


def test_subsample_is_seeded_and_keeps_the_test_split():
    d = load_dataset("digits")
    a, b = d.subsample(100, seed=5), d.subsample(100, seed=5)
    assert a.X_train.shape == (100, 64) and torch.equal(a.X_train, b.X_train)
    assert torch.equal(a.X_test, d.X_test)
    assert d.subsample(0) is d and d.subsample(10**6) is d


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="mnist"), "digits, breast_cancer"),
    (dict(name="digits", seed=-1), "seed"),
    (dict(name="digits", test_fraction=1.0), "test_fraction"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(kwargs.pop("name"), **kwargs)
