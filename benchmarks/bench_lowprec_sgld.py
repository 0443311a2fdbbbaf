"""Low-precision SGLD against float32 SGLD: Bayesian linear regression and a Bayesian MLP (issue 11, figure 3).

    python benchmarks/bench_lowprec_sgld.py [--seeds 3] [--blr-steps 3000] [--bnn-steps 1000] [--json PATH]

Claim (Zhang, Wilson & De Sa, "Low-Precision Stochastic Gradient Langevin Dynamics", ICML
2022): at 8-bit fixed point, variance-corrected SGLDLP-L matches float32 SGLD within noise
(posterior variance, test NLL; 3 seeds), while naive SGLDLP-L is measurably worse.  Also
run: 6-bit fixed point and 8-bit block floating point (one block per chain and tensor),
and SGLDLP-F (float32 accumulator, gradients at the rounded weights).

Problems:
  * Bayesian linear regression on scikit-learn's diabetes (75/25 split, standardized with
    the training statistics, a bias column), noise variance fixed at the least-squares
    residual variance, prior N(0, 1): the posterior is Gaussian and known in closed form.
    Chains start at the posterior mean.  Reported: the sampled variance per coordinate over
    the exact one (mean over the 11 coordinates; 1 is exact), and the test NLL of the
    posterior predictive (the exact posterior's is printed above the table).
  * A Bayesian MLP 64-H-10 (ReLU) on scikit-learn's digits (relaxtorch's embedded split),
    prior N(0, 1) on every weight, minibatch 64.  Reported: the test NLL and accuracy of the
    posterior predictive (probabilities averaged over the kept samples), and the mean
    per-parameter sample variance over float32 SGLD's.

Every sampler sees the same minibatches and the same initial weights (common random
numbers), so differences between rows are the samplers'.  ``step_size`` is ε of
θ ← θ + (ε/2) ∇log p̂ + N(0, ε).  The float32 SGLD baseline is that update written out here
(the SG-MCMC kernels live on another branch for now).  Statistics are the mean and standard
deviation over the seeds; a seed is ``--chains`` independent chains (own minibatches, noise
and initial weights), and all seeds' chains run side by side in one tensor (one block per
chain for BFP8).
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.use_repo_src()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from relaxtorch._seeding import derive, numpy_rng  # noqa: E402
from relaxtorch.jobs._report import format_table  # noqa: E402
from relaxtorch.mcmc import SGLDLPKernel  # noqa: E402
from relaxtorch.numbers import BlockFloat, FixedPoint  # noqa: E402

FORMATS = {"8-bit fixed (FL 6)": FixedPoint(8, 6), "6-bit fixed (FL 4)": FixedPoint(6, 4),
           "BFP8": BlockFloat(8, dim=0)}
SAMPLERS = (("SGLDLP-F", "full", True), ("SGLDLP-L naive", "low", False), ("VC SGLDLP-L", "low", True))


# ------------------------------------------------------------------------------------ samplers

class Float32SGLD:
    """θ + (ε/2) g + sqrt(ε) ξ in float32 (Welling & Teh, ICML 2011): the baseline."""

    name = "SGLD float32"

    def __init__(self, grad_fn):
        self.grad_fn = grad_fn

    def init(self, position):
        return {k: v.clone() for k, v in position.items()}

    def step(self, generator, state, minibatch, eps):
        g = self.grad_fn(state, minibatch)
        sd = math.sqrt(eps)
        return {k: v + 0.5 * eps * g[k] + sd * torch.randn(v.shape, generator=generator) for k, v in state.items()}

    @staticmethod
    def position(state):
        return state


def _lp(grad_fn, fmt, acc, vc):
    k = SGLDLPKernel(grad_fn, fmt, accumulator=acc, variance_correction=vc)

    class Wrapped:
        name = k.name

        def init(self, position):
            return k.init(position)

        def step(self, generator, state, minibatch, eps):
            return k.step(generator, state, minibatch, eps)[0]

        @staticmethod
        def position(state):
            return state.position

    return Wrapped()


def _run_chain(sampler, x0, batches, eps, seed, burn, thin):
    """Samples (a list of position dicts, detached copies) after ``burn`` steps, every ``thin``."""
    g = torch.Generator().manual_seed(derive(seed, "sampler noise"))
    s = sampler.init(x0)
    kept = []
    for t, batch in enumerate(batches, start=1):
        s = sampler.step(g, s, batch, eps)
        if t > burn and (t - burn) % thin == 0:
            kept.append({k: v.clone() for k, v in sampler.position(s).items()})
    return kept


def _samplers(grad_fn):
    out = [("float32", None, Float32SGLD(grad_fn))]
    for fname, fmt in FORMATS.items():
        for label, acc, vc in SAMPLERS:
            out.append((fname, fmt, _lp(grad_fn, fmt, acc, vc)))
    return out


# ----------------------------------------------------------------------- Bayesian linear regression

def _diabetes():
    from sklearn.datasets import load_diabetes
    X, y = load_diabetes(return_X_y=True)
    perm = numpy_rng(0, "split").permutation(len(X))
    n_test = int(round(0.25 * len(X)))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    mx, sx, my, sy = X[tr].mean(0), X[tr].std(0), y[tr].mean(), y[tr].std()
    def prep(idx):
        return np.c_[(X[idx] - mx) / sx, np.ones(len(idx))], (y[idx] - my) / sy
    return prep(tr), prep(te)


def blr(args, seeds):
    (Xtr, ytr), (Xte, yte) = _diabetes()
    n, d = Xtr.shape
    w_ls = np.linalg.lstsq(Xtr, ytr, rcond=None)[0]
    s2 = float(np.sum((ytr - Xtr @ w_ls) ** 2) / (n - d))  # the known noise variance
    prec = Xtr.T @ Xtr / s2 + np.eye(d)  # prior N(0, I)
    cov = np.linalg.inv(prec)
    mu = cov @ Xtr.T @ ytr / s2
    exact_nll = float(np.mean(0.5 * np.log(2 * np.pi * (s2 + np.einsum("id,de,ie->i", Xte, cov, Xte)))
                              + 0.5 * (yte - Xte @ mu) ** 2 / (s2 + np.einsum("id,de,ie->i", Xte, cov, Xte))))
    X, Y = torch.tensor(Xtr, dtype=torch.float32), torch.tensor(ytr, dtype=torch.float32)
    Xt, Yt = torch.tensor(Xte, dtype=torch.float32), torch.tensor(yte, dtype=torch.float32)
    B, C = args.batch, args.chains

    def grad_fn(pos, idx):  # ∇log p̂ for C chains, each with its own minibatch idx[c]
        w = pos["w"]
        Xb, Yb = X[idx], Y[idx]  # (C, B, d), (C, B)
        r = Yb - torch.einsum("cbd,cd->cb", Xb, w)
        return {"w": -w + (n / B / s2) * torch.einsum("cbd,cb->cd", Xb, r)}

    rows, S = {}, len(seeds)
    gb = torch.Generator().manual_seed(derive(seeds[0], "minibatches"))
    batches = [torch.randint(0, n, (S * C, B), generator=gb) for _ in range(args.blr_steps)]
    x0 = {"w": torch.tensor(mu, dtype=torch.float32).repeat(S * C, 1)}
    for label, fmt, sampler in _samplers(grad_fn):
        kept = _run_chain(sampler, x0, batches, args.blr_eps, seeds[0], args.blr_steps // 10, 10)
        W_all = torch.stack([k["w"] for k in kept]).double()  # (draws, seeds * chains, d)
        per_seed = []
        for i in range(S):
            W = W_all[:, i * C:(i + 1) * C]
            var = W.var(dim=0).mean(dim=0).numpy()  # within-chain variance, averaged over chains
            preds = torch.einsum("td,scd->sct", Xt.double(), W).reshape(-1, len(Yt))
            logp = -0.5 * math.log(2 * math.pi * s2) - 0.5 * (Yt.double() - preds) ** 2 / s2
            nll = -(torch.logsumexp(logp, 0) - math.log(len(preds))).mean().item()
            per_seed.append({"var_ratio": float(np.mean(var / np.diag(cov))), "test_nll": nll})
        rows[(label, sampler.name)] = per_seed
        print(f"  blr {label:18s} {sampler.name:16s} var/exact {_ms([r['var_ratio'] for r in per_seed])}  "
              f"NLL {_ms([r['test_nll'] for r in per_seed], 4)}", flush=True)
    return {"exact_test_nll": exact_nll, "noise_var": s2, "eps": args.blr_eps, "steps": args.blr_steps,
            "rows": rows}


# --------------------------------------------------------------------------------- Bayesian MLP

def bnn(args, seeds):
    from relaxtorch.data import load_dataset
    ds = load_dataset("digits", seed=0)
    X, Y, Xt, Yt = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    n, H, B, C = len(X), args.hidden, args.batch, args.chains_bnn

    def forward(p, x):  # x (C, b, 64) -> logits (C, b, 10)
        h = torch.relu(torch.baddbmm(p["b1"], x, p["W1"]))
        return torch.baddbmm(p["b2"], h, p["W2"])

    def grad_fn(pos, idx):
        with torch.enable_grad():
            p = {k: v.detach().requires_grad_(True) for k, v in pos.items()}
            logits = forward(p, X[idx])
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), Y[idx].reshape(-1), reduction="sum")
            log_post = -(n / B) * nll - 0.5 * sum((v * v).sum() for v in p.values())
            grads = torch.autograd.grad(log_post, list(p.values()))
        return dict(zip(p.keys(), grads))

    rows, base_var, S = {}, {}, len(seeds)
    gi = torch.Generator().manual_seed(derive(seeds[0], "init"))
    x0 = {"W1": torch.randn(S * C, 64, H, generator=gi) / 8.0, "b1": torch.zeros(S * C, 1, H),
          "W2": torch.randn(S * C, H, 10, generator=gi) / math.sqrt(H), "b2": torch.zeros(S * C, 1, 10)}
    gb = torch.Generator().manual_seed(derive(seeds[0], "minibatches"))
    batches = [torch.randint(0, n, (S * C, B), generator=gb) for _ in range(args.bnn_steps)]
    for label, fmt, sampler in _samplers(grad_fn):
        kept = _run_chain(sampler, x0, batches, args.bnn_eps, seeds[0], args.bnn_steps // 2, 10)
        per_seed = []
        with torch.no_grad():
            xt = Xt.expand(S * C, -1, -1)
            probs_all = torch.stack([torch.softmax(forward(k, xt), -1) for k in kept]).mean(0)  # (S*C, T, 10)
        flat_all = torch.stack([torch.cat([v.reshape(S * C, -1) for v in k.values()], 1) for k in kept]).double()
        for i in range(S):
            probs = probs_all[i * C:(i + 1) * C].mean(0)
            nll = -torch.log(probs[torch.arange(len(Yt)), Yt].clamp_min(1e-12)).mean().item()
            acc = (probs.argmax(-1) == Yt).double().mean().item()
            pvar = flat_all[:, i * C:(i + 1) * C].var(dim=0).mean().item()
            per_seed.append({"test_nll": nll, "test_acc": acc, "param_var": pvar})
        if fmt is None:
            base_var = [r["param_var"] for r in per_seed]
        for r, b in zip(per_seed, base_var):
            r["var_ratio"] = r["param_var"] / b
        rows[(label, sampler.name)] = per_seed
        print(f"  bnn {label:18s} {sampler.name:16s} var/SGLD {_ms([r['var_ratio'] for r in per_seed])}  "
              f"NLL {_ms([r['test_nll'] for r in per_seed], 4)}  acc {_ms([r['test_acc'] for r in per_seed])}",
              flush=True)
    return {"eps": args.bnn_eps, "steps": args.bnn_steps, "hidden": H, "rows": rows}


# ------------------------------------------------------------------------------------------ report

def _ms(xs, digits=3):
    m = statistics.fmean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _verdicts(rows, metric, base_key):
    """Per row: the difference from float32 SGLD in units of the seeds' combined standard error."""
    base = [r[metric] for r in rows[base_key]]
    out = {}
    for key, per in rows.items():
        xs = [r[metric] for r in per]
        k = len(xs)
        se = math.sqrt((statistics.variance(xs) + statistics.variance(base)) / k) if k > 1 else float("nan")
        out[key] = (statistics.fmean(xs) - statistics.fmean(base)) / se if se > 0 else 0.0
    return out


def parse_args(argv=None):
    p = C.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--seeds", type=C.positive_int, default=3, help="seeds (default 3)")
    p.add_argument("--chains", type=C.positive_int, default=8, help="chains per seed, linear regression (default 8)")
    p.add_argument("--chains-bnn", type=C.positive_int, default=1, help="chains per seed, MLP (default 1)")
    p.add_argument("--batch", type=C.positive_int, default=64, help="minibatch size (default 64)")
    p.add_argument("--blr-steps", type=C.positive_int, default=3000, help="steps, linear regression (default 3000)")
    p.add_argument("--blr-eps", type=float, default=1e-4, help="step size ε, linear regression (default 1e-4)")
    p.add_argument("--bnn-steps", type=C.positive_int, default=1000, help="steps, MLP (default 1000)")
    p.add_argument("--bnn-eps", type=float, default=1e-4, help="step size ε, MLP (default 1e-4; lr 0.067 on the "
                   "mean loss)")
    p.add_argument("--hidden", type=C.positive_int, default=32, help="MLP hidden width (default 32)")
    p.add_argument("--only", choices=("blr", "bnn"), help="run one problem")
    p.add_argument("--threads", type=C.positive_int, default=1, help="torch threads (default 1: small tensors)")
    p.add_argument("--json", default=str(C.RESULTS / "bench_lowprec_sgld.json"),
                   help="where to write the results (default benchmarks/results/bench_lowprec_sgld.json)")
    args = p.parse_args(argv)
    for name in ("blr_eps", "bnn_eps"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            C.fail(f"Invalid --{name.replace('_', '-')}: {v!r} (must be > 0)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = C.machine(None)
    print(C.describe(info))
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    results, tables = {}, []
    problems = [("blr", blr), ("bnn", bnn)] if args.only is None else [(args.only, {"blr": blr, "bnn": bnn}[args.only])]
    for name, fn in problems:
        print(f"{name}:", flush=True)
        res = fn(args, seeds)
        base_key = ("float32", "SGLD float32")
        z_nll = _verdicts(res["rows"], "test_nll", base_key)
        z_var = _verdicts(res["rows"], "var_ratio", base_key)
        table = []
        for key, per in res["rows"].items():
            row = [key[0], key[1], _ms([r["var_ratio"] for r in per]), f"{z_var[key]:+.1f}",
                   _ms([r["test_nll"] for r in per], 4), f"{z_nll[key]:+.1f}"]
            if name == "bnn":
                row.append(_ms([r["test_acc"] for r in per]))
            table.append(row)
        heads = ["format", "sampler", "var / exact" if name == "blr" else "var / SGLD", "z", "test NLL", "z"]
        if name == "bnn":
            heads.append("test acc")
        title = (f"Bayesian linear regression (diabetes), ε={res['eps']:g}, {res['steps']} steps, exact posterior "
                 f"test NLL {res['exact_test_nll']:.4f}" if name == "blr" else
                 f"Bayesian MLP 64-{res['hidden']}-10 (digits), ε={res['eps']:g}, {res['steps']} steps")
        tables.append((title, format_table(heads, table, align="llrrrr" + ("r" if name == "bnn" else ""))))
        res["rows"] = [{"format": k[0], "sampler": k[1], "per_seed": v, "z_var": z_var[k], "z_nll": z_nll[k]}
                       for k, v in res["rows"].items()]
        results[name] = res
    elapsed = time.perf_counter() - t0
    print(f"\n{len(seeds)} seeds; z = (row - float32 SGLD) / combined standard error over seeds; {elapsed:.0f} s")
    for title, t in tables:
        print(f"\n{title}\n{t}")
    payload = {"benchmark": "bench_lowprec_sgld",
               "claim": "8-bit VC SGLDLP-L matches float32 SGLD within noise (posterior variance, test NLL, "
                        "3 seeds); naive SGLDLP-L is measurably worse",
               "timestamp": C.timestamp(), "machine": info, "elapsed_s": elapsed,
               "config": {k: v for k, v in vars(args).items() if k != "json"},
               "formats": {k: repr(v) for k, v in FORMATS.items()}, "results": results}
    print(f"\nwrote {C.write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
