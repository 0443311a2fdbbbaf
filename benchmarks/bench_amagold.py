"""AMAGOLD against SGHMC at step sizes where SGHMC is biased (issue 11, figure 2).

    python benchmarks/bench_amagold.py [--steps 20000] [--json PATH]

Bayesian logistic regression on synthetic data (N = 2000 points, 10 standard-normal features and a
bias column, prior N(0, 1) on each of the 11 weights), minibatches of 200, gradients with a control variate at the MAP (both samplers); every chain starts at the MAP.  (On scikit-learn's
breast-cancer data the standardized features are nearly collinear: with an identity mass matrix
neither sampler mixes in minutes there, and whitening them creates high-leverage points whose
minibatch gradients make AMAGOLD reject everything; a well-conditioned design isolates the
step-size bias.)  The
exact posterior comes from a long float64 full-data HMC run (Duane et al. 1987; the mass matrix is
the Hessian at the MAP, which keeps HMC exact and makes it mix in a few steps), written here in
NumPy, independent of relaxtorch.  For SGHMC (Chen, Fox & Guestrin, ICML 2014) and AMAGOLD (Zhang,
Cooper & De Sa, AISTATS 2020), at 3 step sizes η, the table gives

* the posterior-mean error: max over weights of |mean - exact| / exact sd, and the same in units of
  the combined Monte Carlo standard error (batch means; ``z`` columns);
* the covariance error: ‖Cov - exact‖_F / ‖exact‖_F, and max |var - exact var| / MCSE;
* AMAGOLD's acceptance rate, and the data touched per step (amortised: AMAGOLD's full-data energy
  every ``correction_every`` steps counts N points).

AMAGOLD is exact at every step size (its z columns stay within k = 4 MCSE); SGHMC's bias grows
with η.  Writes ``benchmarks/results/bench_amagold.json``.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.use_repo_src()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import relaxtorch.mcmc as mc  # noqa: E402
from relaxtorch.jobs._report import format_table  # noqa: E402

PRIOR_VAR, BATCH, FRICTION, CORRECTION_EVERY, K = 1.0, 200, 0.1, 5, 4.0


def data(n: int = 2000, d: int = 10, seed: int = 0):
    """Synthetic logistic-regression data: x ~ N(0, I) plus a bias column, y ~ Bernoulli(σ(xᵀw)) with
    w ~ N(0, I) (seeded; the same data every run)."""
    rng = np.random.default_rng(seed)
    x = np.hstack([rng.standard_normal((n, d)), np.ones((n, 1))])
    w = rng.standard_normal(d + 1)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ w)))).astype(np.float64)
    return x, y


# --- exact reference: full-data HMC in float64 (NumPy) --------------------------------------------

def energy_np(th, x, y):
    z = x @ th
    return 0.5 * th @ th / PRIOR_VAR + np.sum(np.logaddexp(0.0, z) - y * z)


def grad_energy_np(th, x, y):
    return th / PRIOR_VAR + x.T @ (1.0 / (1.0 + np.exp(-(x @ th))) - y)


def reference(x, y, draws: int, seed: int = 0):
    """Exact posterior draws by HMC with mass matrix H (the Hessian at the MAP), in whitened
    coordinates u = Lᵀ(θ - θ̂) (H = L Lᵀ): MH-corrected, so exact for any step."""
    th, h = map_estimate(x, y)
    chol = np.linalg.cholesky(h)
    to_theta = lambda u: th + np.linalg.solve(chol.T, u)  # noqa: E731
    u_energy = lambda u: energy_np(to_theta(u), x, y)  # noqa: E731
    u_grad = lambda u: np.linalg.solve(chol, grad_energy_np(to_theta(u), x, y))  # noqa: E731
    rng = np.random.default_rng(seed)
    u, eps, steps, out, acc = np.zeros(len(th)), 0.35, 8, [], 0
    e, g = u_energy(u), u_grad(u)
    for i in range(draws + 1000):
        p0 = rng.standard_normal(len(u))
        un, pn, gn = u.copy(), p0 - 0.5 * eps * g, g
        for s in range(steps):
            un = un + eps * pn
            gn = u_grad(un)
            pn = pn - (eps if s < steps - 1 else 0.5 * eps) * gn
        en = u_energy(un)
        if math.log(rng.random()) < e - en + 0.5 * (p0 @ p0 - pn @ pn):
            u, e, g = un, en, gn
            acc += i >= 1000
        if i >= 1000:
            out.append(to_theta(u))
    return np.array(out), acc / draws


# --- the samplers ----------------------------------------------------------------------------------

def problem(x, y, centre):
    """Minibatch gradients with a control variate at ``centre`` (Baker, Fearnhead, Fox & Nemeth,
    Stat. Comput. 2019; the same estimator for both samplers), closed form in float64, and the
    full-data energy U(θ)."""
    X, Y, c = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(centre)
    n = X.shape[0]
    full_c = X.T @ (Y - torch.sigmoid(X @ c))

    def grad(theta, idx):
        xb = X[idx]
        diff = torch.sigmoid(xb @ c) - torch.sigmoid(xb @ theta)
        return -theta / PRIOR_VAR + full_c + (n / len(idx)) * (xb.T @ diff)

    grad.evals_per_datum = 2

    def energy(theta):
        z = X @ theta
        return 0.5 * (theta @ theta) / PRIOR_VAR + (torch.nn.functional.softplus(z) - Y * z).sum()

    return grad, energy, n


def map_estimate(x, y):
    th = np.zeros(x.shape[1])
    for _ in range(50):  # Newton
        p = 1.0 / (1.0 + np.exp(-(x @ th)))
        h = x.T @ (x * (p * (1 - p))[:, None]) + np.eye(len(th)) / PRIOR_VAR
        th = th - np.linalg.solve(h, grad_energy_np(th, x, y))
    return th, h


def run(kernel, steps: int, eta: float, start, seed: int):
    gen = torch.Generator().manual_seed(seed)
    idx_all = torch.randint(N_DATA[0], (steps, BATCH), generator=torch.Generator().manual_seed(seed + 1))
    state = kernel.init(torch.from_numpy(start.copy()))
    out = np.empty((steps, len(start)))
    touched, info = 0, None
    for i in range(steps):
        state, info = kernel.step(gen, state, idx_all[i], eta)
        out[i] = state.position.numpy()
        touched += info.data_touched
    return out, touched / steps, getattr(info, "acceptance_rate", None)


N_DATA = [0]


def batch_means(f, n_batches=25):
    m = len(f) // n_batches
    b = f[: m * n_batches].reshape(n_batches, m, -1).mean(1)
    return f.mean(0), b.std(0, ddof=1) / math.sqrt(n_batches)


def compare(draws, ref):
    mu, sd = ref.mean(0), ref.std(0)
    m, m_se = batch_means(draws)
    rm, rm_se = batch_means(ref)
    v, v_se = batch_means((draws - mu) ** 2)
    rv, rv_se = batch_means((ref - mu) ** 2)
    cov, rcov = np.cov(draws.T), np.cov(ref.T)
    if not np.all(np.isfinite(draws)):
        return dict(mean_err_sd=math.inf, mean_z=math.inf, cov_rel_err=math.inf, var_z=math.inf)
    return dict(mean_err_sd=float(np.max(np.abs(m - rm) / sd)),
                mean_z=float(np.max(np.abs(m - rm) / np.hypot(m_se, rm_se))),
                cov_rel_err=float(np.linalg.norm(cov - rcov) / np.linalg.norm(rcov)),
                var_z=float(np.max(np.abs(v - rv) / np.hypot(v_se, rv_se))))


def main(argv=None) -> int:
    p = C.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=C.positive_int, default=20_000, help="steps per chain (10%% burn-in)")
    p.add_argument("--reference-draws", type=C.positive_int, default=20_000)
    p.add_argument("--etas", default="5e-4,1.5e-3,3e-3", help="SGHMC/AMAGOLD learning rates η")
    p.add_argument("--json", default=str(C.RESULTS / "bench_amagold.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    x, y = data()
    N_DATA[0] = len(x)
    ref, ref_acc = reference(x, y, a.reference_draws)
    print(f"reference: {len(ref)} HMC draws, acceptance {ref_acc:.2f}, {time.perf_counter() - t0:.0f} s")
    centre = map_estimate(x, y)[0]
    grad, energy, n = problem(x, y, centre)
    rows = []
    for eta in [float(e) for e in a.etas.split(",")]:
        for name, kernel in (("SGHMC", mc.SGHMCKernel(grad, friction=FRICTION)),
                             ("AMAGOLD", mc.AMAGOLDKernel(grad, energy, friction=FRICTION,
                                                          correction_every=CORRECTION_EVERY, data_size=n))):
            try:
                draws, touched, acc = run(kernel, a.steps, eta, centre, seed=7)
                res = compare(draws[a.steps // 10:], ref)
            except FloatingPointError as exc:
                res, touched, acc = dict(mean_err_sd=math.inf, mean_z=math.inf, cov_rel_err=math.inf,
                                         var_z=math.inf, diverged=str(exc)), BATCH, None
            rows.append(dict(sampler=name, eta=eta, acceptance=acc, data_per_step=touched, **res))
            print(f"  {name} eta={eta:g}: {res}", flush=True)
    info = C.machine()  # after the sampling (numba's thread pool, once started, slows torch here)
    print(C.describe(info))
    f = lambda v, d=3: "diverged" if v == math.inf else f"{v:.{d}f}"  # noqa: E731
    table = [[r["sampler"], f"{r['eta']:g}", f(r["mean_err_sd"]), f(r["mean_z"], 1), f(r["cov_rel_err"]),
              f(r["var_z"], 1), "-" if r["acceptance"] is None else f"{r['acceptance']:.2f}",
              f"{r['data_per_step']:.1f}",
              "yes" if max(r["mean_z"], r["var_z"]) <= K else "no"] for r in rows]
    print(format_table(["sampler", "eta", "mean err / sd", "mean z", "cov rel err", "var z", "accept",
                        "data/step", f"within {K:g} MCSE"], table))
    print(f"N = {n}, d = {x.shape[1]}, batch {BATCH}, friction {FRICTION}, AMAGOLD T = {CORRECTION_EVERY}; "
          f"{a.steps} steps per chain; {time.perf_counter() - t0:.0f} s")
    C.write_json(a.json, {"created": C.timestamp(), "machine": info, "reference_draws": len(ref),
                          "reference_acceptance": ref_acc, "steps": a.steps, "rows": rows})
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
