"""MIN-Gibbs, MGPMH and DoubleMIN-Gibbs (De Sa, Chen & Wong, "Minibatch Gibbs Sampling on Large
Graphical Models", ICML 2018).  No reference code exists; derived here from the paper.

Notation: factors shifted to φ'_f ∈ [0, M_f]; ζ(x) = Σ_f φ'_f(x) (p ∝ exp ζ); Ψ = Σ_f M_f;
L_v = Σ_{f ∋ v} M_f, L = max_v L_v.

**MIN-Gibbs** (λ).  Estimator: draw B ~ Poisson(λ) factors i.i.d. ∝ M_f, so factor f appears
s_f ~ Poisson(λ M_f / Ψ) times independently, and set ε(x) = Σ_f s_f log(1 + Ψ φ'_f(x) / (λ M_f)).
Since E[a^s] = exp(μ(a - 1)) for s ~ Poisson(μ), E[exp ε(x)] = Π_f exp(φ'_f(x)) = exp ζ(x): exp ε is
an unbiased, positive estimate of the unnormalised density.  The chain runs on (x, ε), whose target
π(x, ε) ∝ exp(ε) μ_x(ε) (μ_x: the estimator's law at x) has x-marginal ∝ exp ζ.  Updating v: keep
ε for the current value, draw a fresh independent ε_k ~ μ_{x[v:=k]} for every other value k, then
pick k ∝ exp ε_k and store its ε.  This is Gibbs on the augmented space (the candidates' ε are
exchangeable given which one is current), hence exact.  Cost: λ factor evaluations per other value
of x_v, independent of the degree; the paper needs λ = Θ(Ψ²) to match Gibbs's spectral gap.

**MGPMH** (λ), minibatch-Gibbs-proposal Metropolis-Hastings.  Draw s_f ~ Poisson(λ M_f / L) for
f ∋ v (B ~ Poisson(λ L_v / L) draws from v's alias table), form the unbiased local-energy estimate
u_k = Σ_f s_f (L / (λ M_f)) φ'_f(x[v:=k]), propose k ~ softmax(u), accept with
min(1, exp(ζ(y) - ζ(x) + u_{x_v} - u_k)).  The minibatch does not depend on the state, so the
proposal with its minibatch is symmetric in the needed sense: q_S(x→y)/q_S(y→x) = exp(u_k - u_{x_v})
(same normaliser), and MH with the exact ζ(y) - ζ(x) (one pass over v's factors, O(degree) but no
factor per value) is exact.  Cost O(D λ + degree) instead of Gibbs's O(D · degree).

**DoubleMIN-Gibbs** (λ₁, λ₂): MGPMH whose exact ζ(y) - ζ(x) is replaced by MIN-Gibbs's estimator on
the augmented state (x, ε): draw ε' ~ μ_y fresh (λ₂) and accept (y, ε') with
min(1, exp(ε' - ε + u_{x_v} - u_k)).  The augmented target exp(ε) μ_x(ε) makes the μ terms cancel,
so this is MH on (x, ε), exact; no pass over the degree at all.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._minibatch import check_rate, init_estimate, run_minibatch, start
from ._minibatch_kernels import DOUBLE_MIN, MGPMH as _MGPMH, MIN_GIBBS
from .gibbs import check_scan
from .state import GibbsState

__all__ = ["DoubleMINGibbs", "MGPMH", "MINGibbs"]


@dataclass(frozen=True)
class MINGibbs:
    """MIN-Gibbs with global rate ``lam`` (λ factors per estimate; think λ ~ Ψ², see
    ``_minibatch.total_max_energy``).

    >>> import relaxtorch.mcmc.factor as fg
    >>> g = fg.ising_grid(3, 3, beta=0.2, h=0.1)
    >>> s = fg.MINGibbs(lam=200.0)
    >>> s.run(g, s.init(g, seed=0), 5).sweeps
    5
    """

    lam: float = 100.0
    scan: str = "systematic"
    track_energy: bool = True

    def __post_init__(self):
        check_rate("lam", self.lam)
        check_scan(self.scan)

    def init(self, graph, seed: int, x0=None) -> GibbsState:
        return init_estimate(graph, start(graph, seed, x0, "min-gibbs"), float(self.lam))

    def run(self, graph, state: GibbsState, sweeps: int, *, record: bool = True, thin: int = 0) -> GibbsState:
        return run_minibatch(MIN_GIBBS, graph, state, sweeps, record, thin, scan=self.scan, lam=float(self.lam),
                             lam2=1.0, track_energy=self.track_energy)


@dataclass(frozen=True)
class MGPMH:
    """Minibatch-Gibbs-proposal MH with local rate ``lam`` (λ; think λ ~ L²); ``state.accepted``
    counts acceptances.

    >>> import relaxtorch.mcmc.factor as fg
    >>> g = fg.ising_grid(3, 3, beta=0.2, h=0.1)
    >>> s = fg.MGPMH(lam=10.0)
    >>> s.run(g, s.init(g, seed=0), 5).sweeps
    5
    """

    lam: float = 10.0
    scan: str = "systematic"
    track_energy: bool = True

    def __post_init__(self):
        check_rate("lam", self.lam)
        check_scan(self.scan)

    def init(self, graph, seed: int, x0=None) -> GibbsState:
        return start(graph, seed, x0, "mgpmh")

    def run(self, graph, state: GibbsState, sweeps: int, *, record: bool = True, thin: int = 0) -> GibbsState:
        return run_minibatch(_MGPMH, graph, state, sweeps, record, thin, scan=self.scan, lam=float(self.lam),
                             lam2=1.0, track_energy=self.track_energy)


@dataclass(frozen=True)
class DoubleMINGibbs:
    """DoubleMIN-Gibbs: MGPMH's proposal (local rate ``lam1``) with MIN-Gibbs's estimated acceptance
    (global rate ``lam2``).

    >>> import relaxtorch.mcmc.factor as fg
    >>> g = fg.ising_grid(3, 3, beta=0.2, h=0.1)
    >>> s = fg.DoubleMINGibbs(lam1=10.0, lam2=200.0)
    >>> s.run(g, s.init(g, seed=0), 5).sweeps
    5
    """

    lam1: float = 10.0
    lam2: float = 100.0
    scan: str = "systematic"
    track_energy: bool = True

    def __post_init__(self):
        check_rate("lam1", self.lam1)
        check_rate("lam2", self.lam2)
        check_scan(self.scan)

    def init(self, graph, seed: int, x0=None) -> GibbsState:
        return init_estimate(graph, start(graph, seed, x0, "double-min-gibbs"), float(self.lam2))

    def run(self, graph, state: GibbsState, sweeps: int, *, record: bool = True, thin: int = 0) -> GibbsState:
        return run_minibatch(DOUBLE_MIN, graph, state, sweeps, record, thin, scan=self.scan, lam=float(self.lam1),
                             lam2=float(self.lam2), track_energy=self.track_energy)
