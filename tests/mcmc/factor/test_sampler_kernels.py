"""Each sampler kernel against its plain-Python reference loop: same stream, same chain."""
from __future__ import annotations

import numpy as np
import pytest

import relaxtorch.mcmc.factor as fg
from relaxtorch.mcmc.factor.functions import FactorFunction as F
from relaxtorch.mcmc.factor import _sampler_reference as ref
from relaxtorch.mcmc.factor._minibatch import tables

from ._sampler_graphs import GRAPHS


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_compiled_factor_values_equal_the_reference(name):
    g = GRAPHS[name]()
    a = g.arrays
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 100, g.num_variables) % g.cardinality).astype(np.int32)
    for f in range(g.num_factors):
        for v in [-1, *a.edge_var[a.factor_ptr[f]:a.factor_ptr[f + 1]]]:
            for k in range(int(g.cardinality[v]) if v >= 0 else 1):
                assert fg.factor_value.py_func(a, f, x, int(v), k) == fg.factor_value(a, f, x, int(v), k) == \
                    ref.value(g, f, x, int(v), k)


def every_function_graph():
    """One factor of every FactorFunction on 3 shared variables (arity 3; ISTRUE on one, the
    categorical ones on values of a 3-valued variable), so no function escapes the next test."""
    from relaxtorch.mcmc.factor.functions import FactorFunction as F
    factors = []
    for i, fn in enumerate(F):
        table = np.arange(27.0).reshape(3, 3, 3) / 10 - 1 if fn == F.TABLE else None
        variables = [0] if fn == F.ISTRUE else [0, 1, 2]
        equal_to = [2, 1, 0][:len(variables)] if fn not in (F.TABLE, F.POTTS) else None
        factors.append((fn, i % 3, variables, equal_to, 1.0 + 0.25 * i, table))
    # and the compact kinds: pairwise POTTS, one-variable "x == value"
    factors += [(F.POTTS, 1, [0, 2]), (F.EQUAL_CAT_CONST, 0, [1], [2]), (F.AND_CAT, 1, [2], [0])]
    return fg.from_factors([3, 3, 3], [0.7, -0.4, 1.1], factors)


def test_every_factor_function_agrees_on_every_path():
    g = every_function_graph()
    a = g.arrays
    from relaxtorch.mcmc.factor.functions import factor_value_reference
    for x in np.ndindex(3, 3, 3):
        x = np.array(x, np.int32)
        for f in range(g.num_factors):
            lo, hi = a.factor_ptr[f], a.factor_ptr[f + 1]
            for v in [-1, *a.edge_var[lo:hi]]:
                for k in range(3 if v >= 0 else 1):
                    y = x.copy()
                    if v >= 0:
                        y[v] = k
                    w = a.weight[a.weight_id[f]] * a.feature[f]
                    table = a.table[a.table_ptr[f]:a.table_ptr[f + 1]] if a.function[f] == 100 else None
                    expect = w * factor_value_reference(int(a.function[f]), y[a.edge_var[lo:hi]],
                                                        a.edge_value[lo:hi], table, a.cardinality[a.edge_var[lo:hi]])
                    got = (fg.factor_value(a, f, x, int(v), k), fg.factor_value.py_func(a, f, x, int(v), k),
                           ref.value(g, f, x, int(v), k))
                    assert all(r == pytest.approx(expect, abs=1e-12) for r in got), (f, x, v, k, got, expect)


@pytest.mark.parametrize("build", [every_function_graph, lambda: fg.ising_grid(2, 3, beta=0.5, h=-0.3),
                                   lambda: fg.from_factors([2, 2, 2], [0.6, -0.9], [
                                       (F.EQUAL, 0, [0, 1], [1, 0]), (F.EQUAL, 1, [2, 1], [0, 0]),
                                       (F.ISTRUE, 1, [2], [0]), (F.ISTRUE, 0, [0])])])
def test_compact_views_equal_factor_value(build):
    """The compact views (per factor: compact_factors + compact_phi; per variable row: pack + row_phi)
    give factor_value's bits for every compact factor, assignment and substitution."""
    from relaxtorch.mcmc.factor._gibbs_kernels import GENERIC, compact_factors, compact_phi, pack, row_phi
    g = build()
    a = g.arrays
    ck, ca, cb, cla, clb, ccoef = compact_factors(a)
    _, rcoef, rother, rlit, rlit_other, rkind = pack(a)
    assert (ck != GENERIC).sum() >= 2
    for x in np.ndindex(*[int(c) for c in a.cardinality]):
        x = np.array(x, np.int32)
        for f in np.flatnonzero(ck != GENERIC):
            for v in [-1, *a.edge_var[a.factor_ptr[f]:a.factor_ptr[f + 1]]]:
                for k in range(int(a.cardinality[v]) if v >= 0 else 1):
                    assert ccoef[f] * compact_phi(ck[f], ca[f], cb[f], cla[f], clb[f], x, int(v), k) == \
                        fg.factor_value(a, f, x, int(v), k)
        for v in range(g.num_variables):
            for j in range(a.var_ptr[v], a.var_ptr[v + 1]):
                if rkind[j] != GENERIC:
                    for k in range(int(a.cardinality[v])):
                        assert rcoef[j] * row_phi(rkind[j], rother[j], rlit[j], rlit_other[j], x, k) == \
                            fg.factor_value(a, a.var_factor[j], x, v, k)


@pytest.mark.parametrize("scan", ["systematic", "random", "permutation"])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_gibbs_kernel_matches_reference(name, scan):
    g = GRAPHS[name]()
    s = fg.Gibbs(scan=scan)
    st = s.init(g, seed=3)
    x0, stream, order = st.x.copy(), int(st.stream(0)), st.order.copy()
    s.run(g, st, 6)
    x, counts, trace = ref.gibbs(g, x0, st.free, scan, 6, stream, order)
    np.testing.assert_array_equal(st.x, x)
    np.testing.assert_array_equal(st.counts, counts)
    np.testing.assert_allclose(st.energy, trace, rtol=0, atol=1e-9)


def test_gibbs_fast_path_matches_reference_on_ising():
    g = fg.ising_grid(5, 6, beta=0.45, h=0.2)
    s = fg.Gibbs()
    st = s.init(g, seed=1)
    x0, stream = st.x.copy(), int(st.stream(0))
    s.run(g, st, 5)
    x, counts, trace = ref.gibbs(g, x0, st.free, "systematic", 5, stream)
    np.testing.assert_array_equal(st.x, x)
    np.testing.assert_allclose(st.energy, trace, atol=1e-9)


@pytest.mark.parametrize("build", [lambda: fg.potts_grid(4, 5, D=3, beta=0.7),
                                   lambda: fg.potts_all_pairs(3, D=4, beta=2.0, gamma=1.5),
                                   lambda: fg.from_factors([3, 4, 3], [0.8, -0.6], [
                                       (F.POTTS, 0, [0, 1]), (F.POTTS, 1, [1, 2]), (F.POTTS, 0, [2, 0]),
                                       (F.EQUAL_CAT_CONST, 1, [1], [3]), (F.AND_CAT, 0, [2], [1])])])
@pytest.mark.parametrize("scan", ["systematic", "random"])
def test_gibbs_categorical_fast_path_matches_reference(build, scan):
    """Pairwise POTTS and one-variable "x == value" factors take cat_logits (O(degree + D)); the chain
    and its energy trace equal the plain-Python reference's bit for bit."""
    from relaxtorch.mcmc.factor._gibbs_kernels import FAST_CAT
    from relaxtorch.mcmc.factor.gibbs import packed
    g = build()
    assert (packed(g)[0] == FAST_CAT).all()
    s = fg.Gibbs(scan=scan)
    st = s.init(g, seed=3)
    x0, stream = st.x.copy(), int(st.stream(0))
    s.run(g, st, 6)
    x, counts, trace = ref.gibbs(g, x0, st.free, scan, 6, stream)
    np.testing.assert_array_equal(st.x, x)
    np.testing.assert_array_equal(st.counts, counts)
    np.testing.assert_allclose(st.energy, trace, atol=1e-9)


METHODS = {"poisson-gibbs": lambda: fg.PoissonGibbs(lam=6.0), "min-gibbs": lambda: fg.MINGibbs(lam=20.0),
           "mgpmh": lambda: fg.MGPMH(lam=8.0), "double-min-gibbs": lambda: fg.DoubleMINGibbs(lam1=8.0, lam2=20.0)}


def check_minibatch_against_reference(g, method, seed, sweeps):
    """The kernel's chain of ``method`` on g equals the plain-Python reference's (same stream)."""
    s = METHODS[method]()
    st = s.init(g, seed=seed)
    x0, stream, eps = st.x.copy(), int(st.stream(0)), st.estimate
    s.run(g, st, sweeps)
    lam = getattr(s, "lam", getattr(s, "lam1", None))
    x, counts, eps_ref = ref.minibatch(method, g, tables(g), x0, st.free, sweeps, stream, lam=lam,
                                       lam2=getattr(s, "lam2", 1.0), eps=eps)
    np.testing.assert_array_equal(st.x, x)
    np.testing.assert_array_equal(st.counts, counts)
    if method in ("min-gibbs", "double-min-gibbs"):
        assert st.estimate == pytest.approx(eps_ref, abs=1e-9)
    # the tracked log-potential is exact
    assert st.log_potential == pytest.approx(float(fg.log_potential(g.arrays, st.x)), abs=1e-9)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_minibatch_kernel_matches_reference(name, method):
    check_minibatch_against_reference(GRAPHS[name](), method, seed=5, sweeps=4)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("build", [lambda: fg.ising_grid(3, 4, beta=0.4, h=-0.2),
                                   lambda: fg.potts_grid(3, 3, D=3, beta=-0.6),
                                   lambda: fg.from_factors([3, 3, 2, 2], [0.9, -0.5], [
                                       (F.POTTS, 0, [0, 1]), (F.EQUAL_CAT_CONST, 1, [1], [2]), (F.AND_CAT, 0, [0], [1]),
                                       (F.EQUAL, 1, [2, 3], [1, 0]), (F.ISTRUE, 0, [3], [0]), (F.POTTS, 1, [1, 2])])])
def test_minibatch_kernel_on_compact_graphs_matches_reference(build, method):
    """Graphs whose every factor has a compact view run the kernels compiled without the generic
    path (drawn from the 64-byte records); the chains equal the plain-Python reference's."""
    from relaxtorch.mcmc.factor._minibatch import generic_arrays
    g = build()
    assert generic_arrays(g) is None
    check_minibatch_against_reference(g, method, seed=7, sweeps=5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid scan"):
        fg.Gibbs(scan="zigzag")
    with pytest.raises(ValueError, match="Invalid lam"):
        fg.PoissonGibbs(lam=0.0)
    with pytest.raises(ValueError, match="Invalid threads"):
        fg.AsyncGibbs(threads=0)
    with pytest.raises(ValueError, match="Invalid max_lag"):
        fg.AsyncGibbs(max_lag=-1)
    g = GRAPHS["potts"]()
    with pytest.raises(ValueError, match="Invalid x0"):
        fg.Gibbs().init(g, seed=0, x0=[0, 0, 0, 0, 0, 3])
    with pytest.raises(ValueError, match="Invalid sweeps"):
        fg.Gibbs().run(g, fg.Gibbs().init(g, seed=0), -1)


@pytest.mark.parametrize("max_lag", [1, 3])
def test_async_thread_waits_for_a_stalled_partner(max_lag):
    """A thread more than ``max_lag`` sweeps ahead of the slowest waits: with its partner stalled at
    sweep 0 (its counter held still), thread 0 stops after max_lag + 1 sweeps and goes on, to the
    end of its chunk, once the partner's counter moves."""
    import threading
    import time

    from relaxtorch.mcmc.factor._gibbs_kernels import async_sweeps
    from relaxtorch.mcmc.factor.gibbs import SCANS, packed
    from relaxtorch.mcmc.factor.state import _PAD

    g = fg.ising_grid(3, 3, beta=0.3, h=0.2)
    st = fg.AsyncGibbs().init(g, seed=0)
    block = st.free[:5].copy()
    progress = np.zeros(2 * _PAD, np.int64)
    ready = np.ones(2 * _PAD, np.int64)  # both threads posted ticket 1: no start wait
    sweeps = 40
    args = (g.arrays, packed(g), st.x, block, block.copy(), SCANS["systematic"], sweeps, st.stream(0),
            st.counts, False, np.zeros(sweeps), np.zeros(sweeps), progress, 0, _PAD, 0,
            np.zeros(_PAD, np.int64), ready, 1, max_lag)
    worker = threading.Thread(target=async_sweeps, args=args)
    worker.start()
    deadline = time.monotonic() + 30
    while progress[1] < max_lag + 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    stalled_at = int(progress[1]), int(progress[0])
    progress[_PAD + 1] = sweeps  # the partner catches up
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert stalled_at == (max_lag + 1, (max_lag + 1) * block.size)
    assert progress[1] == sweeps and progress[0] == sweeps * block.size
