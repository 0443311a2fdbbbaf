"""MCMC convergence diagnostics: effective sample size, split-R-hat, autocorrelation, MCSE.

Vehtari, Gelman, Simpson, Carpenter & Bürkner, "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis
2021.  Samples are shaped ``(chains, draws, *event)`` as in ArviZ; every statistic is
computed per event element and returned with shape ``event`` (a 0-d tensor for scalar
chains), as float64 on the samples' device (CPU or CUDA; computed in float64).

The estimators follow ArviZ (``arviz_stats.base.array_stats``) step for step, so the
two agree to rounding: chains are split in halves (the middle draw of an odd count is
dropped), ranks are averaged over ties and mapped to normal scores with Blom's offset
(3/8), autocovariances come from an FFT, and the autocorrelation sum is truncated by
Geyer's initial positive sequence made monotone (Geyer 1992).

Undefined results are NaN, as in ArviZ, not errors: fewer than 4 draws; R-hat of a single
chain (the split halves of one chain are not independent evidence of mixing); R-hat of a
constant element; any NaN in an element's draws.  A constant element has ESS equal to the
number of (split) draws.  Malformed input (not a tensor, fewer than 2 dimensions, no
chains or draws, complex dtype) raises ``ValueError``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["autocorrelation", "ess", "mcse", "rhat"]

_RESOLUTION = 1e-15  # numpy.finfo(float).resolution: ArviZ's test for a constant array
_CHUNK = 1 << 22  # elements of (chains, draws, columns) processed at once (bounds memory)


def _columns(samples, name: str = "samples") -> tuple[torch.Tensor, torch.Size]:
    """``samples`` as float64 of shape (chains, draws, K) and the event shape."""
    if not isinstance(samples, torch.Tensor):
        raise ValueError(f"Invalid {name}: {type(samples).__name__} (must be a torch.Tensor "
                         f"shaped (chains, draws, *event))")
    if samples.ndim < 2:
        raise ValueError(f"Invalid {name}: shape {tuple(samples.shape)} (must be (chains, draws, *event))")
    if samples.shape[0] < 1 or samples.shape[1] < 1:
        raise ValueError(f"Invalid {name}: shape {tuple(samples.shape)} (needs at least one chain and one draw)")
    if samples.is_complex():
        raise ValueError(f"Invalid {name}: dtype {samples.dtype} (must be real)")
    event = samples.shape[2:]
    x = samples.detach().to(torch.float64).reshape(samples.shape[0], samples.shape[1], -1)
    return x, event


def _chunks(x: torch.Tensor):
    """Column slices of ``x`` (chains, draws, K) of at most ``_CHUNK`` elements each."""
    step = max(1, _CHUNK // max(1, x.shape[0] * x.shape[1]))
    for i in range(0, x.shape[2], step):
        yield x[:, :, i:i + step]


def _fast_len(n: int) -> int:
    """The smallest 2·3·5-smooth integer >= n (an FFT length as fast as a power of two)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _split(x: torch.Tensor) -> torch.Tensor:
    """(C, D, K) -> (2C, D//2, K): each chain's first and last halves as separate chains."""
    half = x.shape[1] // 2
    return torch.cat([x[:, :half], x[:, x.shape[1] - half:]], dim=0)


def _sorted_columns(x: torch.Tensor) -> torch.Tensor:
    """All draws of each column, pooled over chains and sorted: (K, C*D)."""
    return x.reshape(-1, x.shape[2]).T.sort(dim=1).values


def _quantile(sorted_cols: torch.Tensor, prob: float) -> torch.Tensor:
    """NumPy's default ("linear", type 7) quantile of each row of an ascending (K, N) tensor."""
    n = sorted_cols.shape[1]
    h = (n - 1) * prob  # numpy's virtual index for "linear"
    lo = min(max(math.floor(h), 0), n - 1)
    hi = min(lo + 1, n - 1)
    t = h - math.floor(h)
    a, b = sorted_cols[:, lo], sorted_cols[:, hi]
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t  # numpy's _lerp


def _median(sorted_cols: torch.Tensor) -> torch.Tensor:
    """NumPy's median of each row of an ascending (K, N) tensor: the mean of the middle two
    for even N (computed as (a + b) / 2, so that the folded draws tie exactly as ArviZ's)."""
    n = sorted_cols.shape[1]
    if n % 2:
        return sorted_cols[:, n // 2]
    return (sorted_cols[:, n // 2 - 1] + sorted_cols[:, n // 2]) / 2


def _z_scale(x: torch.Tensor) -> torch.Tensor:
    """Rank-normalise each column over all chains and draws: Φ⁻¹((r − 3/8) / (N + 1/4)),
    with ranks r averaged over ties (Blom 1958; Vehtari et al. 2021, eq. 14)."""
    c, d, k = x.shape
    v = x.reshape(c * d, k).T  # (K, N)
    s, order = v.sort(dim=1)
    n = s.shape[1]
    idx = torch.arange(n, device=x.device).expand(k, n)
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    last = torch.ones_like(new)
    last[:, :-1] = new[:, 1:]
    start = torch.where(new, idx, 0).cummax(dim=1).values
    end = torch.where(last, idx, n - 1).flip(1).cummin(dim=1).values.flip(1)
    ranks = torch.empty_like(s).scatter_(1, order, (start + end).to(torch.float64) / 2 + 1)
    z = torch.special.ndtri((ranks - 0.375) / (n + 0.25))
    return z.T.reshape(c, d, k)


def _autocov(x: torch.Tensor) -> torch.Tensor:
    """Biased autocovariance of each chain at every lag, by FFT: (C, D, K) -> (C, D, K)."""
    d = x.shape[1]
    m = _fast_len(2 * d)
    f = torch.fft.rfft(x - x.mean(dim=1, keepdim=True), n=m, dim=1)
    return torch.fft.irfft(f * f.conj(), n=m, dim=1)[:, :d] / d


def _ess_core(x: torch.Tensor) -> torch.Tensor:
    """ESS of each column of (C, n, K) chains (Vehtari et al. 2021, eqs. 10-13; Geyer's
    initial monotone sequence), as ArviZ's ``_ess``."""
    c, n, k = x.shape
    size = c * n
    constant = (x.amax(dim=(0, 1)) - x.amin(dim=(0, 1))) < _RESOLUTION
    acov = _autocov(x)
    mean_var = acov[:, 0].mean(dim=0) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if c > 1:
        var_plus = var_plus + x.mean(dim=1).var(dim=0, correction=1)
    rho = (1.0 - (mean_var - acov.mean(dim=0)) / var_plus).T.contiguous()  # (K, n)
    finite = torch.isfinite(rho[:, :2]).all(dim=1)
    rho[:, 0] = 1.0
    kc = max((n - 3) // 2, 0)  # pairs 1..kc can be reached before the lag bound
    pairs = rho[:, 0:2 * kc + 1:2] + rho[:, 1:2 * kc + 2:2]  # (K, kc + 1): rho[2j] + rho[2j+1]
    nonpos = torch.cat([pairs[:, 1:] <= 0, torch.ones_like(pairs[:, :1], dtype=torch.bool)], dim=1)
    m = (nonpos.to(torch.int64).argmax(dim=1) + 1).clamp(max=kc)  # first non-positive pair, or kc
    m = torch.where(pairs[:, 0] > 0, m, 0)  # the number of leading positive pairs kept
    mono = pairs.cummin(dim=1).values
    kept = torch.arange(kc + 1, device=x.device) < m[:, None]
    rho_next = rho.gather(1, 2 * m[:, None])[:, 0]
    pair_next = pairs.gather(1, m[:, None])[:, 0]
    extra = torch.where((rho_next > 0) | (pair_next >= 0), rho_next, 0.0)
    tau = -1.0 + 2.0 * (mono * kept).sum(dim=1) + extra
    tau = tau.clamp(min=1.0 / math.log10(size))
    out = size / tau
    out = torch.where(finite, out, math.nan)
    return torch.where(constant, float(size), out)


def _nan_columns(x: torch.Tensor) -> torch.Tensor:
    return torch.isnan(x).any(dim=1).any(dim=0)


def _rhat_core(x: torch.Tensor) -> torch.Tensor:
    """Split-free potential scale reduction of each column of (C, n, K) (Gelman & Rubin 1992)."""
    n = x.shape[1]
    between = n * x.mean(dim=1).var(dim=0, correction=1)
    within = x.var(dim=1, correction=1).mean(dim=0)
    return torch.sqrt((between / within + n - 1) / n)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} (choose from {', '.join(map(repr, choices))})")


def _check_prob(prob) -> float:
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 < prob < 1:
        raise ValueError(f"Invalid prob: {prob!r} (must be in (0, 1))")
    return float(prob)


def _ess_chunk(x: torch.Tensor, method: str, prob: float) -> torch.Tensor:
    if method == "bulk":
        out = _ess_core(_z_scale(_split(x)))
    elif method == "mean":
        out = _ess_core(_split(x))
    else:  # tail: the smaller of the ESS of the indicators I(θ <= q_p) and I(θ <= q_{1-p})
        s = _sorted_columns(x)
        lo, hi = sorted((prob, 1.0 - prob))
        out = torch.minimum(*(_ess_core(_split((x <= _quantile(s, p)).to(torch.float64))) for p in (lo, hi)))
    return torch.where(_nan_columns(x), math.nan, out)


def ess(samples: torch.Tensor, *, method: str = "bulk", prob: float = 0.05) -> torch.Tensor:
    """Effective sample size of each event element of ``samples`` (chains, draws, *event).

    ``method="bulk"``: ESS of the rank-normalised split chains, for the mean and the
    centre of the distribution; ``"tail"``: the smaller ESS of the indicators of being
    below the ``prob`` and ``1 - prob`` quantiles (5% and 95% by default, as in Vehtari et
    al. 2021; ArviZ's xarray interface defaults to its ``ci_prob`` instead); ``"mean"``: ESS of
    the split chains without ranks (the one behind :func:`mcse`).  NaN with fewer than 4
    draws or where an element has a NaN draw.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4, 1000, generator=g, dtype=torch.float64)   # independent draws
    >>> bool(3400 < ess(x) < 4600)
    True
    """
    _check_choice("method", method, ("bulk", "tail", "mean"))
    prob = _check_prob(prob)
    x, event = _columns(samples)
    if x.shape[1] < 4:
        return torch.full(event, math.nan, dtype=torch.float64, device=x.device)
    return torch.cat([_ess_chunk(part, method, prob) for part in _chunks(x)]).reshape(event)


def _rhat_chunk(x: torch.Tensor) -> torch.Tensor:
    split = _split(x)
    bulk = _rhat_core(_z_scale(split))
    median = _median(_sorted_columns(split))
    tail = _rhat_core(_z_scale((split - median).abs()))
    out = torch.maximum(bulk, tail)  # NaN (a constant element) propagates
    return torch.where(_nan_columns(x), math.nan, out)


def rhat(samples: torch.Tensor) -> torch.Tensor:
    """Rank-normalised split-R-hat of each event element of ``samples`` (chains, draws, *event).

    The larger of the split-R-hat of the rank-normalised draws (bulk) and of the
    rank-normalised distances from the median (folded: tails and scale), Vehtari et al.
    2021, section 4.  Values near 1 (below 1.01, their recommendation) indicate mixed
    chains.  NaN for a single chain, fewer than 4 draws, a constant element or a NaN draw.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4, 1000, generator=g, dtype=torch.float64)
    >>> bool(rhat(x) < 1.01), bool(rhat(x + torch.arange(4.0)[:, None]) > 1.5)   # shifted chains
    (True, True)
    """
    x, event = _columns(samples)
    if x.shape[0] < 2 or x.shape[1] < 4:
        return torch.full(event, math.nan, dtype=torch.float64, device=x.device)
    return torch.cat([_rhat_chunk(part) for part in _chunks(x)]).reshape(event)


def autocorrelation(samples: torch.Tensor) -> torch.Tensor:
    """Autocorrelation of each chain at every lag, by FFT: ``(chains, draws, *event)`` in,
    the same shape out (float64), lag 0 equal to 1.  The biased estimator (each lag's sum
    divided by the number of draws), as ArviZ's ``autocorr``; NaN for a constant chain.

    >>> x = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    >>> autocorrelation(x).tolist()
    [[1.0, -0.75, 0.5, -0.25]]
    """
    x, event = _columns(samples)
    out = torch.cat([_autocov(part) for part in _chunks(x)], dim=2)
    out = out / out[:, :1]
    return out.reshape(x.shape[0], x.shape[1], *event)


def mcse(samples: torch.Tensor, *, stat: str = "mean") -> torch.Tensor:
    """Monte Carlo standard error of the posterior mean (``stat="mean"``) or standard
    deviation (``"sd"``) of each event element, from the split-chain ESS (``ess(method="mean")``);
    Vehtari et al. 2021, section 5 (the "sd" error by the delta method, as ArviZ).

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4, 2500, generator=g, dtype=torch.float64)   # sd 1, 10^4 draws
    >>> bool(0.009 < mcse(x) < 0.011)
    True
    """
    _check_choice("stat", stat, ("mean", "sd"))
    x, event = _columns(samples)
    if x.shape[1] < 4:
        return torch.full(event, math.nan, dtype=torch.float64, device=x.device)
    flat = x.reshape(-1, x.shape[2])
    n_eff = ess(samples, method="mean").reshape(-1)
    if stat == "mean":
        out = flat.std(dim=0, correction=1) / n_eff.sqrt()
    else:
        sq = (flat - flat.mean(dim=0)) ** 2
        evar = sq.mean(dim=0)
        varvar = ((sq ** 2).mean(dim=0) - evar ** 2) / n_eff
        out = torch.sqrt(varvar / evar / 4)
    return out.reshape(event)
