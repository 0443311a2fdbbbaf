"""Figure 4 of issue 12: time per variable update against the degree, Gibbs vs MIN-Gibbs and MGPMH.

De Sa, Chen & Wong (ICML 2018), "Minibatch Gibbs Sampling on Large Graphical Models": on a
graph of maximum degree Delta whose total factor bound L = max_i sum_{f touching i} M_f stays
fixed, MIN-Gibbs evaluates a Poisson minibatch of expected size lambda ~ L^2 per candidate value,
independent of Delta.  MGPMH draws its proposal from such a minibatch too, but its exact MH ratio
is one pass over the variable's Delta factors: O(Delta + D lambda) by the paper's own count, so
it cannot be flat; it beats the textbook Gibbs update, O(D Delta) factor evaluations, but not
relaxtorch's Gibbs on pairwise Potts factors, which adds each neighbour's weight to the one value
it favours (O(Delta + D)) -- the baseline here.

The graphs: dense Potts models (``random_potts``), the complete graph on Delta + 1 variables (every variable
has degree Delta), D values, every edge a POTTS factor of weight ``L / Delta`` (so the total bound
per variable is L for every Delta: the regime the minibatch samplers are for), Delta = 100 ... 10,000.
For each Delta every sampler runs for about ``--seconds`` seconds (interleaved, several
repetitions, medians) and the table gives nanoseconds per variable update and the ratios; the
cross-over is the degree above which Gibbs is slower than each minibatch sampler
(log-log interpolation between the measured degrees).

    python benchmarks/bench_min_gibbs.py                          # the claim
    python benchmarks/bench_min_gibbs.py --degrees 100,300,1000    # quick
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import RESULTS, describe, machine, write_json  # noqa: E402

from relaxtorch.jobs._report import format_table  # noqa: E402


def dense_potts(degree: int, D: int, L: float):
    """A degree-regular D-state Potts model on degree + 1 sites (the complete graph): every site has
    ``degree`` POTTS factors of weight L / degree, so the total bound per site is L for every degree."""
    from relaxtorch.mcmc.factor.builders import random_potts
    return random_potts(degree + 1, D, degree, L / degree, seed=0)


def ns_per_update(sampler, graph, state, seconds: float):
    """Run whole sweeps for about ``seconds``; (state, ns per variable update)."""
    n = graph.num_variables
    before, t0, sweeps = int(state.updates), time.perf_counter(), 1
    state = sampler.run(graph, state, 1)
    elapsed = time.perf_counter() - t0
    if elapsed < seconds:  # one more run sized to fill the budget
        more = max(1, int((seconds - elapsed) / elapsed))
        t1 = time.perf_counter()
        state = sampler.run(graph, state, more)
        elapsed += time.perf_counter() - t1
        sweeps += more
    done = int(state.updates) - before
    return state, elapsed / max(done, 1) * 1e9, sweeps, n


def crossover(degrees, gibbs, other):
    """The degree where Gibbs's time per update crosses ``other``'s (log-log interpolation), or None."""
    diff = [math.log(g) - math.log(o) for g, o in zip(gibbs, other)]
    for k in range(1, len(degrees)):
        if diff[k - 1] <= 0 < diff[k]:
            a, b = math.log(degrees[k - 1]), math.log(degrees[k])
            return math.exp(a + (b - a) * (-diff[k - 1]) / (diff[k] - diff[k - 1]))
    if diff and diff[0] > 0:
        return f"< {degrees[0]}"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--degrees", default="100,300,1000,3000,10000",
                    help="10000: 5e7 factors, ~14 GB resident and ~3 minutes to build")
    ap.add_argument("--D", type=int, default=4)
    ap.add_argument("--L", type=float, default=1.0, help="the total factor bound per variable")
    ap.add_argument("--lam", type=float, default=None, help="minibatch parameter (default: L^2 * --lam-scale)")
    ap.add_argument("--lam-scale", type=float, default=4.0)
    ap.add_argument("--seconds", type=float, default=1.0, help="sampling time per measurement")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=str(RESULTS / "bench_min_gibbs.json"))
    args = ap.parse_args(argv)

    import numba

    from relaxtorch.jobs.gibbs.samplers import factor_api
    Gibbs, MINGibbs, MGPMH = (factor_api(n) for n in ("Gibbs", "MINGibbs", "MGPMH"))  # noqa: N806
    if MINGibbs is None or MGPMH is None:
        raise SystemExit("error: relaxtorch.mcmc.factor has no MINGibbs / MGPMH in this build")

    numba.set_num_threads(1)
    info = machine()
    lam = args.lam if args.lam is not None else args.lam_scale * args.L ** 2
    names = ("gibbs", "min_gibbs", "mgpmh")
    degrees = [int(d) for d in args.degrees.split(",")]
    results = {name: [] for name in names}
    rows, raw = [], {}
    for deg in degrees:
        t0 = time.perf_counter()
        graph = dense_potts(deg, args.D, args.L)
        build = time.perf_counter() - t0
        samplers = {"gibbs": Gibbs(scan="systematic"), "min_gibbs": MINGibbs(lam=lam, track_energy=False),
                    "mgpmh": MGPMH(lam=lam, track_energy=False)}  # no exact O(degree) energy trace
        states = {k: s.run(graph, s.init(graph, 0), 1) for k, s in samplers.items()}  # compile, warm up
        per = {k: [] for k in samplers}
        for _ in range(args.reps):
            for k, s in samplers.items():
                states[k], ns, _, _ = ns_per_update(s, graph, states[k], args.seconds)
                per[k].append(ns)
        med = {k: statistics.median(v) for k, v in per.items()}
        raw[deg] = {"ns_per_update": per, "build_seconds": build, "factors": graph.num_factors}
        for k in names:
            results[k].append(med[k])
        rows.append([deg, graph.num_factors, f"{med['gibbs']:.0f}", f"{med['min_gibbs']:.0f}", f"{med['mgpmh']:.0f}",
                     f"{med['gibbs'] / med['min_gibbs']:.2f}x", f"{med['gibbs'] / med['mgpmh']:.2f}x"])
        print(f"degree {deg}: " + ", ".join(f"{k} {v:.0f} ns" for k, v in med.items()), flush=True)
        del graph, states

    def growth(name):  # exponent of the power law fitted through the points: 1 linear, 0 flat
        x, y = np.log(degrees), np.log(results[name])
        return float(np.polyfit(x, y, 1)[0]) if len(degrees) > 1 else None

    slopes = {k: growth(k) for k in names}
    cross = {k: crossover(degrees, results["gibbs"], results[k]) for k in ("min_gibbs", "mgpmh")}
    table = format_table(["degree Δ", "factors", "gibbs ns/update", "min_gibbs ns/update", "mgpmh ns/update",
                          "gibbs / min_gibbs", "gibbs / mgpmh"], rows)
    print()
    print(describe(info))
    print(f"\nFigure 4: dense Potts (complete graph on Δ+1 variables, D = {args.D}, L = {args.L:g}), "
          f"lambda = {lam:g}, one thread, {args.reps} interleaved repetitions of ~{args.seconds:g} s, medians")
    print(table)
    print("growth exponent of time per update in Δ (1 = linear, 0 = flat): "
          + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in slopes.items()))
    print("cross-over (Gibbs slower above): " + ", ".join(
        f"{k} Δ ≈ {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in cross.items()))
    payload = {"benchmark": "bench_min_gibbs", "machine": info, "args": vars(args), "lam": lam, "degrees": degrees,
               "median_ns_per_update": results, "raw": {str(k): v for k, v in raw.items()},
               "growth_exponent": slopes, "crossover_degree": cross, "table": table}
    print(f"\nwrote {write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
