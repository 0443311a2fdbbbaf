"""Compiled Hogwild!/Buckwild! kernels against slow float64 reference loops, on tiny problems.

Each kernel runs a few passes of SGD in one thread; the reference replays the
same examples in the same order with the same counter-based random bits in
float64 Python.  Float models agree to float32 accuracy; fixed-point models agree
code for code except where float32 and float64 land on opposite sides of a
stochastic-rounding threshold (rare; allowed to differ by one step).
"""
import math

import numpy as np
import pytest

from relaxtorch.numbers.formats import FixedPoint
from relaxtorch.parallel import _kernels as K
from relaxtorch.parallel import _reference as ref
from relaxtorch.parallel.problems import FLOAT_FORMATS, kernel_params
from relaxtorch.parallel.shared import code_range, data_codes
from relaxtorch.parallel.signature import Signature

SEEDS = (0x1234567, 0x89ABCDE)


def _csr(n=40, d=12, per_row=4, seed=0):
    rng = np.random.default_rng(seed)
    indptr, indices = [0], []
    for _ in range(n):
        row = np.sort(rng.choice(d, size=rng.integers(1, per_row + 2), replace=False))
        indices.extend(row.tolist())
        indptr.append(len(indices))
    values = rng.uniform(0.05, 1.0, len(indices)).astype(np.float32)
    return np.array(indptr, np.int64), np.array(indices, np.int32), values


def _labels(loss, n, seed=1):
    rng = np.random.default_rng(seed)
    if loss == "squared":
        return rng.normal(size=n).astype(np.float32)
    return np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)


def _order(n, passes=3, seed=2):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(n) for _ in range(passes)]).astype(np.int64)


def _params(loss, lr, lam, vscale, fmt, sig):
    fp, ip = kernel_params(loss, lr, lam, vscale, fmt, sig, stale_every=1)
    ip[K.I_SEED_LO], ip[K.I_SEED_HI] = SEEDS
    return fp, ip


def _ctl(nworkers=1):
    return np.zeros((nworkers + 1) * K.STRIDE, np.int64)


def _fixed_args(fmt, sig):
    lo, hi = code_range(fmt)
    qlo, qhi = code_range(FixedPoint(sig.communication, fmt.fl))
    return (fmt.eps, lo, hi, qlo, qhi)


@pytest.mark.parametrize("loss", ["logistic", "squared", "hinge"])
@pytest.mark.parametrize("lam", [0.0, 0.05])
@pytest.mark.parametrize("sig", ["D32M32G32C32", "D32M32G16C16", "D32M32G8C8", "D8M32G32C32"])
def test_sparse_float_matches_reference(loss, lam, sig):
    sig = Signature.parse(sig)
    indptr, indices, values = _csr()
    codes, vscale = data_codes(values, sig.data)
    y, order = _labels(loss, 40), _order(40)
    fp, ip = _params(loss, 0.3, lam, vscale, None, sig)
    w = np.zeros(12, np.float32)
    ctl = _ctl()
    K.sparse_float(indptr, indices, codes, y, order, w, ctl, 0, 1, fp, ip)
    expect = ref.sparse_sgd(indptr, indices, codes, y, order, [0.0] * 12, loss_kind=loss, lr=0.3, lam=lam,
                            vscale=vscale, g_fmt=FLOAT_FORMATS.get(sig.gradient),
                            c_fmt=FLOAT_FORMATS.get(sig.communication), seeds=SEEDS)
    assert np.abs(w).max() > 0.01  # the run moved the model
    np.testing.assert_allclose(w, expect, rtol=2e-4, atol=2e-5)
    assert ctl[K.UPDATES] == order.size
    assert ctl[K.WRITES] == ctl[K.NONZERO] == sum(indptr[i + 1] - indptr[i] for i in order)
    assert ctl[K.STALE_N] == order.size and ctl[K.STALE_SUM] == ctl[K.STALE_MAX] == 0  # one worker: never stale


@pytest.mark.parametrize("loss", ["logistic", "squared", "hinge"])
@pytest.mark.parametrize("lam", [0.0, 0.05])
@pytest.mark.parametrize("sig, fl", [("D8M8G32C8", 5), ("D16M16G32C16", 12), ("D32M8G32C8", 5),
                                     ("D8M16G16C8", 10), ("D8M8G8C8", 5)])
def test_sparse_fixed_matches_reference(loss, lam, sig, fl):
    sig = Signature.parse(sig)
    fmt = FixedPoint(sig.model, fl)
    indptr, indices, values = _csr()
    codes, vscale = data_codes(values, sig.data)
    y, order = _labels(loss, 40), _order(40)
    fp, ip = _params(loss, 0.3, lam, vscale, fmt, sig)
    w = np.zeros(12, np.int8 if sig.model == 8 else np.int16)
    ctl = _ctl()
    K.sparse_fixed(indptr, indices, codes, y, order, w, ctl, 0, 1, fp, ip)
    data = [int(v) for v in codes] if codes.dtype != np.float32 else codes
    expect = np.array(ref.sparse_sgd(indptr, indices, np.asarray(data), y, order, [0] * 12, loss_kind=loss, lr=0.3,
                                     lam=lam, vscale=vscale, fixed=_fixed_args(fmt, sig),
                                     g_fmt=FLOAT_FORMATS.get(sig.gradient), seeds=SEEDS))
    assert np.abs(w).max() >= 2
    diff = np.abs(w.astype(np.int64) - expect)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 1, (w, expect)
    assert 0 < ctl[K.NONZERO] <= ctl[K.WRITES]


@pytest.mark.parametrize("sig, fl", [("D32M32G32C32", None), ("D8M32G16C8", None), ("D8M8G32C8", 5),
                                     ("D32M16G32C16", 12)])
def test_dense_matches_reference(sig, fl):
    sig = Signature.parse(sig)
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (30, 6)).astype(np.float32)
    codes, vscale = data_codes(X, sig.data)
    y, order = _labels("logistic", 30), _order(30)
    fmt = FixedPoint(sig.model, fl) if fl is not None else None
    fp, ip = _params("logistic", 0.2, 0.01, vscale, fmt, sig)
    data = codes.astype(np.int64) if codes.dtype != np.float32 else codes
    if fmt is None:
        w = np.zeros(6, np.float32)
        K.dense_float(codes, y, order, w, _ctl(), 0, 1, fp, ip)
        expect = ref.dense_sgd(data.tolist(), y, order, [0.0] * 6, lr=0.2, lam=0.01, vscale=vscale,
                               g_fmt=FLOAT_FORMATS.get(sig.gradient), c_fmt=FLOAT_FORMATS.get(sig.communication),
                               seeds=SEEDS)
        np.testing.assert_allclose(w, expect, rtol=2e-4, atol=2e-5)
    else:
        w = np.zeros(6, np.int8 if sig.model == 8 else np.int16)
        K.dense_fixed(codes, y, order, w, _ctl(), 0, 1, fp, ip)
        expect = ref.dense_sgd(data.tolist(), y, order, [0] * 6, lr=0.2, lam=0.01, vscale=vscale,
                               fixed=_fixed_args(fmt, sig), seeds=SEEDS)
        assert np.abs(w.astype(np.int64) - expect).max() <= 1
        assert np.abs(w).max() >= 2


@pytest.mark.parametrize("fixed", [False, True])
def test_matrix_completion_matches_reference(fixed):
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 5, 40).astype(np.int32)
    cols = rng.integers(0, 6, 40).astype(np.int32)
    vals = rng.normal(size=40).astype(np.float32)
    order = _order(40, passes=2)
    L0, R0 = rng.normal(0, 0.5, (5, 3)).astype(np.float32), rng.normal(0, 0.5, (6, 3)).astype(np.float32)
    sig = Signature.parse("D32M8G32C8" if fixed else "D32M32G32C32")
    fmt = FixedPoint(8, 5) if fixed else None
    fp, ip = _params("squared", 0.1, 0.02, 1.0, fmt, sig)
    if not fixed:
        L, R = L0.copy(), R0.copy()
        K.mc_float(rows, cols, vals, order, L, R, _ctl(), 0, 1, fp, ip)
        eL, eR = ref.mc_sgd(rows, cols, vals, order, L0.tolist(), R0.tolist(), lr=0.1, lam=0.02, seeds=SEEDS)
        np.testing.assert_allclose(L, eL, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(R, eR, rtol=1e-4, atol=1e-5)
    else:
        L, R = np.round(L0 * 32).astype(np.int8), np.round(R0 * 32).astype(np.int8)
        L_start, R_start = L.copy(), R.copy()
        K.mc_fixed(rows, cols, vals, order, L, R, _ctl(), 0, 1, fp, ip)
        eL, eR = ref.mc_sgd(rows, cols, vals, order, L_start.astype(int).tolist(), R_start.astype(int).tolist(),
                            lr=0.1, lam=0.02, fixed=_fixed_args(fmt, sig), seeds=SEEDS)
        assert np.abs(L.astype(int) - np.array(eL)).max() <= 1 and np.abs(R.astype(int) - np.array(eR)).max() <= 1
        assert not np.array_equal(L, L_start)


@pytest.mark.parametrize("loss", ["logistic", "squared", "hinge"])
def test_objectives_match_reference(loss):
    indptr, indices, values = _csr()
    y = _labels(loss, 40)
    w = np.random.default_rng(5).normal(size=12).astype(np.float32)
    got = K.sparse_objective(indptr, indices, values, y, w, K.LOSSES[loss], 0.1)
    assert got == pytest.approx(ref.sparse_objective(indptr, indices, values, y, w, loss, 0.1), rel=1e-12)
    X = np.random.default_rng(6).normal(size=(20, 5)).astype(np.float32)
    y2, w2 = _labels(loss, 20), np.random.default_rng(7).normal(size=5).astype(np.float32)
    s = X.astype(np.float64) @ w2.astype(np.float64)
    expect = np.mean([ref.loss(loss, si, yi) for si, yi in zip(s, y2.astype(np.float64))]) + 0.05 * np.sum(
        w2.astype(np.float64) ** 2)
    assert K.dense_objective(X, y2, w2, K.LOSSES[loss], 0.1) == pytest.approx(expect, rel=1e-12)


def test_fixed_point_writes_are_unbiased():
    """One example's update, drawn 4000 times: the mean write matches the exact update."""
    indptr = np.array([0, 4], np.int64)
    indices = np.array([0, 3, 5, 7], np.int32)
    values = np.array([0.9, -0.35, 0.6, 0.05], np.float32)
    y = np.array([1.0], np.float32)
    sig, fmt = Signature.parse("D32M8G32C8"), FixedPoint(8, 4)
    fp, ip = _params("logistic", 0.17, 0.0, 1.0, fmt, sig)
    exact = 0.17 * 0.5 * values / fmt.eps  # logistic derivative at w = 0 is -y/2: steps per coordinate
    draws = np.empty((4000, 4))
    for t in range(draws.shape[0]):
        ip[K.I_SEED_LO] = t
        w = np.zeros(8, np.int8)
        K.sparse_fixed(indptr, indices, values, y, np.zeros(1, np.int64), w, _ctl(), 0, 1, fp, ip)
        draws[t] = w[indices]
    mean, se = draws.mean(axis=0), draws.std(axis=0) / math.sqrt(draws.shape[0])
    assert np.all(np.abs(mean - exact) < 4 * se + 1e-9), (mean, exact, se)
    assert set(np.unique(draws[:, 0])) == {math.floor(exact[0]), math.ceil(exact[0])}  # neighbours only


def test_saturation_and_narrow_communication():
    """Writes clamp to the model range; with C < M each write clamps to C bits of steps."""
    indptr = np.array([0, 1], np.int64)
    indices, values, y = np.array([2], np.int32), np.array([1.0], np.float32), np.array([1.0], np.float32)
    order = np.zeros(50, np.int64)
    for sig, fl, cap in (("D32M8G32C8", 7, 127), ("D32M16G32C8", 7, 127)):
        sig = Signature.parse(sig)
        fp, ip = _params("squared", 50.0, 0.0, 1.0, FixedPoint(sig.model, fl), sig)
        y_big = np.array([100.0], np.float32)
        w = np.zeros(4, np.int8 if sig.model == 8 else np.int16)
        K.sparse_fixed(indptr, indices, values, y_big, order[:1], w, _ctl(), 0, 1, fp, ip)
        assert w[2] == cap  # one write: at most 127 steps either way
    fp, ip = _params("squared", 50.0, 0.0, 1.0, FixedPoint(8, 7), Signature.parse("D32M8G32C8"))
    w = np.zeros(4, np.int8)
    K.sparse_fixed(indptr, indices, values, np.array([100.0], np.float32), order, w, _ctl(), 0, 1, fp, ip)
    assert w[2] == 127 and w[[0, 1, 3]].tolist() == [0, 0, 0]


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize("lr", [0.3, 40.0])  # 40: updates beyond the C range, so the clamp matters
def test_packed_rows_and_the_clamp_free_path_change_no_bit(loss, lr):
    """The packed 8-bit layout and the kernel's no-clamp fast path (taken when ``xmax`` proves
    no write can leave the C range) give the very model of the plain layout, always clamped."""
    sig, fmt = Signature.parse("D8M8G32C8"), FixedPoint(8, 5)
    indptr, indices, values = _csr(n=60, d=40, per_row=6)
    codes, vscale = data_codes(values, 8)
    y, order = _labels(loss, 60), _order(60)
    runs = []
    for rows, vals, xmax in ((indices, codes, math.inf), (indices, codes, 128.0),
                             (K.pack_rows(indices, codes), np.zeros(0, np.int8), 128.0)):
        fp, ip = kernel_params(loss, lr, 0.0, vscale, fmt, sig, 16, xmax=xmax)
        w = np.zeros(40, np.int8)
        K.sparse_fixed(indptr, rows, vals, y, order, w, _ctl(), 0, 1, fp, ip)
        runs.append(w)
    assert np.abs(runs[0]).max() > 0
    if lr > 1:
        assert np.abs(runs[0]).max() == 128 or runs[0].max() == 127  # saturated somewhere
    for w in runs[1:]:
        np.testing.assert_array_equal(w, runs[0])


def test_pack_rows_round_trip_and_limits():
    indices = np.array([0, 5, (1 << 24) - 1], np.int32)
    codes = np.array([-127, 0, 127], np.int8)
    packed = K.pack_rows(indices, codes)
    assert packed.dtype == np.uint32
    np.testing.assert_array_equal(packed >> 8, indices)
    np.testing.assert_array_equal((packed & 0xFF).astype(np.uint8).view(np.int8), codes)
    with pytest.raises(ValueError, match="2\\*\\*24"):
        K.pack_rows(np.array([1 << 24], np.int32), np.array([1], np.int8))
