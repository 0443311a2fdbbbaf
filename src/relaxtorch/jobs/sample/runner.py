"""Run the sweep: every planned (problem, sampler, precision, seed), ``chains`` chains each.

A gradient sampler draws a uniform minibatch (with replacement) of ``batch_size`` indices each
step from a generator derived from the run's seed and chain; an MH sampler draws its own data.
Samples are kept after ``burn_in``, every ``thin``-th, within ``max_sample_mb``; a chain that
turns NaN/inf stops the run (the row says where), and the sweep goes on.  Each run's row
carries what it cost (gradient evaluations, data touched per step, bits per stored number,
seconds) next to what it got (posterior errors against the exact answer, predictive NLL,
accuracy and calibration, ESS per second, R-hat).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import torch

from ... import __version__
from ..._seeding import generator
from .._report import machine
from ..tradeoff.runner import threads
from .config import Config
from .precisions import bits_of, format_for
from .problems import build_problem, exact_moments
from .samplers import SAMPLERS, skip_reason


@dataclass(frozen=True)
class RunSpec:
    problem: str
    sampler: str
    precision: str
    seed: int
    settings: dict

    @property
    def label(self) -> str:
        return f"{self.problem}/{self.sampler}/{self.precision}/seed{self.seed}"


def plan(cfg: Config, problems: dict) -> tuple[list[RunSpec], list[dict]]:
    """The runs of the sweep and the skipped combinations (with the reason)."""
    runs, skipped = [], []
    for p in cfg.sweep["problems"]:
        for s in cfg.sweep["samplers"]:
            spec = SAMPLERS[s]
            why = skip_reason(spec, problems[p], cfg.settings(p, s))
            if why:
                skipped.append(dict(problem=p, sampler=s, reason=why))
                continue
            precisions = [q for q in cfg.sweep["precisions"] if q != "fp32"] if spec.precision else ["fp32"]
            if not precisions:
                skipped.append(dict(problem=p, sampler=s, reason="a low-precision sampler and no precision "
                                                                  "other than fp32 in [sweep].precisions"))
            for q in precisions:
                for seed in cfg.sweep["seeds"]:
                    runs.append(RunSpec(p, s, q, seed, cfg.settings(p, s)))
    return runs, skipped


def _chain(spec: RunSpec, problem, kernel, chain: int, cfg: Config, bar, collector):
    """Run one chain; returns (steps done, info sums, error or None)."""
    ch = cfg.chain
    gen = generator(spec.seed, "chain", spec.problem, spec.sampler, spec.precision, chain)
    batches = generator(spec.seed, "batches", spec.problem, chain)
    family = SAMPLERS[spec.sampler].family
    # the MH models hold their data in float64 (energy differences of nearby points cancel)
    state = kernel.init(problem.init.double() if family == "mh" else problem.init)
    sums = {"grad_evals": 0, "data_touched": 0, "accepted": 0, "tests": 0}
    n = problem.data_size
    for step in range(ch["steps"]):
        minibatch = None
        if family == "gradient":
            minibatch = problem.batch(torch.randint(n, (ch["batch_size"],), generator=batches))
        try:
            state, info = kernel.step(gen, state, minibatch, spec.settings["step_size"])
        except FloatingPointError as exc:
            return step, sums, str(exc)
        sums["grad_evals"] += info.grad_evals
        sums["data_touched"] += info.data_touched
        if info.accepted is not None:
            sums["tests"] += 1
            sums["accepted"] += int(info.accepted)
        collector.add(state.position)
        if bar is not None and step % 50 == 49:
            bar.update(50)
    if bar is not None:
        bar.update(ch["steps"] % 50)
    return ch["steps"], sums, None


def run_one(spec: RunSpec, problem, exact: dict, cfg: Config, bar=None) -> tuple[dict, dict, dict | None]:
    """Run a configuration's chains; returns (its row, its samples as a dict of tensors, its picture)."""
    from ...mcmc import SampleCollector, stack_chains
    from .metrics import assess, flat
    from .plots import picture

    ch = cfg.chain
    fmt = format_for(spec.precision, problem, exact)
    kernel = SAMPLERS[spec.sampler].build(problem, spec.settings, fmt)
    budget = int(ch["max_sample_mb"] * 1e6 / ch["chains"])
    collectors, totals, error, done = [], {"grad_evals": 0, "data_touched": 0, "accepted": 0, "tests": 0}, None, 0
    t0 = time.perf_counter()
    try:
        for c in range(ch["chains"]):
            col = SampleCollector(burn_in=ch["burn_in"], thin=ch["thin"], max_bytes=max(budget, 1), device="cpu")
            collectors.append(col)
            steps, sums, error = _chain(spec, problem, kernel, c, cfg, bar, col)
            done += steps
            for k in totals:
                totals[k] += sums[k]
            if error:
                break
    finally:
        seconds = time.perf_counter() - t0
    samples = stack_chains(collectors) if not error and all(c.draws for c in collectors) else None
    row = dict(problem=spec.problem, sampler=spec.sampler, precision=spec.precision, seed=spec.seed,
               settings=spec.settings, exact=SAMPLERS[spec.sampler].exact, status="ok" if not error else "diverged",
               error=error, chains=ch["chains"], steps=ch["steps"], steps_done=done, seconds=seconds,
               bits_per_number=bits_of(fmt), grad_evals_per_step=totals["grad_evals"] / max(done, 1),
               data_touched_per_step=totals["data_touched"] / max(done, 1),
               acceptance=(totals["accepted"] / totals["tests"]) if totals["tests"] else None,
               draws=sum(c.draws for c in collectors))
    pic = None
    if samples is not None:
        row.update(assess(problem, exact, samples, seconds))
        pic = picture(flat(samples))
    return row, _flat_samples(samples, collectors), pic


def _flat_samples(samples, collectors) -> dict:
    """What a run saves: the samples (chains, draws, *event) per parameter name."""
    if samples is None:  # a diverged run keeps the draws it made, chain by chain
        out = {}
        for i, c in enumerate(collectors):
            if c.draws:
                s = c.samples()
                out.update({f"chain{i}.{k}": v for k, v in s.items()} if isinstance(s, dict) else {f"chain{i}": s})
        return out
    return dict(samples) if isinstance(samples, dict) else {"theta": samples}


def run_sweep(cfg: Config, *, progress: bool = True, on_run=None) -> dict:
    """Plan, run (a progress bar on stderr, one tick per 50 steps) and summarise a sweep:
    returns (report, pictures), the pictures being what the plots need of each run.

    ``on_run(report, spec, samples)`` is called after every run with the report so far
    (``"partial": True`` until the last) and that run's samples.
    """
    from tqdm.auto import tqdm

    problems = {p: build_problem(p, cfg.problems.get(p, {})) for p in cfg.sweep["problems"]}
    runs, skipped = plan(cfg, problems)
    rows, pictures = [], {}
    started = time.perf_counter()
    with threads(cfg.sweep["threads"]):
        run_machine = machine()
        exact = {p: exact_moments(pr) for p, pr in problems.items()}
        total = len(runs) * cfg.chain["chains"] * cfg.chain["steps"]
        with tqdm(total=total, desc="sample", unit="step", disable=not progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for spec in runs:
                bar.set_postfix_str(spec.label, refresh=True)
                row, samples, pic = run_one(spec, problems[spec.problem], exact[spec.problem], cfg, bar)
                rows.append(row)
                if pic is not None:
                    pictures[spec.label] = pic
                if on_run is not None:
                    on_run(_report(cfg, run_machine, problems, exact, skipped, rows, started, len(runs)), spec,
                           samples)
    return _report(cfg, run_machine, problems, exact, skipped, rows, started, len(runs)), pictures


def _exact_summary(e: dict) -> dict | None:
    if e.get("mean") is None:
        return None
    mean = e["mean"].double().flatten()
    return {"mean": mean[:2].tolist(), "cov2": e["cov"].double()[:2, :2].tolist(), "source": e["source"]}


def _report(cfg, run_machine, problems, exact, skipped, rows, started, planned) -> dict:
    return {"relaxtorch": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "partial": len(rows) < planned, "runs_planned": planned, "runs_finished": len(rows),
            "seconds": time.perf_counter() - started, "config": cfg.to_dict(), "machine": run_machine,
            "problems": {p: dict(dim=pr.dim, data_size=pr.data_size, task=pr.task, exact=exact[p]["source"])
                         for p, pr in problems.items()},
            "exact": {p: _exact_summary(e) for p, e in exact.items()},
            "skipped": skipped, "runs": list(rows)}
