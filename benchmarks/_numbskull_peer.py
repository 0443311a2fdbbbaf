"""Numbskull (DeepDive's numba Gibbs sampler), run in its own virtual environment.

This script imports only NumPy and Numbskull (never relaxtorch or torch): the
benchmarks run it with ``/work/peer-numbskull/bin/python`` (``numpy==1.23.5
numba==0.58.1 numbskull``; Numbskull uses ``np.bool`` and fails on NumPy >= 1.24).

It builds the issue's Ising grid the way a Numbskull user would: one boolean
variable per site, an EQUAL factor per grid edge (weight ``beta``: Numbskull's
EQUAL is +1 when equal and -1 when not, i.e. ``beta * s_i * s_j``) and an ISTRUE
factor per site (weight ``h``: +1 when true, -1 when false, i.e. ``h * s_i``), free
boundary (500 x 500: 499,000 + 250,000 = 749,000 factors).  It can write that
graph as a DeepDive binary folder in Numbskull's own loader conventions
(``graph.meta`` = "weights,variables,factors,edges"; big-endian records of
``graph.weights`` 17 bytes, ``graph.variables`` 27 bytes, ``graph.factors``
variable length), and load it back with Numbskull's ``loadFGFromFile``.

It times Numbskull's inference epochs (one epoch = one update of every variable)
on each requested thread count, interleaved, and prints one JSON object on stdout:
updates/s per repetition and the marginal mean of ``s`` after the timed epochs.

    /work/peer-numbskull/bin/python benchmarks/_numbskull_peer.py --n 500 --threads 1,2
    /work/peer-numbskull/bin/python benchmarks/_numbskull_peer.py --write-folder /tmp/ising500
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)  # np.bool inside numbskull

import numpy as np  # noqa: E402

EQUAL, ISTRUE = 3, 4  # DeepDive's factor function ids


def ising_arrays(n: int, m: int):
    """The grid's factors as (function, vid[:, 2] or [:, 1], weight id) blocks: edges first, then sites."""
    ids = np.arange(n * m, dtype=np.int64).reshape(n, m)
    right = np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], axis=1)
    down = np.stack([ids[:-1, :].ravel(), ids[1:, :].ravel()], axis=1)
    pairs = np.concatenate([right, down])
    sites = ids.reshape(-1, 1)
    return pairs, sites


def write_folder(path: str, n: int, m: int, beta: float, h: float) -> dict:
    """The grid as a DeepDive binary folder (big-endian), as Numbskull's loader reads it."""
    os.makedirs(path, exist_ok=True)
    pairs, sites = ising_arrays(n, m)
    nvar = n * m
    weights = np.zeros(2, dtype=[("id", ">i8"), ("fixed", "u1"), ("value", ">f8")])
    weights["id"] = [0, 1]
    weights["fixed"] = 1
    weights["value"] = [beta, h]
    variables = np.zeros(nvar, dtype=[("id", ">i8"), ("evidence", "u1"), ("initial", ">i8"),
                                      ("type", ">i2"), ("cardinality", ">i8")])
    variables["id"] = np.arange(nvar)
    variables["cardinality"] = 2

    def block(vids, function, weight_id):
        k = vids.shape[1]
        rec = np.zeros(len(vids), dtype=[("function", ">i2"), ("arity", ">i8"),
                                         ("edges", [("vid", ">i8"), ("equal", ">i8")], (k,)),
                                         ("weight", ">i8"), ("feature", ">f8")])
        rec["function"] = function
        rec["arity"] = k
        rec["edges"]["vid"] = vids
        rec["edges"]["equal"] = 1
        rec["weight"] = weight_id
        rec["feature"] = 1.0
        return rec.tobytes()

    edges = pairs.size + sites.size
    nfac = len(pairs) + len(sites)
    with open(os.path.join(path, "graph.meta"), "w") as f:
        f.write(f"{len(weights)},{nvar},{nfac},{edges}\n")
    with open(os.path.join(path, "graph.weights"), "wb") as f:
        f.write(weights.tobytes())
    with open(os.path.join(path, "graph.variables"), "wb") as f:
        f.write(variables.tobytes())
    with open(os.path.join(path, "graph.factors"), "wb") as f:
        f.write(block(pairs, EQUAL, 0))
        f.write(block(sites, ISTRUE, 1))
    return {"weights": len(weights), "variables": nvar, "factors": nfac, "edges": edges}


def load_numbskull(folder: str, threads: int):
    """Numbskull's own loader on the folder: its FactorGraph, ready to sample on ``threads`` threads."""
    import numbskull

    ns = numbskull.NumbSkull(directory=folder, nthreads=threads, quiet=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its loaders print progress lines
        ns.loadFGFromFile()
    return ns.getFactorGraph()


def build_numbskull(n: int, m: int, beta: float, h: float, threads: int):
    """The same graph through Numbskull's in-memory ``loadFactorGraph`` (no files)."""
    import numbskull
    from numbskull.numbskulltypes import Factor, FactorToVar, Variable, Weight

    pairs, sites = ising_arrays(n, m)
    nvar = n * m
    weight = np.zeros(2, Weight)
    weight["isFixed"] = True
    weight["initialValue"] = [beta, h]
    variable = np.zeros(nvar, Variable)
    variable["cardinality"] = 2
    nfac = len(pairs) + len(sites)
    factor = np.zeros(nfac, Factor)
    factor["factorFunction"][: len(pairs)] = EQUAL
    factor["factorFunction"][len(pairs):] = ISTRUE
    factor["weightId"][len(pairs):] = 1
    factor["featureValue"] = 1.0
    factor["arity"][: len(pairs)] = 2
    factor["arity"][len(pairs):] = 1
    factor["ftv_offset"] = np.concatenate([[0], np.cumsum(factor["arity"])[:-1]])
    fmap = np.zeros(pairs.size + sites.size, FactorToVar)
    fmap["vid"] = np.concatenate([pairs.ravel(), sites.ravel()])
    fmap["dense_equal_to"] = 1
    ns = numbskull.NumbSkull(nthreads=threads, quiet=True)
    with contextlib.redirect_stdout(io.StringIO()):
        ns.loadFactorGraph(weight, variable, factor, fmap, np.zeros(nvar, np.bool_), int(fmap.size))
    return ns.getFactorGraph()


def epoch_seconds(fg, epochs: int) -> tuple[float, float]:
    """Wall-clock seconds of ``epochs`` inference epochs (Numbskull's own per-epoch timer, summed) and
    the CPU seconds of this process meanwhile (all threads)."""
    fg.inference_total_time = 0.0
    fg.count[:] = 0  # Numbskull accumulates counts over calls but divides by this call's epochs
    c0 = time.process_time()
    fg.inference(0, epochs, sample_evidence=False, diagnostics=False)
    return fg.inference_total_time, time.process_time() - c0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="grid side (n x n)")
    p.add_argument("--beta", type=float, default=0.4)
    p.add_argument("--h", type=float, default=0.1)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--epochs", type=int, default=5, help="epochs per timed repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--folder", help="load the graph from this DeepDive folder (Numbskull's loader)")
    p.add_argument("--write-folder", help="write the grid as a DeepDive folder, then exit")
    args = p.parse_args(argv)

    if args.write_folder:
        meta = write_folder(args.write_folder, args.n, args.n, args.beta, args.h)
        print(json.dumps({"folder": args.write_folder, **meta}))
        return 0

    threads = [int(t) for t in args.threads.split(",")]
    t0 = time.perf_counter()
    graphs = {k: (load_numbskull(args.folder, k) if args.folder
                  else build_numbskull(args.n, args.n, args.beta, args.h, k)) for k in threads}
    load_s = time.perf_counter() - t0
    nvar = graphs[threads[0]].variable.shape[0]
    nfac = graphs[threads[0]].factor.shape[0]
    np.random.seed(0)  # Python-level only: numba's own generator is not reachable from here
    for fg in graphs.values():  # compile (or load the numba cache) and burn in
        epoch_seconds(fg, 1)
    rates, cpu_rates = {k: [] for k in threads}, {k: [] for k in threads}
    for _ in range(args.reps):
        for k in threads:
            wall, cpu = epoch_seconds(graphs[k], args.epochs)
            rates[k].append(nvar * args.epochs / wall)
            cpu_rates[k].append(nvar * args.epochs / cpu)
    out = {
        "peer": "numbskull", "numbskull": _version("numbskull"), "numpy": np.__version__,
        "numba": _version("numba"), "python": sys.version.split()[0],
        "variables": int(nvar), "factors": int(nfac), "source": args.folder or "loadFactorGraph",
        "load_s": load_s, "epochs_per_rep": args.epochs,
        "updates_per_s": {str(k): v for k, v in rates.items()},
        "updates_per_cpu_s": {str(k): v for k, v in cpu_rates.items()},
        # mean over sites of P(s = +1) estimated from the last repetition's epochs
        "mean_p_true": {str(k): float(np.mean(graphs[k].marginals)) for k in threads},
    }
    print(json.dumps(out))
    return 0


def _version(name: str):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
