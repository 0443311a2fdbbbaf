"""SVRG and HALP against slow float64 reference loops, and HALP's linear convergence."""
import math

import numpy as np
import pytest
import torch

from relaxtorch.optim import HALP, SVRG


def _problem(n=12, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sign(rng.normal(size=n))
    return X, y


def _grad_i(w, x, y, lam):  # logistic loss + lam/2 |w|^2, float64
    return -y * x / (1 + math.exp(y * x @ w)) + lam * w


def _run_torch(opt_factory, X, y, lam, order, epochs):
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    w = torch.zeros(X.shape[1], requires_grad=True)
    opt = opt_factory([w])

    def loss(idx):
        return torch.nn.functional.softplus(-yt[idx] * (Xt[idx] @ w)).mean() + lam / 2 * w.pow(2).sum()

    def full():
        opt.zero_grad()
        value = loss(slice(None))
        value.backward()
        return value

    for _ in range(epochs):
        opt.recenter(full)
        for i in order:
            def closure(i=i):
                opt.zero_grad()
                value = loss([i])
                value.backward()
                return value
            opt.step(closure)
    return w.detach().double().numpy(), opt


def test_svrg_matches_float64_reference_loop():
    X, y = _problem()
    lam, lr, order = 0.1, 0.2, [3, 1, 4, 1, 5, 9 % 12, 2, 6, 5, 3, 5, 8]
    got, _ = _run_torch(lambda p: SVRG(p, lr=lr), X, y, lam, order, epochs=3)
    w = np.zeros(X.shape[1])
    for _ in range(3):
        anchor = w.copy()
        full = np.mean([_grad_i(anchor, X[j], y[j], lam) for j in range(len(y))], axis=0)
        for i in order:
            w = w - lr * (_grad_i(w, X[i], y[i], lam) - _grad_i(anchor, X[i], y[i], lam) + full)
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_halp_nearest_matches_float64_reference_loop():
    X, y = _problem(seed=1)
    lam, lr, bits, order = 0.2, 0.3, 6, [0, 5, 2, 7, 7, 11, 3, 1]
    got, opt = _run_torch(lambda p: HALP(p, lr=lr, mu=lam, bits=bits, rounding="nearest"), X, y, lam, order, 3)
    w = np.zeros(X.shape[1])
    for _ in range(3):
        anchor = w.copy()
        full = np.mean([_grad_i(anchor, X[j], y[j], lam) for j in range(len(y))], axis=0)
        delta = np.linalg.norm(full) / (lam * (2 ** (bits - 1) - 1))
        step = 2.0 ** math.ceil(math.log2(delta))  # power-of-two grid at least delta
        z = np.zeros_like(w)
        for i in order:
            u = _grad_i(anchor + z, X[i], y[i], lam) - _grad_i(anchor, X[i], y[i], lam) + full
            z = np.clip(np.round((z - lr * u) / step), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * step
        w = anchor + z
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    assert opt.offset_fmt.wl == bits


def _suboptimality_curves(epochs=14):
    X, y = _problem(n=60, d=5, seed=2)
    lam = 0.1
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def f(w):
        return torch.nn.functional.softplus(-yt * (Xt @ w)).mean() + lam / 2 * w.pow(2).sum()

    w = torch.zeros(5, dtype=torch.float64)
    for _ in range(30):  # Newton's method in float64 for the optimum
        g = torch.autograd.functional.jacobian(f, w)
        w = w - torch.linalg.solve(torch.autograd.functional.hessian(f, w), g)
    fstar = float(f(w))
    rng = np.random.default_rng(0)
    order = list(rng.integers(0, 60, size=120))
    curves = {}
    for name, factory in {"svrg": lambda p: SVRG(p, lr=0.1),
                          "halp": lambda p: HALP(p, lr=0.1, mu=lam, bits=8, generator=0)}.items():
        got, _ = _run_torch(factory, X, y, lam, order, epochs)
        curves[name] = (float(f(torch.tensor(got))) - fstar) / fstar
    return curves


def test_halp_8bit_converges_linearly_like_svrg():
    curves = _suboptimality_curves()
    assert curves["svrg"] < 1e-9
    assert curves["halp"] < 1e-8  # an 8-bit offset; plain 8-bit SGD stalls near 1e-2 here


@pytest.mark.parametrize("kwargs, name", [({"lr": 0.0, "mu": 1.0}, "lr"), ({"lr": 0.1, "mu": -1.0}, "mu"),
                                          ({"lr": 0.1, "mu": 1.0, "bits": 1}, "bits"),
                                          ({"lr": 0.1, "mu": 1.0, "rounding": "odd"}, "rounding")])
def test_halp_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HALP([torch.zeros(2, requires_grad=True)], **kwargs)


def test_step_needs_recenter_and_closure():
    w = torch.zeros(2, requires_grad=True)
    opt = SVRG([w], lr=0.1)
    with pytest.raises(RuntimeError, match="recenter"):
        opt.step(lambda: w.sum())
    with pytest.raises(ValueError, match="closure"):
        opt.step(None)
