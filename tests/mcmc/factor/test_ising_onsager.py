"""Gibbs on the 2-D Ising torus against Onsager's exact energy per site, and asynchronous Gibbs
within statistical error of sequential Gibbs."""
from __future__ import annotations

import math

import numpy as np
import pytest

import relaxtorch.mcmc.factor as fg


def batch_se(e, batches: int = 20) -> float:
    """Standard error of the mean of a correlated trace by batch means."""
    m = np.asarray(e)[: len(e) // batches * batches].reshape(batches, -1).mean(axis=1)
    return float(m.std(ddof=1) / math.sqrt(batches))


def ellipk(k: float) -> float:
    """The complete elliptic integral of the first kind K(k) = π / (2 AGM(1, sqrt(1 - k²)))."""
    a, b = 1.0, math.sqrt(1.0 - k * k)
    for _ in range(60):
        a, b = (a + b) / 2.0, math.sqrt(a * b)
    return math.pi / (2.0 * a)


def onsager_energy(beta: float) -> float:
    """Onsager (1944): energy per site -<Σ_<ij> s_i s_j>/N of the infinite square lattice, J = 1."""
    k = 2.0 * math.sinh(2 * beta) / math.cosh(2 * beta) ** 2
    return -(1.0 / math.tanh(2 * beta)) * (1.0 + (2.0 / math.pi) * (2.0 * math.tanh(2 * beta) ** 2 - 1.0) * ellipk(k))


def test_ellipk_known_values():
    assert ellipk(0.0) == pytest.approx(math.pi / 2, abs=1e-15)
    assert ellipk(math.sqrt(0.5)) == pytest.approx(1.854074677301372, abs=1e-13)  # K(1/√2) = Γ(1/4)²/(4√π)


def _energy_per_site(state, beta, n):
    return -np.asarray(state.energy) / (beta * n)   # log-potential = β Σ s_i s_j (h = 0)


@pytest.mark.parametrize("beta", [0.3, 0.6])
def test_gibbs_matches_onsager_on_128_torus(beta):
    n = 128 * 128
    g = fg.ising_grid(128, 128, beta=beta, h=0.0)
    s = fg.Gibbs()
    st = s.run(g, s.init(g, seed=7), 100, record=False)          # starts ordered (all 0)
    st = s.run(g, st, 300)
    e = _energy_per_site(st, beta, n)[100:]
    err = batch_se(e)
    # finite-size corrections at 128 are far below 1e-4 away from β_c = 0.4407
    assert abs(e.mean() - onsager_energy(beta)) < 4 * err + 1e-3, (e.mean(), onsager_energy(beta), err)
    # the incremental trace is the exact log-potential
    assert st.log_potential == pytest.approx(float(fg.log_potential(g.arrays, st.x)), rel=1e-9)


def test_async_energy_within_error_of_sequential():
    n, beta = 64 * 64, 0.3
    g = fg.ising_grid(64, 64, beta=beta, h=0.1)
    out = {}
    for name, s in (("seq", fg.Gibbs()), ("async", fg.AsyncGibbs(threads=2))):
        st = s.run(g, s.init(g, seed=3), 50, record=False)
        st = s.run(g, st, 600)
        e = np.asarray(st.energy[50:]) / n
        out[name] = (e.mean(), batch_se(e), fg.marginals(st)[:, 1].mean())
    (ms, es, ps), (ma, ea, pa) = out["seq"], out["async"]
    assert abs(ms - ma) < 4 * math.hypot(es, ea) + 1e-3
    assert abs(ps - pa) < 0.01
