"""Figure 3 of issue 12: Poisson-Gibbs against Gibbs on the Poisson-Gibbs paper's Potts model.

Zhang & De Sa (NeurIPS 2019), "Poisson-Minibatching for Gibbs Sampling with Convergence Rate
Guarantees": a Potts model on a 20 x 20 grid (400 variables, D = 10 values) in which every pair
of variables interacts, with a strength that decays with their distance (beta = 4.6,
gamma = 1.5): ``relaxtorch.mcmc.factor.builders.potts_all_pairs``.  Each variable touches 399
factors.  Poisson-Gibbs evaluates a Poisson-sized minibatch of factors chosen in proportion to their
bound M_f, with expected size set by lambda; the paper's settings are lambda = 0.1, 1 and 5 times
L^2, where L = max_i sum_{f touching i} M_f (M_f = max - min of the factor's log-potential).

Two Gibbs baselines run the same chain: the paper's, which evaluates every factor at every value
(399 x D factor evaluations an update; here the model written as D x D TABLE factors, relaxtorch's
generic path), and relaxtorch's Gibbs on the POTTS factors, which adds each neighbour's weight to
the one value it favours (399 + D operations).  Each gets its own table.

The model has no field, so permuting the D values maps it to itself: every variable's exact
marginal is uniform (1/D) -- the reference.  The marginal error is the job's: the mean over
variables of the total-variation distance to 1/D.  (``--check-sweeps`` also runs a long Gibbs
chain and reports its distance to uniform, to show the chain mixes across the D values.)

The samplers take turns (round-robin chunks of geometrically growing length, the same seed
for every sampler); each curve is marginal error against sampling wall-clock.  The claim:
Poisson-Gibbs reaches the error Gibbs reaches at its end at least 5x sooner; each table lists,
for a few error levels on that Gibbs's curve, each sampler's time to reach it and the ratio.
Writes the JSON, a PNG of the curves, and prints the table.

    python benchmarks/bench_poisson_gibbs.py                 # the claim (a few minutes)
    python benchmarks/bench_poisson_gibbs.py --seconds 10    # quick
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import RESULTS, describe, machine, write_json  # noqa: E402

from relaxtorch.jobs._report import format_table  # noqa: E402


def lipschitz_L(graph) -> float:
    """L = max over variables of the sum of M_f = max - min of w*feature*phi_f over the factors touching it."""
    from relaxtorch.mcmc.factor._kernels import factor_bounds
    a = graph.arrays
    lo, hi = factor_bounds(a)
    m = np.asarray(hi) - np.asarray(lo)
    per_var = np.zeros(graph.num_variables)
    ptr, var = np.asarray(a.factor_ptr), np.asarray(a.edge_var)
    np.add.at(per_var, var, np.repeat(m, np.diff(ptr)))
    return float(per_var.max())


def as_tables(graph):
    """The same model with every POTTS factor written as a D x D TABLE of its weight on the
    diagonal: the generic factor evaluation, O(D) per factor, that the paper's Gibbs cost counts.
    Its conditionals are the same sums, so the chain is the same; only the time per update differs."""
    from relaxtorch.mcmc.factor import FactorFunction, from_factors
    a = graph.arrays
    ptr, var = np.asarray(a.factor_ptr), np.asarray(a.edge_var)
    coef = np.asarray(a.weight)[np.asarray(a.weight_id)] * np.asarray(a.feature)
    d = int(graph.max_cardinality)
    eye = np.eye(d)
    factors = [(FactorFunction.TABLE, 0, var[ptr[f]:ptr[f + 1]].tolist(), None, float(coef[f]), eye)
               for f in range(graph.num_factors)]
    return from_factors(np.asarray(a.cardinality).tolist(), [1.0], factors)


def first_time(curve, level):
    for t, e in curve:
        if e <= level:
            return t
    return None


GENERIC = "gibbs, factors as tables"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=20)
    ap.add_argument("--D", type=int, default=10)
    ap.add_argument("--beta", type=float, default=4.6)
    ap.add_argument("--gamma", type=float, default=1.5)
    ap.add_argument("--lams", default="0.1,1,5", help="lambda as multiples of L^2")
    ap.add_argument("--seconds", type=float, default=40.0, help="sampling wall-clock per sampler")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-sweeps", type=int, default=0, help="a long Gibbs run's sweeps (0: skip)")
    ap.add_argument("--json", default=str(RESULTS / "bench_poisson_gibbs.json"))
    ap.add_argument("--png", default=str(RESULTS / "bench_poisson_gibbs.png"))
    args = ap.parse_args(argv)

    import numba

    from relaxtorch.jobs._report import colors, figure, png
    from relaxtorch._files import atomic_write
    from relaxtorch.jobs.gibbs.metrics import marginal_error, uniform_marginals
    from relaxtorch.jobs.gibbs.samplers import factor_api
    Gibbs, PoissonGibbs, marginals = (factor_api(n) for n in ("Gibbs", "PoissonGibbs", "marginals"))  # noqa: N806
    if PoissonGibbs is None:
        raise SystemExit("error: relaxtorch.mcmc.factor has no PoissonGibbs in this build")
    from relaxtorch.mcmc.factor.builders import potts_all_pairs

    numba.set_num_threads(1)
    info = machine()
    graph = potts_all_pairs(args.side, args.D, args.beta, args.gamma)
    a = graph.arrays
    ref = uniform_marginals(a.cardinality, a.evidence, graph.max_cardinality)
    L = lipschitz_L(graph)
    degree = int(np.diff(np.asarray(a.var_ptr)).max())
    print(f"graph: potts_all_pairs({args.side}, D={args.D}, beta={args.beta}, gamma={args.gamma}): "
          f"{graph.num_variables} variables, {graph.num_factors} factors, degree {degree}; L = {L:.4g}, L^2 = {L * L:.4g}",
          flush=True)
    tables = as_tables(graph)
    samplers = {"gibbs": Gibbs(scan="systematic"), GENERIC: Gibbs(scan="systematic")}
    graphs = {"gibbs": graph, GENERIC: tables}
    for c in (float(x) for x in args.lams.split(",")):
        name = f"poisson_gibbs lam={c:g}L^2"
        samplers[name] = PoissonGibbs(lam=c * L * L, track_energy=False)  # no O(degree) trace
        graphs[name] = graph
    states, curves, sweeps, elapsed = {}, {k: [] for k in samplers}, {k: 0 for k in samplers}, {k: 0.0 for k in samplers}
    for name, s in samplers.items():  # compile on a throwaway state; the timed chains start fresh
        s.run(graphs[name], s.init(graphs[name], args.seed + 99), 1)
        states[name] = s.init(graphs[name], args.seed)
    chunk = {k: 1 for k in samplers}
    live = set(samplers)
    while live:
        for name in list(samplers):
            if name not in live:
                continue
            s = samplers[name]
            t0 = time.perf_counter()
            states[name] = s.run(graphs[name], states[name], chunk[name])
            elapsed[name] += time.perf_counter() - t0
            sweeps[name] += chunk[name]
            err = marginal_error(np.asarray(marginals(states[name]), np.float64), ref)
            curves[name].append((elapsed[name], err))
            chunk[name] = max(chunk[name] + 1, int(chunk[name] * 1.25))
            if elapsed[name] >= args.seconds:
                live.discard(name)
        print("  " + ", ".join(f"{k}: {elapsed[k]:.1f}s err {curves[k][-1][1]:.4f}" for k in samplers), flush=True)

    contenders = [k for k in samplers if k.startswith("poisson_gibbs")]
    tables_out, at_final, ratios = {}, {}, {}
    for base in ("gibbs", GENERIC):  # each Gibbs against the Poisson-Gibbs runs, at its own error levels
        b_curve = curves[base]
        b_final = b_curve[-1][1]
        levels = [b_final * f for f in (2.0, 1.5, 1.0)]  # these multiples of the baseline's final error
        rows = []
        for name in [base] + contenders:
            row = [name, f"{sweeps[name]}", f"{states[name].updates / elapsed[name] / 1e6:.4f}", f"{curves[name][-1][1]:.4f}"]
            for lv in levels:
                t, tb = first_time(curves[name], lv), first_time(b_curve, lv)
                row.append("never" if t is None else f"{t:.2f} s" + ("" if name == base else f" ({tb / t:.1f}x)"))
                if name != base:
                    ratios.setdefault(base, {}).setdefault(name, {})[f"{lv / b_final:g}x_final"] = None if t is None else tb / t
            rows.append(row)
        tables_out[base] = format_table(["sampler", "sweeps", "M updates/s", "final err"]
                                        + [f"time to err {lv:.4f}" for lv in levels], rows)
        at_final[base] = max((v["1x_final"] for v in ratios[base].values() if v["1x_final"] is not None), default=None)
    g_final = curves["gibbs"][-1][1]

    check = None
    if args.check_sweeps:
        s = Gibbs(scan="systematic")
        st = s.run(graph, s.init(graph, args.seed + 7), args.check_sweeps)
        check = marginal_error(np.asarray(marginals(st), np.float64), ref)

    fig, (ax,) = figure(1, width=6.5, height=4.5)
    col = colors(samplers)
    for name, curve in curves.items():
        pts = [(t, e) for t, e in curve if t > 0 and e > 0]
        ax.plot([t for t, _ in pts], [e for _, e in pts], color=col[name], label=name)
    ax.axhline(g_final, color="grey", ls="--", lw=0.8, label="Gibbs's final error")
    ax.set(xscale="log", yscale="log", xlabel="wall-clock seconds", ylabel="mean TV distance to the exact (uniform) marginal",
           title=f"Potts all-pairs {args.side}x{args.side}, D={args.D}, β={args.beta}, γ={args.gamma}")
    ax.legend(fontsize=7)
    atomic_write(Path(args.png), png(fig))

    print()
    print(describe(info))
    print(f"\nFigure 3: Potts all-pairs {args.side}x{args.side} (D = {args.D}, beta = {args.beta}, gamma = {args.gamma}), "
          f"{args.seconds:g} s of sampling each, one thread, reference: uniform marginals (symmetry)")
    for base, label in (("gibbs", "Gibbs with pairwise Potts factors (O(degree + D) an update)"),
                        (GENERIC, "Gibbs with the factors as D x D tables (O(degree x D): the paper's Gibbs)")):
        best = at_final[base]
        print(f"\nagainst {label}:")
        print(tables_out[base])
        print(f"best speed-up to its final error: {'n/a' if best is None else f'{best:.1f}x'}; "
              f"target >= 5x: {'met' if best is not None and best >= 5 else 'NOT met'}")
    if check is not None:
        print(f"long Gibbs check: {args.check_sweeps} sweeps, distance to uniform {check:.4f}")
    payload = {"benchmark": "bench_poisson_gibbs", "machine": info, "args": vars(args), "L": L, "degree": degree,
               "curves": {k: [{"seconds": t, "error": e} for t, e in v] for k, v in curves.items()},
               "sweeps": sweeps, "updates": {k: int(states[k].updates) for k in samplers}, "levels": levels,
               "speedups": ratios, "speedup_at_final": at_final,
               "target_5x": {k: v is not None and v >= 5 for k, v in at_final.items()},
               "long_gibbs_check": check, "tables": tables_out}
    print(f"\nwrote {write_json(args.json, payload)} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
