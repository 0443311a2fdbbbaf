"""Every sampler's empirical joint against exact enumeration (chi-square on thinned samples), and
deliberately wrong samplers failing the same test."""
from __future__ import annotations

import numpy as np
import pytest

import relaxtorch.mcmc.factor as fg
from relaxtorch.mcmc.factor._minibatch import local_max_energy, total_max_energy

from ._sampler_graphs import GRAPHS, chi_square_pvalue

SAMPLERS = {
    "gibbs-systematic": lambda g: (fg.Gibbs(), 3),
    "gibbs-random": lambda g: (fg.Gibbs(scan="random"), 3),
    "gibbs-permutation": lambda g: (fg.Gibbs(scan="permutation"), 3),
    "poisson-gibbs": lambda g: (fg.PoissonGibbs(lam=2 * local_max_energy(g) ** 2), 3),
    "min-gibbs": lambda g: (fg.MINGibbs(lam=total_max_energy(g) ** 2), 6),
    "mgpmh": lambda g: (fg.MGPMH(lam=2 * local_max_energy(g) ** 2), 3),
    "double-min-gibbs": lambda g: (fg.DoubleMINGibbs(lam1=2 * local_max_energy(g) ** 2,
                                                     lam2=total_max_energy(g) ** 2), 6),
}
N = 2500  # kept samples per chain


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_joint_matches_exact_enumeration(name, sampler):
    g = GRAPHS[name]()
    s, thin = SAMPLERS[sampler](g)
    st = s.run(g, s.init(g, seed=11), 50, record=False)
    st = s.run(g, st, N * thin, thin=thin)
    assert st.samples.shape == (N, g.num_variables)
    assert chi_square_pvalue(g, st.samples) > 1e-3
    assert np.abs(fg.marginals(st) - fg.exact_marginals(g)).max() < 0.06


@pytest.mark.parametrize("name", ["mixed", "logical"])
def test_sampler_ignoring_evidence_fails(name):
    g = GRAPHS[name]()
    wrong = g.with_evidence(np.full(g.num_variables, -1))  # a sampler that skips the evidence handling
    s = fg.Gibbs()
    st = s.run(wrong, s.init(wrong, seed=11), N * 3, thin=3)
    assert chi_square_pvalue(g, st.samples) < 1e-6


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_biased_conditional_fails(name):
    g = GRAPHS[name]()
    wrong = g.with_weights(0.6 * g.weight)  # conditionals at the wrong temperature
    s = fg.Gibbs()
    st = s.run(wrong, s.init(wrong, seed=11), N * 3, thin=3)
    assert chi_square_pvalue(g, st.samples) < 1e-6


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_async_gibbs_marginals(name):
    g = GRAPHS[name]()
    s = fg.AsyncGibbs(threads=2, sync_every=25)
    st = s.run(g, s.init(g, seed=2), 20000)
    assert np.abs(fg.marginals(st) - fg.exact_marginals(g)).max() < 0.03
    assert st.staleness["probes"] > 0 and st.staleness["mean"] >= 0


def test_async_gibbs_default_meetings_on_a_tiny_graph():
    """With the default meeting interval the threads start each stretch together and meet often
    enough: on 9 variables a stretch of 2^16 updates left the blocks sampled against a frozen rest
    (marginal error 0.17 at 20000 sweeps)."""
    g = fg.ising_grid(3, 3, beta=0.3, h=0.2)
    s = fg.AsyncGibbs(threads=2)
    st = s.run(g, s.run(g, s.init(g, seed=0), 200, record=False), 20000)
    assert np.abs(fg.marginals(st) - fg.exact_marginals(g)).max() < 0.03
