"""Run a ``relaxtorch gibbs`` sweep: every (sampler, threads, seed) on one graph, against a reference.

A run burns in for ``burn_in`` sweeps, then restarts its counts from the burned-in assignment
and runs ``sweeps`` sweeps in ``checkpoints`` chunks of geometrically growing length; after
each chunk it measures the marginal error against the reference (outside the timed part), so
the curve error-vs-wall-clock has points from the first sweep to the last.  The sampler's
kernels are compiled (one throwaway sweep) before the clock starts.

The reference is exact enumeration when the free variables have at most ``EXACT_LIMIT``
assignments (``method = "auto"`` or ``"exact"``), else a long sequential systematic-scan Gibbs
run with its own seed (``"gibbs"``), or uniform marginals for a model symmetric in each
variable's values (``"uniform"``: a Potts model without a field; the user vouches for it).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from ... import __version__
from ..._seeding import derive
from .._report import machine
from ..tradeoff.runner import threads as use_threads
from .config import EXACT_LIMIT, Config
from .graphs import build_graph, describe_spec
from .metrics import free_states, marginal_error, time_to, uniform_marginals
from .samplers import SAMPLERS, build_sampler, factor_api, label


@dataclass(frozen=True)
class RunSpec:
    sampler: str
    threads: int
    seed: int
    settings: dict

    @property
    def label(self) -> str:
        return label(self.sampler, self.threads)

    @property
    def file_label(self) -> str:
        return f"{self.sampler}__t{self.threads}__seed{self.seed}"


def plan(cfg: Config) -> list[RunSpec]:
    """The runs: threaded samplers once per thread count, the others on one thread; each seed."""
    runs = []
    for s in cfg.sweep["samplers"]:
        counts = cfg.sweep["threads"] if SAMPLERS[s].threaded else [1]
        for k in counts:
            for seed in cfg.sweep["seeds"]:
                runs.append(RunSpec(s, k, seed, dict(cfg.samplers.get(s, {}))))
    return runs


def checkpoints(sweeps: int, count: int) -> list[int]:
    """Cumulative sweep counts at which the error is measured: geometric from 1 to ``sweeps``."""
    points = np.unique(np.round(np.geomspace(1, sweeps, count)).astype(np.int64))
    return [int(p) for p in points if p >= 1]


def reference_marginals(graph, ref: dict, bar=None) -> tuple[np.ndarray, dict]:
    """The reference marginals and how they were made (see the module docstring)."""
    from ...mcmc.factor import exact_marginals

    Gibbs, marginals = factor_api("Gibbs"), factor_api("marginals")  # noqa: N806
    a = graph.arrays
    method = ref["method"]
    states = free_states(a.cardinality, a.evidence)
    if method == "auto":
        method = "exact" if states <= EXACT_LIMIT else "gibbs"
    if method == "exact":
        t0 = time.perf_counter()
        m = np.asarray(exact_marginals(graph), np.float64)
        return m, {"method": "exact", "states": states, "seconds": time.perf_counter() - t0}
    if method == "uniform":
        return uniform_marginals(a.cardinality, a.evidence, graph.max_cardinality), {"method": "uniform (symmetry)"}
    sampler = Gibbs(scan="systematic")
    seed = ref["seed"]
    t0 = time.perf_counter()
    state = sampler.init(graph, seed)
    if ref["burn_in"]:
        state = sampler.run(graph, state, ref["burn_in"])
        state = sampler.init(graph, derive(seed, "after-burn-in"), x0=state.x)
    done, chunk = 0, max(1, ref["sweeps"] // 50)
    while done < ref["sweeps"]:
        step = min(chunk, ref["sweeps"] - done)
        state = sampler.run(graph, state, step)
        done += step
        if bar is not None:
            bar.update(step)
    m = np.asarray(marginals(state), np.float64)
    return m, {"method": "gibbs", "sweeps": ref["sweeps"], "burn_in": ref["burn_in"], "seed": seed,
               "seconds": time.perf_counter() - t0}


def _mean_trace(state, name: str):
    trace = getattr(state, name, None)
    if trace is None:
        return None
    trace = np.asarray(trace, np.float64)
    return float(trace.mean()) if trace.size else None


def run_one(graph, spec: RunSpec, cfg: Config, reference: np.ndarray, free: np.ndarray, bar=None,
            on_checkpoint=None) -> dict:
    """One run's row: updates/s, sweeps, the error curve, time to epsilon, mean energy (and staleness).

    ``on_checkpoint(spec, marginals)`` is called after every chunk (to save the marginals so far).
    A Ctrl-C during the run returns the row so far with ``status = "interrupted"`` in
    ``KeyboardInterrupt.args[0]`` (the caller reports it, then stops).
    """
    marginals = factor_api("marginals")
    r = cfg.run
    row = dict(sampler=spec.sampler, label=spec.label, threads=spec.threads, seed=spec.seed, settings=spec.settings,
               status="running", sweeps=0, updates=0, seconds=0.0, curve=[])
    sampler = build_sampler(spec.sampler, spec.settings, spec.threads)
    seed = derive(spec.seed, "gibbs", spec.sampler, spec.threads)
    with use_threads(spec.threads):
        t0 = time.perf_counter()
        sampler.run(graph, sampler.init(graph, derive(seed, "compile")), 1)  # compile the kernels
        row["compile_seconds"] = time.perf_counter() - t0
        state = sampler.init(graph, seed)
        try:
            t0 = time.perf_counter()
            if r["burn_in"]:
                state = sampler.run(graph, state, r["burn_in"])
                state = sampler.init(graph, derive(seed, "after-burn-in"), x0=state.x)
            row["burn_in_seconds"] = time.perf_counter() - t0
            if bar is not None:
                bar.update(r["burn_in"])
            done, elapsed = 0, 0.0
            for target in checkpoints(r["sweeps"], r["checkpoints"]):
                t0 = time.perf_counter()
                state = sampler.run(graph, state, target - done)
                elapsed += time.perf_counter() - t0
                if bar is not None:
                    bar.update(target - done)
                done = target
                m = np.asarray(marginals(state), np.float64)
                row["curve"].append({"sweeps": done, "seconds": elapsed,
                                     "error": marginal_error(m, reference, free)})
                row.update(sweeps=done, updates=int(state.updates), seconds=elapsed)
                if on_checkpoint is not None:
                    on_checkpoint(spec, m)
        except KeyboardInterrupt:
            row["status"] = "interrupted"
            _finish(row, state, cfg)
            raise KeyboardInterrupt(row) from None
    row["status"] = "ok"
    return _finish(row, state, cfg)


def staleness_summary(staleness):
    """AsyncGibbs's measured staleness as a number (its mean), or None for the other samplers."""
    if isinstance(staleness, dict):
        for key in ("mean", "mean_staleness", "mean_lag"):
            if key in staleness:
                return float(staleness[key])
        values = [v for v in staleness.values() if isinstance(v, (int, float))]
        return float(values[0]) if values else None
    if staleness is None or not np.size(staleness):
        return None
    return float(np.mean(staleness))


def _finish(row: dict, state, cfg: Config) -> dict:
    eps = cfg.sweep["epsilon"]
    row["updates_per_s"] = row["updates"] / row["seconds"] if row["seconds"] > 0 else None
    row["error"] = row["curve"][-1]["error"] if row["curve"] else None
    row["time_to_epsilon"] = time_to(row["curve"], eps)
    row["sweeps_to_epsilon"] = time_to(row["curve"], eps, "sweeps")
    row["mean_energy"] = _mean_trace(state, "energy")
    row["mean_magnetisation"] = _mean_trace(state, "magnetisation")
    row["staleness"] = staleness_summary(getattr(state, "staleness", None))
    return row


def run_sweep(cfg: Config, *, progress: bool = True, on_run=None, on_checkpoint=None, on_reference=None):
    """Build the graph, compute the reference, run every planned run; returns the report.

    ``on_run(report)`` after every run (``"partial": True`` until the last); ``on_checkpoint(spec,
    marginals)`` after every chunk; ``on_reference(marginals)`` once the reference is known.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    t0 = time.perf_counter()
    graph = build_graph(cfg.graph)
    build_seconds = time.perf_counter() - t0
    a = graph.arrays
    free = np.asarray(a.evidence) < 0
    runs = plan(cfg)
    ref_sweeps = 0
    states = free_states(a.cardinality, a.evidence)
    if cfg.reference["method"] == "gibbs" or (cfg.reference["method"] == "auto" and states > EXACT_LIMIT):
        ref_sweeps = cfg.reference["sweeps"]
    total = ref_sweeps + len(runs) * (cfg.run["sweeps"] + cfg.run["burn_in"])
    info = {"spec": describe_spec(cfg.graph), "variables": graph.num_variables, "free": int(free.sum()),
            "factors": graph.num_factors, "weights": graph.num_weights, "edges": graph.num_edges,
            "max_cardinality": graph.max_cardinality, "free_states": states, "build_seconds": build_seconds}
    rows: list[dict] = []
    with tqdm(total=total, desc="gibbs", unit="sweep", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:
        bar.set_postfix_str("reference", refresh=True)
        reference, ref_info = reference_marginals(graph, cfg.reference, bar)
        if on_reference is not None:
            on_reference(reference)
        run_machine = machine()
        for spec in runs:
            bar.set_postfix_str(f"{spec.label} seed{spec.seed}", refresh=True)
            try:
                rows.append(run_one(graph, spec, cfg, reference, free, bar, on_checkpoint))
            except KeyboardInterrupt as stop:
                if stop.args and isinstance(stop.args[0], dict):
                    rows.append(stop.args[0])
                if on_run is not None:
                    on_run(_report(cfg, run_machine, info, ref_info, rows, started, len(runs)))
                raise
            if on_run is not None:
                on_run(_report(cfg, run_machine, info, ref_info, rows, started, len(runs)))
    return _report(cfg, run_machine, info, ref_info, rows, started, len(runs))


def _report(cfg, run_machine, info, ref_info, rows, started, planned) -> dict:
    finished = sum(r["status"] == "ok" for r in rows)
    return {"relaxtorch": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "partial": finished < planned, "runs_planned": planned, "runs_finished": finished,
            "seconds": time.perf_counter() - started, "config": cfg.to_dict(), "machine": run_machine,
            "graph": info, "reference": ref_info, "epsilon": cfg.sweep["epsilon"],
            "error_metric": "mean over free variables of the total-variation distance to the reference marginal",
            "runs": list(rows)}
