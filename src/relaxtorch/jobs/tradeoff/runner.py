"""Run a sweep: every planned (model, data set, algorithm, precision, order, seed), one row each.

``run_sweep(cfg)`` returns the report as a plain dict (config, machine, optima,
skipped combinations, one row per run with its per-epoch history, and the
summary over seeds); :mod:`.report` writes and prints it.  Each run draws its
initial model, data order and rounding from generators derived from its seed
(never torch's global RNG), so a row is reproduced by re-running its
configuration with its seed.
"""
from __future__ import annotations

import contextlib
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch

from ... import __version__
from ..._seeding import generator
from .._report import machine
from .algorithms import RUNNERS
from .config import Config
from .convex import ConvexObjective
from .models import CONVEX_MODELS, build_model, n_outputs
from .plan import RunSpec, load_data, plan
from .precisions import PRECISIONS

BASELINE = ("sgd", "fp32")


@contextlib.contextmanager
def threads(n: int):
    """Use ``n`` threads in torch and numba (tiny models run fastest on one), restored on exit."""
    try:
        import numba
    except ImportError:  # pragma: no cover
        numba = None
    saved = (torch.get_num_threads(), numba.get_num_threads() if numba else None)
    torch.set_num_threads(n)
    if numba:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        if numba:
            numba.set_num_threads(saved[1])


def warm_up(runs: list[RunSpec], datasets: dict) -> None:
    """Pay one-time costs (lazy imports, compiled-kernel loading) before any run is timed."""
    from ...numbers import quantize
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(0))
    for name in dict.fromkeys(r.precision for r in runs):
        p = PRECISIONS[name]
        for fmt in dict.fromkeys(f for f in (p.weight, p.activation, p.error, p.grad, p.momentum, p.acc) if f):
            for rounding in ("nearest", "stochastic"):
                quantize(x, fmt, rounding, generator=torch.Generator().manual_seed(0))
    from ...order import make, parse_spec
    for name in dict.fromkeys(parse_spec(r.order)[0] for r in runs):  # load the sorters' compiled kernels
        order = make(name, 4, d=3)
        perm, state = order.epoch(order.init(torch.Generator().manual_seed(0)))
        order.observe(state, perm, torch.zeros(4, 3))
    for model, ds in dict.fromkeys((r.model, r.dataset) for r in runs):
        m = build_model(model, datasets[ds])
        opt = torch.optim.SGD(m.parameters(), lr=0.0)  # the first step imports torch._dynamo (seconds)
        m(datasets[ds].X_train[:8]).sum().backward()
        opt.step()
        opt.zero_grad()


def run_one(spec: RunSpec, data, objective) -> dict:
    """Train one configuration and return its row (history included)."""
    precision = PRECISIONS[spec.precision]
    t0 = time.perf_counter()
    model = build_model(spec.model, data, generator(spec.seed, "model"))
    result = RUNNERS[spec.algorithm](model, data, precision, spec.hyper, seed=spec.seed, objective=objective,
                                     order=spec.order)
    seconds = time.perf_counter() - t0
    last = result.history[-1]
    return dict(model=spec.model, dataset=spec.dataset, algorithm=spec.algorithm, precision=spec.precision,
                order=spec.order, sort_seconds=result.sort_seconds, order_bytes=result.order_bytes, seed=spec.seed, task=data.task, test_error=last["test_error"], train_loss=last["train_loss"],
                suboptimality=last["suboptimality"], iterate_test_error=last.get("iterate_test_error"),
                weight_bits=result.weight_bits, memory_bytes=sum(result.memory.values()), memory=result.memory,
                seconds=seconds, train_seconds=last["seconds"], epochs=spec.hyper.epochs,
                hyper=spec.hyper.to_dict(), formats=precision.formats(), extra=result.extra,
                history=result.history)


def run_sweep(cfg: Config, *, progress: bool = True, on_run=None) -> dict:
    """Plan, run (with a progress bar on stderr) and summarize a sweep.

    ``on_run(report)``, when given, is called after every finished run with the report of
    the runs so far (``"partial": True`` until the last), so a caller can keep it on disk.
    """
    from tqdm.auto import tqdm

    datasets = load_data(cfg)
    runs, skipped = plan(cfg, datasets)
    objectives, optima, rows = {}, {}, []
    with threads(cfg.sweep["threads"]):
        run_machine = machine()  # inside: torch_threads and numba_threads are the sweep's
        for spec in runs:
            key = (spec.dataset, spec.hyper.weight_decay)
            if spec.model in CONVEX_MODELS and key not in objectives:
                data = datasets[spec.dataset]
                obj = objectives[key] = ConvexObjective(data, spec.hyper.weight_decay, n_outputs(data))
                opt = obj.optimum()
                optima[f"{spec.dataset}, weight_decay={spec.hyper.weight_decay:g}"] = dict(
                    f_star=opt.value, grad_norm=opt.grad_norm, newton_iterations=opt.iterations)
        started = time.perf_counter()
        with tqdm(total=len(runs), desc="tradeoff", unit="run", disable=not progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            warm_up(runs, datasets)
            for spec in runs:
                bar.set_postfix_str(spec.label, refresh=True)
                obj = objectives.get((spec.dataset, spec.hyper.weight_decay)) if spec.model in CONVEX_MODELS else None
                rows.append(run_one(spec, datasets[spec.dataset], obj))
                bar.update(1)
                if on_run is not None and len(rows) < len(runs):
                    on_run(_report(cfg, run_machine, datasets, optima, skipped, rows, started, len(runs)))
    return _report(cfg, run_machine, datasets, optima, skipped, rows, started, len(runs))


def _report(cfg, run_machine, datasets, optima, skipped, rows, started, planned) -> dict:
    return {"relaxtorch": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "partial": len(rows) < planned, "runs_planned": planned, "runs_finished": len(rows),
            "seconds": time.perf_counter() - started, "config": cfg.to_dict(),
            "machine": run_machine,
            "datasets": {n: dict(task=d.task, n_train=int(d.X_train.shape[0]), n_test=int(d.X_test.shape[0]),
                                 n_features=d.n_features, n_classes=d.n_classes) for n, d in datasets.items()},
            "optima": optima, "skipped": skipped, "summary": summarize(rows), "runs": list(rows)}


def _mean_std(values) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v))


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (model, data set, algorithm, precision, order): means and stds over seeds, delta to
    fp32 SGD with random reshuffling (the sweep's first order when it has no "rr")."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["dataset"], r["algorithm"], r["precision"], r.get("order", "rr")),
                          []).append(r)
    out = []
    for (model, ds, alg, prec, order), rs in groups.items():
        err, err_sd = _mean_std(r["test_error"] for r in rs)
        loss, loss_sd = _mean_std(r["train_loss"] for r in rs)
        sub, sub_sd = _mean_std(r["suboptimality"] for r in rs)
        it, _ = _mean_std(r["iterate_test_error"] for r in rs)
        sec, _ = _mean_std(r["seconds"] for r in rs)
        sort_sec, _ = _mean_std(r.get("sort_seconds") for r in rs)
        order_bytes = max((r.get("order_bytes") or 0) for r in rs)
        out.append(dict(model=model, dataset=ds, algorithm=alg, precision=prec, order=order, task=rs[0]["task"],
                        seeds=[r["seed"] for r in rs], test_error=err, test_error_std=err_sd,
                        train_loss=loss, train_loss_std=loss_sd, suboptimality=sub, suboptimality_std=sub_sd,
                        iterate_test_error=it, weight_bits=rs[0]["weight_bits"],
                        memory_bytes=rs[0]["memory_bytes"], seconds=sec, sort_seconds=sort_sec,
                        order_bytes=order_bytes))
    first_order = {}
    for s in out:
        first_order.setdefault((s["model"], s["dataset"]), s["order"])
    base_order = {k: "rr" if any(s["order"] == "rr" for s in out if (s["model"], s["dataset"]) == k) else v
                  for k, v in first_order.items()}
    base = {(s["model"], s["dataset"]): s["test_error"] for s in out
            if (s["algorithm"], s["precision"]) == BASELINE and s["order"] == base_order[(s["model"], s["dataset"])]}
    for s in out:
        b = base.get((s["model"], s["dataset"]))
        s["delta_test_error"] = None if b is None or s["test_error"] is None else s["test_error"] - b
    return out
