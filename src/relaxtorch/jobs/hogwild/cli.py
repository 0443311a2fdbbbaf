"""``relaxtorch hogwild``: run Hogwild!/Buckwild! and compare worker counts and precisions.

Every run of a signature at N workers is paired with a 1-worker run of the same
signature (the sequential baseline, same code path) so the table can show the
speed-up; the float32 signature ``D32M32G32C32`` is the reference for losses.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..._files import read_toml
from .._cli import CLIError, RunFailed
from .._config import ConfigChecker

PROBLEMS = ("rcv1-like", "rcv1-like-svm", "rcv1-like-lsq", "digits", "digits-mlp", "matrix-completion",
            "libsvm:PATH")
DEFAULTS = dict(problem="rcv1-like", workers="2", signature="D32M32G32C32,D8M8G32C8", epochs=None, lr=None,
                lr_decay=0.8, lam=0.0, model_range=4.0, order="blocks", seed=0, examples=1_000_000, features=100_000,
                nnz=50.0, skew=1.0, max_df=0.05, rank=10, rows=2000, cols=2000, density=0.05, loss=None,
                out="reports/hogwild", timeout=None, stale_every=16, progress=True, json=False,
                replication="shared,per-worker", sync_every=65536, sync="full", merge="sum")
# the bare rcv1-like problem: 16M updates, over a second per configuration up to 16M updates/s (one
# worker streams 6-9M updates/s on the 2-core machines here, so 2 scaling workers would pass 10M/s)
GENERATED_EPOCHS = 16


_error = CLIError
HELP = "lock-free parallel SGD on a shared model (Hogwild!, low-precision Buckwild!)"
DESCRIPTION = ("Train with N worker processes writing one shared model without locks, in float32 (Hogwild!) "
               "or low precision (Buckwild!, DMGC signature like D8M8G32C8), and compare loss, updates/s and "
               "staleness with the 1-worker run. Writes a JSON report, a PNG plot of loss vs time and the "
               "final models to --out.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--config", metavar="TOML", help="read options from a TOML file (command-line options win)")
    a("--problem", help=f"one of {', '.join(PROBLEMS)} (default rcv1-like)")
    a("--workers", help="worker count or comma-separated counts (default 2); a 1-worker baseline always runs")
    a("--signature", help="DMGC signature(s), comma-separated (default D32M32G32C32,D8M8G32C8)")
    a("--epochs", type=int, help="passes over the data (default: the problem's)")
    a("--lr", type=float, help="step size (default: the problem's)")
    a("--lr-decay", type=float, help="step size factor per epoch (default 0.8)")
    a("--lam", type=float, help="L2 penalty (default 0)")
    a("--model-range", type=float, help="largest |weight| a fixed-point model holds (default 4)")
    a("--order", choices=("blocks", "shuffle", "sequential", "rr", "so", "flipflop"),
      help="example order in an epoch (relaxtorch.order; default blocks; shuffle = rr)")
    a("--loss", choices=("logistic", "squared", "hinge"), help="loss for libsvm problems (default logistic)")
    a("--seed", type=int, help="seed for data, model and rounding (default 0)")
    r = p.add_argument_group("model replication (DimmWitted)")
    r.add_argument("--replication", help="shared (one model, Hogwild!) and/or per-worker (a private replica per "
                   "worker, synced), comma-separated (default shared,per-worker)")
    r.add_argument("--sync-every", type=int, help="per-worker: updates per worker between syncs (default 65536)")
    r.add_argument("--sync", choices=("touched", "full"), help="per-worker: push only the cache lines written "
                   "since the last sync, or the whole model (default full: faster unless a sync interval "
                   "leaves most of the model untouched)")
    r.add_argument("--merge", choices=("sum", "average"), help="per-worker: add each worker's delta, or "
                   "1/workers of it (model averaging) (default sum)")
    g = p.add_argument_group("generated data (rcv1-like, matrix-completion)")
    g.add_argument("--examples", type=int, help="examples (default 1000000)")
    g.add_argument("--features", type=int, help="features (default 100000)")
    g.add_argument("--nnz", type=float, help="mean non-zeros per example (default 50)")
    g.add_argument("--skew", type=float, help="Zipf exponent of word frequencies (default 1.0)")
    g.add_argument("--max-df", type=float, help="largest fraction of examples holding one feature (default 0.05)")
    g.add_argument("--rank", type=int, help="matrix-completion rank (default 10)")
    g.add_argument("--rows", type=int, help="matrix rows (default 2000)")
    g.add_argument("--cols", type=int, help="matrix columns (default 2000)")
    g.add_argument("--density", type=float, help="fraction of observed entries (default 0.05)")
    a("--out", help="output folder (default reports/hogwild)")
    a("--timeout", type=float, help="stop a run after this many seconds")
    a("--stale-every", type=int, help="measure staleness on every k-th update (power of two, default 16)")
    a("--no-progress", dest="progress", action="store_false", default=None, help="hide the progress bar")
    a("--json", action="store_true", default=None, help="print the JSON report instead of the table")


def _options(args, where: dict | None = None) -> dict:
    """The options: defaults, then the TOML file's, then the command line's.  ``where`` (if given)
    gets key -> config entry name for the values the file set (for error messages)."""
    opts = dict(DEFAULTS)
    if args.config:
        names: dict = {}
        opts.update(_read_config(args.config, names))
        if where is not None:
            where.update(names)
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = value
            if where is not None:
                where.pop(key, None)
    return opts


# the TOML type of every option ([hogwild] table); workers and signature may be lists
TYPES = dict(problem=str, workers=int, signature=str, epochs=int, lr=float, lr_decay=float, lam=float,
             model_range=float, order=str, seed=int, examples=int, features=int, nnz=float, skew=float,
             max_df=float, rank=int, rows=int, cols=int, density=float, loss=str, out=str, timeout=float,
             stale_every=int, progress=bool, json=bool, replication=str, sync_every=int, sync=str, merge=str)
LISTS = ("workers", "signature", "replication")


class _Checker(ConfigChecker):
    error = CLIError


def _read_config(path, names: dict | None = None) -> dict:
    """The options of a TOML file: a ``[hogwild]`` table (or the same keys at the top level)."""
    raw = read_toml(path, CLIError)
    c = _Checker(str(path))
    if "hogwild" in raw:
        for key in raw:  # a key beside the table would be silently ignored otherwise
            if key != "hogwild":
                c.fail(key, "unknown top-level key beside the [hogwild] table (move it into the table)")
        where, table = "[hogwild]", c.table("[hogwild]", raw["hogwild"])
    else:
        where, table = "", raw
    out = {}
    for key, value in table.items():
        k = key.replace("-", "_")
        if k not in TYPES:
            c.fail(f"{where}.{key}" if where else key, f"unknown option (choose from {', '.join(TYPES)})")
        name = f"{where}.{key}" if where else key
        if names is not None:
            names[k] = f"{path}: {name}"
        if k in LISTS:
            out[k] = ",".join(str(v) for v in c.scalar_or_list(name, value, TYPES[k]))
        else:
            out[k] = c.scalar(name, value, TYPES[k])
    return out


def _int_list(text, name) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise _error(f"invalid --{name} {text!r}: expected integers like 2 or 1,2,4") from None
    if not values or min(values) < 1:
        raise _error(f"invalid --{name} {text!r}: counts must be >= 1")
    return sorted(set(values))


def _replications(opts) -> list[str]:
    """The --replication list, --sync-every, --sync and --merge, checked (one-line errors)."""
    from ...parallel._replica import MERGES, REPLICATIONS, SYNCS
    text = str(opts["replication"])
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in REPLICATIONS]
    if not values or bad:
        raise _error(f"invalid --replication {text!r}: expected {' and/or '.join(REPLICATIONS)}, comma-separated")
    k = opts["sync_every"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise _error(f"invalid --sync-every {k!r}: must be an integer >= 1 (updates per worker between syncs)")
    for name, choices in (("sync", SYNCS), ("merge", MERGES)):
        if opts[name] not in choices:
            raise _error(f"invalid --{name} {opts[name]!r}: choose {' or '.join(choices)}")
    return list(dict.fromkeys(values))


def build_problem(opts):
    """The Problem named by ``opts['problem']`` (a user error raises CLIError)."""
    from ...data.sparse import make_bag_of_words, make_low_rank
    from ...parallel.problems import DenseLinear, MatrixCompletion, SparseLinear, TorchModel
    name = str(opts["problem"])
    common = dict(lr=opts["lr"], lam=opts["lam"], model_range=opts["model_range"])
    if name.startswith("rcv1-like"):
        task, loss = {"rcv1-like": ("logistic", "logistic"), "rcv1-like-svm": ("separable", "hinge"),
                      "rcv1-like-lsq": ("squared", "squared")}.get(name, (None, None))
        if task is None:
            raise _error(f"unknown problem {name!r}; choose one of {', '.join(PROBLEMS)}")
        ds = make_bag_of_words(opts["examples"], opts["features"], opts["nnz"], skew=opts["skew"],
                               max_df=opts["max_df"], task=task, seed=opts["seed"])
        problem = SparseLinear(ds, loss, name=name, **common)
        problem.default_epochs = GENERATED_EPOCHS
        return problem
    if name.startswith("libsvm:"):
        from ...data.libsvm import LibSVMError, load_libsvm
        path = name[len("libsvm:"):]
        try:
            ds = load_libsvm(path)
        except FileNotFoundError:
            raise _error(f"no such file: {path}") from None
        except (LibSVMError, UnicodeDecodeError) as exc:
            raise _error(str(exc)) from None
        return SparseLinear(ds, opts["loss"] or "logistic", name=os.path.basename(path), **common)
    if name in ("digits", "digits-mlp"):
        import torch
        from sklearn.datasets import load_digits
        digits = load_digits()
        X = (digits.data / 16.0).astype("float32")
        if name == "digits":
            return DenseLinear(X, (digits.target >= 5).astype("float32"), opts["loss"] or "logistic",
                               name="digits-logistic", **{**common, "lr": common["lr"] or 0.05})
        from ..._seeding import build_module, generator
        mlp = build_module(lambda: torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                                       torch.nn.Linear(64, 10)), generator(opts["seed"], "model"))
        return TorchModel(mlp, X, digits.target, "cross_entropy", name="digits-mlp", **common)
    if name == "matrix-completion":
        data = make_low_rank(opts["rows"], opts["cols"], opts["rank"], opts["density"], seed=opts["seed"])
        return MatrixCompletion(data, name=name, **common)
    raise _error(f"unknown problem {name!r}; choose one of {', '.join(PROBLEMS)}")


def run(args) -> None:
    """Handler of ``relaxtorch hogwild``."""
    from . import report
    from .._output import Staging
    from ...parallel.runner import RunInterrupted, WorkerError, hogwild
    from ...parallel.signature import parse_signature
    from .options import check_memory, check_options
    where: dict = {}
    opts = _options(args, where)
    check_options(opts, where)  # ranges (--lr inf, --seed -1) and sizes, before anything is allocated
    try:
        sigs = [str(parse_signature(s.strip())) for s in str(opts["signature"]).split(",") if s.strip()]
    except ValueError as exc:
        raise _error(str(exc)) from None
    if not sigs:
        raise _error("--signature is empty")
    counts = _int_list(opts["workers"], "workers")
    if 1 not in counts:
        counts = [1] + counts
    if "D32M32G32C32" not in sigs:
        sigs = ["D32M32G32C32"] + sigs
    reps = _replications(opts)
    check_memory(opts)
    # --out is checked before the problem is built; the files are staged and swapped in at the end
    with Staging(opts["out"], "hogwild", owns=report.FILES) as stage:
        try:
            problem = build_problem(opts)
        except ValueError as exc:  # invalid generator or problem settings
            raise _error(str(exc)) from None
        if problem.kind == "torch" and "per-worker" in reps:
            if opts["replication"] != DEFAULTS["replication"]:
                raise _error(f"invalid --replication per-worker for {problem.name}: torch models train on the "
                             "shared parameters (use a linear or matrix-completion problem)")
            reps = ["shared"]
        with stage.writing():
            results = _train(problem, sigs, counts, reps, opts, stage, hogwild, RunInterrupted, WorkerError)
            problem.release()
            report.write_json(os.path.join(stage.path, "hogwild.json"), results, {"problem": problem.name})
            report.plot(os.path.join(stage.path, "hogwild.png"), results, f"{problem.name}: loss vs wall-clock")
            stage.commit()
    out = stage.out
    json_path, png = out / "hogwild.json", out / "hogwild.png"
    if opts["json"]:
        with open(json_path, encoding="utf-8") as f:
            print(f.read())
        return
    m = report.machine()
    print(f"{problem.name}: {problem.n_items} examples, {m['cpu_count']} cores ({m['cpu']}), torch {m['torch']}")
    print(report.table(results))
    print(f"\nloss / seq: final loss over the 1-worker float32 run's; s to seq loss: wall-clock seconds until the "
          f"run first reaches that loss; per-worker/K: private replicas synced every K updates (stale: updates "
          f"of other workers not yet seen at a sync; in sync: share of the workers' CPU time spent syncing); writes: "
          f"fraction of coordinate writes that changed the model.\nreport: {json_path}\nplot:   {png}\n"
          f"models: {out}/model-*.pt")


def _train(problem, sigs, counts, reps, opts, stage, hogwild, RunInterrupted, WorkerError) -> list:
    """Every run of the job, its model saved in the staging folder."""
    results = []
    for sig in sigs:
        for n, rp in [(n, rp) for n in counts for rp in (reps if n > 1 else ["shared"])]:  # 1 worker: sequential
            what = f"{sig} with {n} worker(s)" + (f", {rp}" if rp != "shared" else "")
            name = f"model-{sig}-w{n}.pt" if rp == "shared" else f"model-{sig}-w{n}-{rp}.pt"
            ckpt = os.path.join(stage.path, name)
            try:
                r = hogwild(problem, workers=n, signature=sig, epochs=opts["epochs"], lr=opts["lr"],
                            lr_decay=opts["lr_decay"], order=opts["order"], seed=opts["seed"],
                            stale_every=opts["stale_every"], checkpoint=ckpt, progress=bool(opts["progress"]),
                            timeout=opts["timeout"], replication=rp, sync_every=opts["sync_every"],
                            sync=opts["sync"], merge=opts["merge"])
            except ValueError as exc:
                raise _error(str(exc)) from None
            except WorkerError as exc:
                raise RunFailed(f"{what}: {exc}") from None
            except RunInterrupted as exc:
                if exc.result is not None and exc.result.checkpoint:
                    print(f"relaxtorch hogwild: {what} interrupted; last consistent model "
                          f"saved to {stage.if_unfinished(exc.result.checkpoint)}", file=sys.stderr)
                raise
            results.append(r)
    return results
