"""Speed of a sampling step: SGLD against SGD, 8-bit variance-corrected SGLD against float32 SGLD,
and relaxtorch's SGLD kernel against BlackJAX's (JAX on the CPU) on one logistic-regression posterior.

    python benchmarks/bench_sgmcmc_speed.py [--reps 30] [--json PATH]
    /path/to/venv-with-jax/bin/python benchmarks/bench_sgmcmc_speed.py     # adds the BlackJAX column

Claims (issue 11, figure 4), each timed interleaved in one process, medians and ratios:
1. an SGLD step (``rt.mcmc.SGLD``) costs at most 1.1x an SGD step (``torch.optim.SGD``) on an
   MLP 64-1024-1024-10 with batch 256 (forward, backward and the update, on digits-shaped data);
2. an 8-bit variance-corrected SGLD step (``rt.mcmc.SGLDLP``, FixedPoint(8, 6)) costs at most 1.5x
   a float32 SGLD step on that model;
3. relaxtorch's SGLD kernel step on a Bayesian logistic-regression posterior (N = 100,000, d = 100,
   batch 1000: draw the minibatch, its gradient, the update) costs at most 1.2x BlackJAX's
   ``blackjax.sgld`` step, jit-compiled (the same work, its minibatch drawn inside the jitted step).
BlackJAX is optional: without JAX the third row reads n/a.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.use_repo_src()

import torch  # noqa: E402

import relaxtorch as rt  # noqa: E402
import relaxtorch.mcmc  # noqa: E402,F401
from relaxtorch.jobs._report import format_table  # noqa: E402

try:
    import jax
    import jax.numpy as jnp
    import blackjax
except Exception as exc:  # JAX or BlackJAX absent
    jax = None
    JAX_MISSING = f"{type(exc).__name__}: {exc}"
else:
    JAX_MISSING = None

N_DIGITS, BATCH = 1797, 256


def mlp() -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                            torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.02, generator=g)
    return m


def train_step(model, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def mlp_rows(reps: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(BATCH, 64, generator=g), torch.randint(10, (BATCH,), generator=g)
    models = {k: mlp() for k in ("sgd", "sgld", "sgld_vc8")}
    opts = {"sgd": torch.optim.SGD(models["sgd"].parameters(), lr=1e-3),
            "sgld": rt.mcmc.SGLD(models["sgld"].parameters(), lr=1e-3, data_size=N_DIGITS, generator=0)}
    fmt = rt.FixedPoint(8, 6)
    lp = getattr(rt.mcmc, "SGLDLP", None)
    if lp is not None:
        opts["sgld_vc8"] = lp(models["sgld_vc8"].parameters(), lr=1e-3, data_size=N_DIGITS, fmt=fmt, generator=0)
    fns = {k: train_step(models[k], opts[k], x, y) if k in opts else None for k in models}
    t = C.time_interleaved(fns, reps=reps, warmup=3)
    med = {k: C.median_ms(v) for k, v in t.items()}
    # the optimizer step alone (gradients in place from the last forward+backward)
    t_opt = C.time_interleaved({"sgd": opts["sgd"].step, "sgld": opts["sgld"].step}, reps=reps, warmup=3)
    med_opt = {k: C.median_ms(v) for k, v in t_opt.items()}
    return [
        dict(claim="optimizer step alone: SGLD / SGD (same MLP; informative, no target)", baseline="SGD",
             contender="SGLD", baseline_ms=med_opt["sgd"], contender_ms=med_opt["sgld"],
             ratio=C.paired_ratio(t_opt["sgld"], t_opt["sgd"]), target=None),
        dict(claim="SGLD step / SGD step (MLP 64-1024-1024-10, batch 256)", baseline="SGD", contender="SGLD",
             baseline_ms=med["sgd"], contender_ms=med["sgld"], ratio=C.paired_ratio(t["sgld"], t["sgd"]), target=1.1),
        dict(claim="8-bit VC SGLD step / float32 SGLD step (same MLP)", baseline="SGLD float32",
             contender="SGLDLP FixedPoint(8,6), variance-corrected", baseline_ms=med["sgld"],
             contender_ms=med["sgld_vc8"], ratio=C.paired_ratio(t["sgld_vc8"], t["sgld"]) if t["sgld_vc8"] else None,
             target=1.5),
    ]


def logistic_data(n=100_000, d=100):
    g = torch.Generator().manual_seed(2)
    X = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g) / d ** 0.5
    y = (torch.rand(n, generator=g) < torch.sigmoid(X @ w)).float()
    return X, y


def relaxtorch_step(X, y, batch):
    n = X.shape[0]

    def log_prior(theta):
        return -0.5 * theta.square().sum()

    def log_lik(theta, b):
        xb, yb = b
        z = xb @ theta
        return yb * z - torch.nn.functional.softplus(z)

    kernel = rt.mcmc.SGLDKernel(rt.mcmc.grad_estimator(log_prior, log_lik, n))
    gen, batches = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    state = [kernel.init(torch.zeros(X.shape[1]))]

    def step():
        idx = torch.randint(n, (batch,), generator=batches)
        # index_select: the idiomatic row gather (X[idx] takes the generic advanced-indexing path, ~4x slower)
        state[0], _ = kernel.step(gen, state[0], (torch.index_select(X, 0, idx), torch.index_select(y, 0, idx)), 1e-5)
    return step


def blackjax_step(X, y, batch):
    Xj, yj = jnp.asarray(X.numpy()), jnp.asarray(y.numpy())
    n = X.shape[0]

    def log_prior(theta):
        return -0.5 * jnp.sum(theta ** 2)

    def log_lik(theta, b):
        xb, yb = b
        z = xb @ theta
        return jnp.sum(yb * z - jax.nn.softplus(z))

    sgld = blackjax.sgld(blackjax.sgmcmc.grad_estimator(log_prior, log_lik, n))

    @jax.jit
    def one(key, position):
        k_batch, k_step = jax.random.split(key)
        idx = jax.random.randint(k_batch, (batch,), 0, n)
        return sgld.step(k_step, position, (Xj[idx], yj[idx]), 1e-5)

    state = {"pos": sgld.init(jnp.zeros(X.shape[1])), "key": jax.random.key(0)}
    one(state["key"], state["pos"]).block_until_ready()  # compile, untimed

    def step():
        state["key"], k = jax.random.split(state["key"])
        state["pos"] = one(k, state["pos"])
        state["pos"].block_until_ready()
    return step


def jax_row(reps: int) -> dict:
    X, y = logistic_data()
    fns = {"relaxtorch": relaxtorch_step(X, y, 1000), "blackjax": blackjax_step(X, y, 1000) if jax else None}
    t = C.time_interleaved(fns, reps=reps * 10, warmup=20)
    med = {k: C.median_ms(v) for k, v in t.items()}
    return dict(claim="relaxtorch SGLD kernel step / BlackJAX sgld step (logistic regression, N=1e5, d=100, "
                      "batch 1000)", baseline="BlackJAX (jit)", contender="relaxtorch SGLDKernel",
                baseline_ms=med["blackjax"], contender_ms=med["relaxtorch"],
                ratio=C.paired_ratio(t["relaxtorch"], t["blackjax"]) if jax else None, target=1.2)


def main(argv=None) -> int:
    p = C.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=C.positive_int, default=30)
    p.add_argument("--threads", type=C.positive_int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--json", default=str(C.RESULTS / "bench_sgmcmc_speed.json"))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"jax: {jax.__version__ if jax else JAX_MISSING}; blackjax: "
          f"{getattr(blackjax, '__version__', '?') if jax else '-'}")
    t0 = time.perf_counter()
    rows = mlp_rows(a.reps) + [jax_row(a.reps)]
    # after the timing: numba.get_num_threads() (inside machine()) starts numba's thread pool,
    # which slows torch's later CPU work several-fold on this machine (measured: 29 -> 162 ms per MLP step)
    info = C.machine(extra_packages=("jax", "blackjax"))
    print(C.describe(info))
    table = [[r["claim"], C.fmt_ms(r["baseline_ms"]), C.fmt_ms(r["contender_ms"]), C.fmt_ratio(r["ratio"]),
              "-" if r["target"] is None else f"<= {r['target']}x " + (
                  "n/a" if r["ratio"] is None else "yes" if r["ratio"] <= r["target"] else "NO")]
             for r in rows]
    print(format_table(["claim", "baseline ms", "contender ms", "ratio (paired median)", "target"], table))
    print(f"timed in {time.perf_counter() - t0:.0f} s")
    C.write_json(a.json, {"created": C.timestamp(), "machine": info, "rows": rows})
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
