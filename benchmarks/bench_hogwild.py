"""Hogwild! vs Buckwild!: updates per second for 1, 2 (and all) workers, float32 vs 8-bit.

Sparse logistic regression on an RCV1-like problem (default 1M examples, 100k
features, ~50 non-zeros each).  In one process tree, one configuration after the
other and repetition after repetition (interleaved, so machine load hits every
configuration alike), it runs ``relaxtorch.parallel.hogwild`` for

    signature  D32M32G32C32 (float32 Hogwild!)  and  D8M8G32C8 (Buckwild!, 8-bit data and model)
    workers    1 (the sequential baseline, same code path), 2, and os.cpu_count() if larger
    order      "shuffle" (a random permutation per epoch, textbook SGD, with software prefetch)
               and "blocks" (blocks of 256 consecutive examples in random order: streaming)

    replication "shared" (one model, Hogwild!) and "per-worker" (DimmWitted: private replicas
               synced every --sync-every updates; comma-separated list of K values)

and prints the median updates/s (hardware efficiency), the speed-up over 1 worker, the
8-bit/float32 ratio, the final loss after the same number of epochs relative to the
sequential float32 run (statistical efficiency), and the wall-clock time to reach the
sequential run's final loss (both together; a run that ends above it is run again for up to
--ttl-epochs epochs, "never" when that does not reach it either).  "per CPU-s vs 1" divides
each worker's updates per CPU-second by one worker's: unlike updates/s it does not depend on
what else the machine runs, so on a busy machine it shows what sharing, syncing and the other
worker's cache traffic cost (n x it is the speed-up n idle cores would give).  It also measures the machine's core-to-core cache-line
latency, which bounds how well lock-free workers sharing one model can scale.

    python benchmarks/bench_hogwild.py                 # the full claim (about 3 minutes on 2 cores)
    python benchmarks/bench_hogwild.py --examples 200000 --features 20000 --reps 2   # quick
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from relaxtorch.jobs._report import format_table  # noqa: E402
from relaxtorch.data.sparse import make_bag_of_words  # noqa: E402
from relaxtorch.parallel import SparseLinear, hogwild  # noqa: E402
from relaxtorch.jobs._report import machine  # noqa: E402

F32, B8 = "D32M32G32C32", "D8M8G32C8"


def _sname(strategy: str, k, sync: str = "touched") -> str:
    return "shared" if k is None else f"{strategy}/{sync}/{k}"


def _cpu_rate(r) -> float:
    """Updates per CPU-second of one worker: the hardware efficiency a busy machine does not change."""
    cpu = sum(r.cpu_seconds)
    return r.updates / cpu if cpu > 0 else 0.0


def core_to_core_latency_ns(rounds: int = 20_000) -> float:
    """One-way latency of handing a cache line between two processes (ping-pong), in ns."""
    import multiprocessing as mp

    import torch
    from numba import njit

    from relaxtorch.parallel._intrinsics import load_relaxed, store_relaxed

    @njit(nogil=True)
    def pingpong(a, me, n):
        for i in range(n):
            v = 2 * i + me
            while load_relaxed(a, 0) != v:
                pass
            store_relaxed(a, 0, v + 1)

    flag = torch.zeros(16, dtype=torch.int64).share_memory_()
    a = flag.numpy()
    pingpong(np.zeros(16, np.int64), 0, 1)  # compile in the parent; the forked child inherits it
    a[0] = 0
    child = mp.get_context("fork").Process(target=pingpong, args=(a, 1, rounds))
    child.start()
    t = time.perf_counter()
    pingpong(a, 0, rounds)
    dt = time.perf_counter() - t
    child.join(10)
    if child.is_alive():
        child.kill()
    return dt / (2 * rounds) * 1e9


def sharing_control(problem, orders, reps: int = 3) -> list[list]:
    """Kernel-level control: the same compiled kernel in 1 thread, in 2 threads on one shared
    model (Hogwild!), and in 2 threads on private copies (no sharing), each thread on half the
    examples.  If private copies scale and the shared model does not, the limit is the cache
    lines the cores hand each other, not the kernels or the memory bandwidth."""
    import threading

    from relaxtorch.parallel import _kernels as K
    from relaxtorch.parallel.signature import parse_signature

    rng = np.random.default_rng(1)
    n = problem.n_items
    rows = []
    for sig in (F32, B8):
        prep = problem.prepare(parse_signature(sig))
        t = {k: v.numpy() for k, v in prep.tensors.items()}
        kernel, fp = getattr(K, prep.spec["kernel"]), prep.spec["fp"].copy()
        for order in orders:
            def halves():
                lo, hi = np.arange(n // 2, dtype=np.int64), np.arange(n // 2, n, dtype=np.int64)
                if order == "shuffle":
                    return [rng.permutation(lo), rng.permutation(hi)]
                return [np.concatenate([h[b:b + 256] for b in rng.permutation(np.arange(0, h.size, 256))])
                        for h in (lo, hi)]

            def run(part, w, wid, nworkers, ctl):
                ip = prep.spec["ip"].copy()
                ip[K.I_PF] = 16 if order == "shuffle" else 0
                for c in range(0, part.size, 4096):
                    kernel(t["indptr"], t["indices"], t["values"], t["y"], part[c:c + 4096], w, ctl, wid,
                           nworkers, fp, ip)

            times = {"1": [], "shared": [], "private": []}
            for _ in range(reps):
                for mode in times:
                    parts, ctl = halves(), np.zeros(3 * K.STRIDE, np.int64)
                    w0 = t["w"].copy()
                    w1 = t["w"].copy() if mode == "private" else w0
                    t0 = time.perf_counter()
                    if mode == "1":
                        run(np.concatenate(parts), w0, 0, 1, ctl)
                    else:
                        ths = [threading.Thread(target=run, args=(parts[i], (w0, w1)[i], i, 2, ctl)) for i in (0, 1)]
                        for th in ths:
                            th.start()
                        for th in ths:
                            th.join()
                    times[mode].append(time.perf_counter() - t0)
            one = float(np.median(times["1"]))
            rows.append([order, sig, f"{n / one / 1e6:.2f}",
                         f"{one / float(np.median(times['shared'])):.2f}x",
                         f"{one / float(np.median(times['private'])):.2f}x"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=100_000)
    ap.add_argument("--nnz", type=float, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--orders", default="shuffle,blocks")
    ap.add_argument("--sync-every", default="16384,65536", help="per-worker replication: K values, comma-separated "
                    "('' to run only the shared model)")
    ap.add_argument("--sync", default="full", help="per-worker: sync schemes, comma-separated (touched, full)")
    ap.add_argument("--ttl-epochs", type=int, default=None,
                    help="a multi-worker run that ends above the sequential run's final loss is run again "
                    "(same seed) for up to this many epochs to time when it reaches it (default 2 x --epochs)")
    ap.add_argument("--curve-points", type=int, default=30, help="model snapshots per run (time-to-loss)")
    ap.add_argument("--no-control", action="store_true",
                    help="skip the kernel-level control (2 threads on a shared vs private model)")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_hogwild.json"))
    args = ap.parse_args(argv)

    cores = os.cpu_count() or 1
    workers = sorted({1, 2, cores})
    orders = args.orders.split(",")
    strategies = [("shared", None, None)] + [("per-worker", int(k), sc) for sc in args.sync.split(",")
                                              for k in args.sync_every.split(",") if k.strip()]
    ttl_epochs = args.ttl_epochs or 2 * args.epochs
    load0 = os.getloadavg()
    info = machine()
    print(f"machine: {info['cpu']}, {cores} cores, {platform.platform()}, torch {info['torch']}, "
          f"numba {info['numba']}, device cpu; load average at start {load0[0]:.2f}")
    latency = core_to_core_latency_ns()
    print(f"core-to-core cache-line latency (ping-pong, one way): {latency:.0f} ns")

    t = time.perf_counter()
    ds = make_bag_of_words(args.examples, args.features, args.nnz, seed=0)
    problem = SparseLinear(ds)
    print(f"data: {ds} in {time.perf_counter() - t:.1f} s; logistic loss, lr {problem.lr:g} x 0.8^epoch, "
          f"{args.epochs} epochs, {args.reps} repetitions\n")
    for sig in (F32, B8):  # compile, start the fork server, share the data: outside the timings
        hogwild(problem, workers=1, signature=sig, epochs=1, curve_points=0)

    runs: dict = {}
    longer: dict = {}  # (key, rep) -> the longer run that timed reaching the sequential loss
    for rep in range(args.reps):
        for order in orders:
            for sig in (F32, B8):
                for n in workers:
                    for strat, k, sc in strategies if n > 1 else strategies[:1]:
                        kw = {} if k is None else {"replication": strat, "sync_every": k, "sync": sc}
                        r = hogwild(problem, workers=n, signature=sig, epochs=args.epochs, order=order, seed=rep,
                                    curve_points=args.curve_points, **kw)
                        key = (order, sig, n, _sname(strat, k, sc))
                        runs.setdefault(key, []).append(r)
                        seq = runs[(order, F32, 1, "shared")][rep]
                        more = ""
                        if n > 1 and r.time_to_loss(seq.final_loss) is None and ttl_epochs > args.epochs:
                            # the lr schedule is per epoch, so the first --epochs of a longer run are this run
                            lr_run = hogwild(problem, workers=n, signature=sig, epochs=ttl_epochs, order=order,
                                             seed=rep, curve_points=args.curve_points * ttl_epochs // args.epochs,
                                             **kw)
                            longer[(key, rep)] = lr_run
                            t = lr_run.time_to_loss(seq.final_loss)
                            more = f", {ttl_epochs} epochs: " + ("never" if t is None else f"seq loss at {t:.2f} s")
                        print(f"  rep {rep} {order:7s} {sig} x{n} {key[3]:22s}: "
                              f"{r.updates_per_s / 1e6:6.2f} M updates/s ({_cpu_rate(r) / 1e6:5.2f} per CPU-s), "
                              f"loss {r.final_loss:.5f}{more}", flush=True)
    load1 = os.getloadavg()

    med = {k: float(np.median([r.updates_per_s for r in v])) for k, v in runs.items()}
    loss = {k: float(np.median([r.final_loss for r in v])) for k, v in runs.items()}
    rows, checks, ttl_med = [], [], {}
    for order in orders:
        seq_key = (order, F32, 1, "shared")
        seq_loss = loss[seq_key]
        ttl_med[seq_key] = float(np.median([r.seconds for r in runs[seq_key]]))
        best = {}
        for k in [k for k in runs if k[0] == order]:
            _, sig, n, strat = k
            ups = [r.updates_per_s for r in runs[k]]
            speedup = med[k] / med[(order, sig, 1, "shared")]
            ref = (order, F32, n, strat)
            vs32 = med[k] / med[ref] if ref in med else float("nan")
            rel = loss[k] / seq_loss - 1
            # time to the sequential float32 run's final loss, on the same repetition's sequential run
            ttls = [r.time_to_loss(s.final_loss) if (k, rep) not in longer else
                    longer[(k, rep)].time_to_loss(s.final_loss)
                    for rep, (r, s) in enumerate(zip(runs[k], runs[seq_key]))]
            reached = [t for t in ttls if t is not None]
            ttl = float(np.median(reached)) if len(reached) * 2 > len(ttls) else None
            ttl_med[k] = ttl
            stale = float(np.median([r.staleness["mean"] for r in runs[k]]))
            insync = float(np.median([r.sync.get("cpu_seconds", 0.0) / max(sum(r.cpu_seconds), 1e-9)
                                      for r in runs[k]]))
            # per CPU-second of each worker, against 1 worker's: what the workers lose to sharing, sync and
            # each other's caches, whatever else the machine runs (n x this is the speed-up on n idle cores)
            cpu_eff = float(np.median([_cpu_rate(r) for r in runs[k]])) / float(
                np.median([_cpu_rate(r) for r in runs[(order, sig, 1, "shared")]]))
            rows.append([order, sig, n, strat, f"{med[k] / 1e6:.2f}", f"{min(ups) / 1e6:.2f}-{max(ups) / 1e6:.2f}",
                         f"{speedup:.2f}x", f"{cpu_eff:.2f}", "-" if sig == F32 else f"{vs32:.2f}x", f"{loss[k]:.5f}",
                         f"{100 * rel:+.2f}%", "never" if ttl is None else f"{ttl:.2f}",
                         f"{ttl_med[seq_key] / ttl:.2f}x" if ttl else "-", f"{stale:.1f}",
                         f"{100 * insync:.1f}%" if strat != "shared" else "-"])
            if n == 2:
                ok = speedup >= 1.7 and abs(rel) <= 0.01 and ttl is not None and ttl < ttl_med[seq_key]
                if sig not in best or (ok, speedup) > best[sig][0]:
                    best[sig] = ((ok, speedup), k, speedup, rel, ttl)
        for sig in (F32, B8):
            if sig not in best:
                continue
            _, k, speedup, rel, ttl = best[sig]
            name = f"{order}: {sig} best at 2 workers ({k[3]})"
            checks.append((f"{name} >= 1.7x of 1 worker", speedup >= 1.7, f"{speedup:.2f}x"))
            checks.append((f"{name} loss within 1% of sequential", abs(rel) <= 0.01, f"{100 * rel:+.2f}%"))
            checks.append((f"{name} reaches the sequential loss sooner", ttl is not None and ttl < ttl_med[seq_key],
                           "never" if ttl is None else f"{ttl:.2f} s vs {ttl_med[seq_key]:.2f} s"))
        if F32 in best and B8 in best:
            k8, k32 = best[B8][1], best[F32][1]
            vs = med[k8] / med[k32]
            checks.append((f"{order}: 8-bit best ({k8[3]}) >= 1.3x float32 best ({k32[3]}) at 2 workers", vs >= 1.3,
                           f"{vs:.2f}x"))
        vs1 = med[(order, B8, 1, "shared")] / med[seq_key]
        checks.append((f"{order}: 8-bit >= 1.3x float32 at 1 worker", vs1 >= 1.3, f"{vs1:.2f}x"))
    print()
    print(format_table(["order", "signature", "workers", "replication", "M updates/s (median)", "range",
                        "vs 1 worker", "per CPU-s vs 1", "vs float32", f"loss after {args.epochs} epochs",
                        "vs sequential", "s to seq loss", "vs sequential time", "staleness", "in sync"],
                       rows, "llrlrrrrrrrrrrr"))
    print(f"per CPU-s vs 1: updates per CPU-second of a worker over 1 worker's (load-independent); s to seq loss: "
          f"wall-clock seconds to the sequential float32 run's final loss, from a run of up to {ttl_epochs} epochs "
          f"where {args.epochs} did not reach it; in sync: share of the workers' CPU time")
    control = []
    if not args.no_control:
        control = sharing_control(problem, orders)
        print("\ncontrol, one process: the kernel in 2 threads on one shared model vs on private copies")
        print(format_table(["order", "signature", "1 thread M upd/s", "2 threads, shared model",
                            "2 threads, private models"], control, "llrrr"))
    print(f"\nload average: {load0[0]:.2f} at start, {load1[0]:.2f} at end ({cores} cores)")
    for name, ok, value in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {value}")

    payload = {"machine": {**info, "load_start": load0, "load_end": load1, "core_to_core_ns": latency},
               "settings": vars(args), "dataset": repr(ds),
               "results": [{"order": o, "signature": s, "workers": n, "replication": st,
                            "updates_per_s_median": med[(o, s, n, st)], "final_loss_median": loss[(o, s, n, st)],
                            "time_to_seq_loss_median": ttl_med.get((o, s, n, st)),
                            "runs": [r.to_dict() for r in runs[(o, s, n, st)]],
                            "longer_runs": {str(rep): longer[((o, s, n, st), rep)].to_dict()
                                            for rep in range(args.reps) if ((o, s, n, st), rep) in longer}}
                           for (o, s, n, st) in runs],
               "checks": [{"claim": c, "pass": ok, "value": v} for c, ok, v in checks],
               "control": [dict(zip(("order", "signature", "one_thread_mups", "shared_2x", "private_2x"), r))
                           for r in control]}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
