"""Poisson-Gibbs (Zhang & De Sa, "Poisson-Minibatching for Gibbs Sampling with Convergence Rate
Guarantees", NeurIPS 2019): Gibbs sampling whose update of x_v reads a Poisson minibatch of v's
factors instead of all of them, and is still exact (its stationary distribution is p).

Derivation (factors shifted to φ'_f ∈ [0, M_f], see :mod:`._minibatch_kernels`).  Add one auxiliary
count per factor, s_f | x ~ Poisson(λ M_f / L + φ'_f(x)).  The joint
    p(x) Π_f Pois(s_f; λM_f/L + φ'_f(x)) ∝ exp(Σ φ'_f(x)) Π_f (λM_f/L + φ'_f(x))^{s_f} e^{-λM_f/L - φ'_f(x)} / s_f!
                                        = Π_f (λM_f/L + φ'_f(x))^{s_f} e^{-λM_f/L} / s_f!
has p as its x-marginal, and its conditional of x_v given s and x_{-v} is
    ∝ Π_{f ∋ v} (1 + L φ'_f(x) / (λ M_f))^{s_f}.
One update therefore (1) draws s_f for the factors of v (the others do not enter), (2) draws x_v from
that conditional: Gibbs on (x, s), exact.  Step (1) costs O(λ + L) expected, not O(degree): draw
Poisson((λ/L + 1) L_v) candidate factors ∝ M_f from v's alias table and keep each with probability
(λM_f/L + φ'_f(x)) / ((λ/L + 1) M_f) (Poisson thinning); only kept factors (s_f > 0) are evaluated,
at every value of x_v.  The paper takes λ = Θ(L²) for a spectral gap within a constant of Gibbs's.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._minibatch import check_rate, run_minibatch, start
from ._minibatch_kernels import POISSON_GIBBS
from .gibbs import check_scan
from .state import GibbsState

__all__ = ["PoissonGibbs"]


@dataclass(frozen=True)
class PoissonGibbs:
    """Poisson-Gibbs with rate ``lam`` (λ; the expected minibatch is about λ L_v / L + Σ φ'_f).

    >>> import relaxtorch.mcmc.factor as fg
    >>> g = fg.ising_grid(6, 6, beta=0.3, h=0.1)
    >>> st = fg.PoissonGibbs(lam=4.0).run(g, fg.PoissonGibbs(lam=4.0).init(g, seed=0), 20)
    >>> st.sweeps
    20
    """

    lam: float = 1.0
    scan: str = "systematic"
    track_energy: bool = True

    def __post_init__(self):
        check_rate("lam", self.lam)
        check_scan(self.scan)

    def init(self, graph, seed: int, x0=None) -> GibbsState:
        return start(graph, seed, x0, "poisson-gibbs")

    def run(self, graph, state: GibbsState, sweeps: int, *, record: bool = True, thin: int = 0) -> GibbsState:
        return run_minibatch(POISSON_GIBBS, graph, state, sweeps, record, thin, scan=self.scan, lam=float(self.lam),
                             lam2=1.0, track_energy=self.track_energy)
