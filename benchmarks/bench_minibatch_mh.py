"""Figure 1: exact minibatch MH -- TunaMH vs full-data MH, TFMH and FlyMC: ESS per second, batch size.

Two seeded posteriors with N data (default 10^6, d = 10, float64): Bayesian logistic regression
and robust linear regression with a Student-t likelihood (ν = 4), both with a N(0, 10² I) prior.
Every kernel is a Gaussian random walk started at the MAP.  The base step is
``σ0 = 2.38 s / √d`` (s: the Laplace approximation's mean posterior sd), the classic optimum for
full MH; each kernel uses a fixed multiple of it (``STEP`` below, chosen once by hand: TFMH's
factorised acceptance needs smaller steps).  TunaMH and TFMH use the control-variate bounds of
``relaxtorch.mcmc.mh.models`` (a Taylor split at the MAP); the row "TunaMH (Lipschitz)" uses the
TunaMH paper's plain Lipschitz bound for reference.  FlyMC uses MAP-tuned bounds (Jaakkola-Jordan
for the logistic likelihood; the tangent bound of log(1+u) for the Student-t one).

The kernels run interleaved: ``--rounds`` rounds, each giving every kernel ``--seconds / rounds``
of CPU time of this process (``--clock wall`` for wall-clock time; one torch thread), the chains continuing from round to round (machine load hits all alike).
ESS is the minimum over the d coordinates of a Geyer initial-monotone-sequence estimate from the
FFT autocorrelation (a private helper: ``relaxtorch.mcmc.ess`` is being written on another
branch), after discarding the first 10% of each chain.  ESS/s divides by the (CPU) seconds of sampling.

    python benchmarks/bench_minibatch_mh.py                   # about 4 minutes on 2 cores
    python benchmarks/bench_minibatch_mh.py --n 100000 --seconds 10   # quick
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _common import ArgumentParser, RESULTS, describe, machine, positive_int, timestamp, write_json  # noqa: E402
from relaxtorch.jobs._report import format_table  # noqa: E402
from relaxtorch.mcmc.mh import (TFMH, FlyMC, FullMH, LogisticRegression, RobustLinearRegression,  # noqa: E402
                                TunaMH, synthetic_logistic, synthetic_robust)

STEP = {"full MH": 1.0, "TunaMH": 1.0, "TFMH": 0.4, "FlyMC": 1.0, "TunaMH (Lipschitz)": 0.1}


def ess_min(chain: np.ndarray) -> float:
    """min over coordinates of n / τ, τ from Geyer's initial monotone sequence (FFT autocorrelation)."""
    n = chain.shape[0]
    out = []
    for x in chain.T:
        x = x - x.mean()
        if not np.any(x):
            out.append(0.0)
            continue
        f = np.fft.rfft(x, 2 * n)
        acf = np.fft.irfft(f * np.conj(f))[:n]
        acf = acf / acf[0]
        pairs = acf[: n - n % 2].reshape(-1, 2).sum(1)
        k = np.argmax(pairs < 0) if np.any(pairs < 0) else len(pairs)
        pairs = np.minimum.accumulate(pairs[:k])
        tau = max(-1.0 + 2.0 * pairs.sum(), 1e-12)
        out.append(n / tau)
    return float(min(out))


def build(problem: str, n: int, d: int, chi: float, q: float):
    if problem == "logistic":
        X, y, _ = synthetic_logistic(n, d, seed=0, dtype=torch.float64)
        model = LogisticRegression(X, y, prior_scale=10.0)
    else:
        X, y, _ = synthetic_robust(n, d, nu=4.0, seed=0, dtype=torch.float64)
        model = RobustLinearRegression(X, y, nu=4.0, scale=1.0, prior_scale=10.0)
    th = model.map_estimate()
    z = X @ th
    H = (X.T * model.curvature(model.y, z)) @ X + torch.eye(d, dtype=torch.float64) / 100.0
    sd = float(torch.linalg.inv(H).diagonal().sqrt().mean())
    cv = model.with_center(th)
    kernels = {"full MH": FullMH(model), "TunaMH": TunaMH(cv, chi=chi), "TFMH": TFMH(cv),
               "FlyMC": FlyMC(model.flymc_bound(th), q=q), "TunaMH (Lipschitz)": TunaMH(model, chi=chi)}
    return th, sd, kernels


def run(problem, args):
    th, sd, kernels = build(problem, args.n, args.d, args.chi, args.q)
    sigma0 = 2.38 * sd / math.sqrt(args.d)
    gens = {name: torch.Generator().manual_seed(i) for i, name in enumerate(kernels)}
    states = {name: (k.init(th.clone(), gens[name]) if isinstance(k, FlyMC) else k.init(th.clone()))
              for name, k in kernels.items()}
    samples = {name: [] for name in kernels}
    acc = {name: 0 for name in kernels}
    touched = {name: 0 for name in kernels}
    secs = {name: 0.0 for name in kernels}
    per_round = args.seconds / args.rounds
    clock = time.process_time if args.clock == "process" else time.perf_counter
    for _ in range(args.rounds):
        for name, k in kernels.items():
            step, st, g, out = sigma0 * STEP[name], states[name], gens[name], samples[name]
            t0 = clock()
            while clock() - t0 < per_round:
                for _ in range(10):
                    st, info = k.step(g, st, None, step)
                    out.append(st.position)
                    acc[name] += info.accepted
                    touched[name] += info.data_touched
            secs[name] += clock() - t0
            states[name] = st
    rows, records = [], []
    base = None
    for name in kernels:
        chain = torch.stack(samples[name]).numpy()
        steps = chain.shape[0]
        ess = ess_min(chain[steps // 10:])
        ess_s = ess / (secs[name] * 0.9)
        base = ess_s if name == "full MH" else base
        rec = {"sampler": name, "steps": steps, "seconds": secs[name], "step_size": sigma0 * STEP[name],
               "acceptance": acc[name] / steps, "mean_batch": touched[name] / steps,
               "batch_fraction": touched[name] / steps / args.n, "ess_min": ess, "ess_per_s": ess_s,
               "ms_per_step": 1e3 * secs[name] / steps}
        records.append(rec)
    for rec in records:
        rec["vs_full_mh"] = rec["ess_per_s"] / base if base else None
        rows.append([rec["sampler"], rec["steps"], f"{rec['acceptance']:.2f}", f"{rec['mean_batch']:.0f}",
                     f"{100 * rec['batch_fraction']:.3f}%", f"{rec['ms_per_step']:.3f}", f"{rec['ess_min']:.0f}",
                     f"{rec['ess_per_s']:.2f}", f"{rec['vs_full_mh']:.1f}x"])
    return records, rows, sigma0


def main():
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=positive_int, default=1_000_000, help="data points (default 10^6)")
    p.add_argument("--d", type=positive_int, default=10, help="dimension (default 10)")
    p.add_argument("--seconds", type=float, default=24.0, help="sampling seconds per kernel and problem")
    p.add_argument("--rounds", type=positive_int, default=8, help="interleaved rounds")
    p.add_argument("--chi", type=float, default=0.01, help="TunaMH's χ")
    p.add_argument("--q", type=float, default=1e-3, help="FlyMC's dark-to-bright proposal probability")
    p.add_argument("--problems", default="logistic,robust")
    p.add_argument("--clock", choices=["process", "wall"], default="process",
                   help="process: CPU seconds of this process (steady on a shared machine); wall: perf_counter")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=str(RESULTS / "bench_minibatch_mh.json"))
    args = p.parse_args()
    info = machine()  # before set_num_threads: starting numba's OpenMP pool here resets torch's thread count
    torch.set_num_threads(args.threads)
    info["torch_threads"] = torch.get_num_threads()
    print(describe(info))
    payload = {"benchmark": "bench_minibatch_mh", "time": timestamp(), "machine": info, "args": vars(args),
               "load_before": os.getloadavg(), "problems": {}}
    headers = ["sampler", "steps", "accept", "mean batch", "batch/N", "ms/step", "ESS (min)", "ESS/s",
               "vs full MH"]
    for problem in args.problems.split(","):
        t0 = time.perf_counter()
        records, rows, sigma0 = run(problem, args)
        print(f"\n{problem} regression, N = {args.n}, d = {args.d}, σ0 = {sigma0:.3g}, χ = {args.chi}, "
              f"FlyMC q = {args.q} ({time.perf_counter() - t0:.0f} s)")
        print(format_table(headers, rows))
        tuna = next(r for r in records if r["sampler"] == "TunaMH")
        exact = [r for r in records if r["sampler"] in ("full MH", "TFMH", "FlyMC", "TunaMH")]
        best = max(exact, key=lambda r: r["ess_per_s"])["sampler"]
        met = best == "TunaMH" and tuna["vs_full_mh"] >= 5 and tuna["batch_fraction"] <= 0.01
        print(f"target (TunaMH best exact ESS/s, >= 5x full MH, mean batch <= 1% of N): "
              f"{'met' if met else 'NOT met'} (best: {best}, {tuna['vs_full_mh']:.1f}x, "
              f"{100 * tuna['batch_fraction']:.3f}% of N)")
        payload["problems"][problem] = {"sigma0": sigma0, "records": records, "target_met": met}
    payload["load_after"] = os.getloadavg()
    print(f"\nload average before/after: {payload['load_before']} / {payload['load_after']}")
    print(f"wrote {write_json(args.json, payload)}")


if __name__ == "__main__":
    main()
