"""Figures 1 and 2 of issue 12: Gibbs on the 500x500 Ising grid, relaxtorch next to Numbskull.

The setting of the issue: 500 x 500 boolean variables, free boundary, an EQUAL factor per
grid edge (weight 0.4) and an ISTRUE factor per variable (weight 0.1): 749,000 factors.  The
graph is written once as a DeepDive binary folder by the Numbskull peer script
(benchmarks/_numbskull_peer.py, in its own venv, Numbskull's loader conventions) and both
sides sample *that folder*: Numbskull through its own ``loadFGFromFile``, relaxtorch through
``relaxtorch.mcmc.factor.deepdive.read_deepdive`` (so the reader runs it unchanged).

Figure 1: variable updates per second of relaxtorch's sequential Gibbs (systematic scan, one
thread) and of Numbskull on 1 and 2 threads (target: relaxtorch >= 10 M/s on one thread).
Figure 2: relaxtorch's asynchronous Gibbs (HOGWILD!-Gibbs) on 2 threads against 1 (target
>= 1.8x), and its statistics against sequential Gibbs: on a smaller grid of the same weights (``--stat-n``, default 100 x 100, so that
each run has thousands of sweeps): the mean log-potential per site and
the magnetisation (mean spin) with their Monte Carlo standard errors (from the per-sweep traces, batch
ESS), and the per-variable marginal distance between the samplers next to the distance
between two sequential runs with different seeds (the statistical floor).

Rounds interleave the contenders (Numbskull's process, then each relaxtorch sampler), the
median of each is reported and the ratios are medians of per-round ratios.  Updates/s per
CPU-second is reported too: on a loaded machine it is steadier than wall-clock.

    python benchmarks/bench_gibbs_ising.py                    # the claim (a few minutes on 2 cores)
    python benchmarks/bench_gibbs_ising.py --n 200 --reps 2 --stat-sweeps 200   # quick
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import RESULTS, describe, machine, two_thread_ceiling, write_json  # noqa: E402

from relaxtorch.jobs._report import format_table  # noqa: E402

PEER = "/work/peer-numbskull/bin/python"
PEER_SCRIPT = str(Path(__file__).resolve().parent / "_numbskull_peer.py")


def peer_available(python: str) -> bool:
    return Path(python).exists()


def peer(python: str, *args) -> dict:
    """Run the Numbskull peer script in its venv; its one JSON line."""
    proc = subprocess.run([python, PEER_SCRIPT, *map(str, args)], capture_output=True, text=True, cwd="/",
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"numbskull peer failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed_sweeps(sampler, graph, state, sweeps: int):
    """(state, wall seconds, cpu seconds, updates done) of ``sweeps`` sweeps."""
    before = int(state.updates)
    w0, c0 = time.perf_counter(), time.process_time()
    state = sampler.run(graph, state, sweeps)
    return state, time.perf_counter() - w0, time.process_time() - c0, int(state.updates) - before


def mean_and_se(trace) -> tuple[float, float]:
    import torch

    from relaxtorch.mcmc.diagnostics import mcse
    x = torch.as_tensor(np.asarray(trace, np.float64))
    return float(x.mean()), float(mcse(x.reshape(1, -1)))


def spin_trace(state):
    """Per-sweep magnetisation (mean spin 2x - 1 over the sites) when the sampler records it."""
    mag = getattr(state, "magnetisation", None)
    return None if mag is None or not np.size(mag) else np.asarray(mag, np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="grid side")
    ap.add_argument("--beta", type=float, default=0.4)
    ap.add_argument("--h", type=float, default=0.1)
    ap.add_argument("--reps", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--sweeps", type=int, default=10, help="relaxtorch sweeps per timed repetition")
    ap.add_argument("--peer-epochs", type=int, default=3, help="Numbskull epochs per timed repetition")
    ap.add_argument("--stat-n", type=int, default=100, help="grid side of the statistical check (figure 2; 0: --n)")
    ap.add_argument("--stat-sweeps", type=int, default=2000, help="sweeps of each statistical run (figure 2)")
    ap.add_argument("--stat-burn-in", type=int, default=200)
    ap.add_argument("--peer", default=PEER, help="the Numbskull venv's python")
    ap.add_argument("--json", default=str(RESULTS / "bench_gibbs_ising.json"))
    args = ap.parse_args(argv)

    import numba

    from relaxtorch.jobs.gibbs.samplers import factor_api
    Gibbs, marginals = factor_api("Gibbs"), factor_api("marginals")  # noqa: N806
    AsyncGibbs = factor_api("AsyncGibbs")  # noqa: N806 - figure 2 is n/a without it
    from relaxtorch.mcmc.factor.deepdive import read_deepdive, write_deepdive
    from relaxtorch.mcmc.factor.builders import ising_grid
    from relaxtorch.jobs.gibbs.metrics import marginal_error
    from relaxtorch.jobs.gibbs.runner import staleness_summary

    info = machine(extra_packages=())
    have_peer = peer_available(args.peer)
    tmp = tempfile.TemporaryDirectory(prefix="bench_gibbs_ising_")
    folder = Path(tmp.name) / "ising"
    if have_peer:
        meta = peer(args.peer, "--n", args.n, "--beta", args.beta, "--h", args.h, "--write-folder", folder)
        writer = "numbskull peer script (Numbskull's loader conventions)"
    else:  # no peer venv: the same graph through our own writer, Numbskull columns n/a
        write_deepdive(ising_grid(args.n, args.n, beta=args.beta, h=args.h, periodic=False), folder)
        meta, writer = {}, "relaxtorch write_deepdive (no Numbskull venv)"
    t0 = time.perf_counter()
    graph = read_deepdive(folder)
    read_s = time.perf_counter() - t0
    n = graph.num_variables
    print(f"graph: {args.n}x{args.n} Ising, {n} variables, {graph.num_factors} factors, {graph.num_edges} edges; "
          f"DeepDive folder written by {writer}, read by relaxtorch in {read_s:.2f} s", flush=True)

    samplers = {"relaxtorch gibbs x1": (Gibbs(scan="systematic"), 1)}
    if AsyncGibbs is not None:
        samplers.update({"relaxtorch async x1": (AsyncGibbs(threads=1), 1),
                         "relaxtorch async x2": (AsyncGibbs(threads=2), 2)})
    states = {}
    for name, (s, k) in samplers.items():  # compile and burn in
        numba.set_num_threads(min(k, numba.config.NUMBA_NUM_THREADS))
        states[name] = s.run(graph, s.init(graph, 0), 2)
    wall = {name: [] for name in ["numbskull x1", "numbskull x2", *samplers]}
    ceiling = []  # the machine's own two-thread scaling, each round (_common.two_thread_ceiling)
    cpu = {name: [] for name in ["numbskull x1", "numbskull x2", *samplers] if name.startswith("relaxtorch") or have_peer}
    for r in range(args.reps):
        if have_peer:
            res = peer(args.peer, "--folder", folder, "--threads", "1,2", "--reps", 1, "--epochs", args.peer_epochs)
            wall["numbskull x1"].append(res["updates_per_s"]["1"][0])
            wall["numbskull x2"].append(res["updates_per_s"]["2"][0])
            cpu["numbskull x1"].append(res["updates_per_cpu_s"]["1"][0])
            cpu["numbskull x2"].append(res["updates_per_cpu_s"]["2"][0])
        for name, (s, k) in samplers.items():
            numba.set_num_threads(min(k, numba.config.NUMBA_NUM_THREADS))
            states[name], w, c, u = timed_sweeps(s, graph, states[name], args.sweeps)
            wall[name].append(u / w)
            cpu[name].append(u / c)
        ceiling.append(two_thread_ceiling())
        rates = ", ".join(f"{k} {v[-1] / 1e6:.2f}" for k, v in wall.items() if v)
        print(f"round {r + 1}/{args.reps}: {rates} M updates/s; machine's 2-thread ceiling {ceiling[-1]:.2f}x",
              flush=True)

    med = {k: statistics.median(v) if v else None for k, v in wall.items()}
    per_round = lambda a, b: statistics.median(x / y for x, y in zip(wall[a], wall[b])) if wall[a] and wall[b] else None  # noqa: E731
    fig1 = [[name, "-" if med[name] is None else f"{med[name] / 1e6:.2f}",
             "-" if not cpu.get(name) else f"{statistics.median(cpu[name]) / 1e6:.2f}",
             "-" if med["numbskull x1"] is None else f"{per_round(name, 'numbskull x1'):.2f}x",
             "-" if not cpu.get("numbskull x1") else
             f"{statistics.median(cpu[name]) / statistics.median(cpu['numbskull x1']):.2f}x"]
            for name in wall]
    t1 = format_table(["sampler", "M updates/s (wall)", "M updates/s per CPU-s", "vs numbskull x1 (wall)",
                       "vs numbskull x1 (per CPU-s)"], fig1)

    # figure 2: statistics of async x2 against sequential Gibbs, same sweeps after the same burn-in
    stats = {}
    runs = {"sequential seed 0": (Gibbs(scan="systematic"), 1, 0), "sequential seed 1": (Gibbs(scan="systematic"), 1, 1)}
    if AsyncGibbs is not None:
        runs["async x2 seed 0"] = (AsyncGibbs(threads=2), 2, 0)
    stat_n = args.stat_n or args.n
    sgraph = graph if stat_n == args.n else ising_grid(stat_n, stat_n, beta=args.beta, h=args.h, periodic=False)
    for name, (s, k, seed) in runs.items():
        numba.set_num_threads(min(k, numba.config.NUMBA_NUM_THREADS))
        st = s.run(sgraph, s.init(sgraph, seed), args.stat_burn_in)
        st = s.run(sgraph, s.init(sgraph, seed + 100, x0=st.x), args.stat_sweeps)
        e_mean, e_se = mean_and_se(np.asarray(st.energy) / sgraph.num_variables)
        ptrace = spin_trace(st)
        p_mean, p_se = mean_and_se(ptrace) if ptrace is not None else (None, None)
        stats[name] = {"energy_per_site": e_mean, "energy_se": e_se, "mean_x": p_mean, "mean_x_se": p_se,
                       "marginals": np.asarray(marginals(st), np.float64),
                       "staleness": staleness_summary(getattr(st, "staleness", None))}
    ref = stats["sequential seed 0"]
    rows2 = []
    for name, s in stats.items():
        dz = (s["energy_per_site"] - ref["energy_per_site"]) / np.hypot(s["energy_se"], ref["energy_se"]) \
            if name != "sequential seed 0" else 0.0
        rows2.append([name, f"{s['energy_per_site']:.5f} ± {s['energy_se']:.5f}", f"{dz:+.2f}",
                      "-" if s["mean_x"] is None else f"{s['mean_x']:.4f} ± {s['mean_x_se']:.4f}",
                      "-" if name == "sequential seed 0" else f"{marginal_error(s['marginals'], ref['marginals']):.4f}",
                      "-" if s["staleness"] is None else f"{s['staleness']:.3g}"])
        s["energy_z_vs_seq0"] = dz
    t2 = format_table(["run", "log-potential per site ± se", "z vs seq 0", "magnetisation ± se",
                       "marginal TV vs seq 0", "staleness"], rows2)
    have_async = AsyncGibbs is not None
    speedup = per_round("relaxtorch async x2", "relaxtorch async x1") if have_async else float("nan")
    speedup_seq = per_round("relaxtorch async x2", "relaxtorch gibbs x1") if have_async else float("nan")
    of_ceiling = (statistics.median(a / b / c for a, b, c in zip(wall["relaxtorch async x2"], wall["relaxtorch async x1"],
                                                                 ceiling)) if have_async else float("nan"))
    cpu_ratio = (statistics.median(cpu["relaxtorch async x2"]) / statistics.median(cpu["relaxtorch async x1"])
                 if have_async else float("nan"))

    print()
    print(describe(info))
    print(f"\nFigure 1: {args.n}x{args.n} Ising grid (EQUAL per edge w={args.beta}, ISTRUE per site w={args.h}), "
          f"{args.reps} interleaved rounds, medians; relaxtorch {args.sweeps} sweeps/round, Numbskull "
          f"{args.peer_epochs} epochs/round (its own venv: {PEER})")
    print(t1)
    met1 = med["relaxtorch gibbs x1"] >= 10e6
    print(f"target >= 10 M updates/s on one thread: {'met' if met1 else 'NOT met'} "
          f"({med['relaxtorch gibbs x1'] / 1e6:.2f} M/s)")
    print(f"\nFigure 2: async Gibbs 2 threads / 1 thread = {speedup:.2f}x (per CPU-second {cpu_ratio:.2f}x; "
          f"vs sequential Gibbs {speedup_seq:.2f}x); target >= 1.8x: {'met' if speedup >= 1.8 else 'NOT met'}; "
          f"this machine's 2-thread ceiling (a compute-bound loop, no memory traffic): "
          f"{statistics.median(ceiling):.2f}x (rounds {min(ceiling):.2f}-{max(ceiling):.2f}x); async's speed-up "
          f"over that ceiling, per round: {of_ceiling:.2f}"
          + ("" if have_async else " (AsyncGibbs is not in this build of relaxtorch.mcmc.factor)"))
    print(f"statistics on the {stat_n}x{stat_n} grid (same weights), {args.stat_sweeps} sweeps each after "
          f"{args.stat_burn_in} burn-in sweeps; se: Monte Carlo standard error (ESS of the per-sweep trace)")
    print(t2)
    payload = {"benchmark": "bench_gibbs_ising", "machine": info, "args": vars(args), "graph": {
        "variables": n, "factors": graph.num_factors, "edges": graph.num_edges, "folder_writer": writer,
        "peer_meta": meta, "read_seconds": read_s},
        "updates_per_s": wall, "updates_per_cpu_s": cpu, "median_updates_per_s": med, "two_thread_ceiling": ceiling,
        "ratios": {"gibbs_vs_numbskull1": per_round("relaxtorch gibbs x1", "numbskull x1"),
                   "async2_vs_async1": speedup, "async2_vs_gibbs": speedup_seq, "async2_vs_async1_cpu": cpu_ratio,
                   "async2_vs_async1_over_ceiling": of_ceiling},
        "targets": {"gibbs_10M": met1, "async_1.8x": speedup >= 1.8},
        "statistics": {k: {kk: vv for kk, vv in v.items() if kk != "marginals"} for k, v in stats.items()},
        "marginal_tv": {k: marginal_error(v["marginals"], ref["marginals"]) for k, v in stats.items()},
        "tables": {"figure1": t1, "figure2": t2}}
    print(f"\nwrote {write_json(args.json, payload)}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
