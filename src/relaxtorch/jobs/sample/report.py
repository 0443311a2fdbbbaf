"""``relaxtorch sample``'s outputs: report.json, report.csv, samples/*.pt and the plots.

Samples are saved run by run, as soon as a run ends, each file a dict of tensors (chains,
draws, *event) that ``torch.load(path, weights_only=True)`` reads; a diverged run keeps the
draws it made, chain by chain.  The table prints one line per (problem, sampler, precision),
the mean over seeds.
"""
from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

import torch

from ..._files import atomic_write
from .._report import describe, format_table, write_json

FILES = ("report.json", "report.csv", "samples", "traces.png", "autocorrelation.png", "ess_per_second.png",
         "posterior.png")
COLUMNS = ["problem", "sampler", "precision", "seed", "status", "bits_per_number", "grad_evals_per_step",
           "data_touched_per_step", "seconds", "acceptance", "ess_bulk", "ess_tail", "ess_per_second", "rhat",
           "mean_error", "cov_error", "test_nll", "test_accuracy", "test_ece", "test_rmse", "error"]


def sample_path(out, row_or_spec) -> Path:
    r = row_or_spec if isinstance(row_or_spec, dict) else vars(row_or_spec)
    return Path(out) / "samples" / f"{r['problem']}__{r['sampler']}__{r['precision']}__seed{r['seed']}.pt"


def write_samples(out, spec, samples: dict) -> Path | None:
    """One run's samples, atomically (None when it has none)."""
    if not samples:
        return None
    tensors = {k: v.contiguous() for k, v in samples.items()}
    return atomic_write(sample_path(out, spec), lambda f: torch.save(tensors, f))


def write_report(report: dict, out, *, plots: bool = True, pictures: dict | None = None) -> list[Path]:
    """report.json and report.csv (and, with ``plots``, the PNGs) in ``out``."""
    out = Path(out)
    paths = [write_json(out / "report.json", report)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for row in report["runs"]:
        w.writerow({k: row.get(k) for k in COLUMNS})
    paths.append(atomic_write(out / "report.csv", buf.getvalue()))
    if plots and pictures:
        from .plots import draw_all
        paths += draw_all(report, pictures, out)
    return paths


def _mean(values):
    v = [x for x in values if x is not None]
    return statistics.fmean(v) if v else None


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (problem, sampler, precision): means over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["problem"], r["sampler"], r["precision"]), []).append(r)
    out = []
    for (p, s, q), rs in groups.items():
        entry = dict(problem=p, sampler=s, precision=q, seeds=len(rs),
                     diverged=sum(r["status"] != "ok" for r in rs))
        for key in COLUMNS[5:-1]:
            if key != "status":
                entry[key] = _mean(r.get(key) for r in rs)
        out.append(entry)
    return out


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_summary(report: dict) -> str:
    """The results table, the machine and what was skipped."""
    rows = []
    for e in summarize(report["runs"]):
        quality = (f"nll {_fmt(e['test_nll'], '.3f')} acc {_fmt(e['test_accuracy'], '.3f')}"
                   if e.get("test_nll") is not None else
                   f"rmse {_fmt(e['test_rmse'], '.3f')}" if e.get("test_rmse") is not None else "-")
        rows.append([e["problem"], e["sampler"], e["precision"],
                     f"{e['diverged']}/{e['seeds']} diverged" if e["diverged"] else "ok",
                     e["bits_per_number"], _fmt(e["grad_evals_per_step"], ".0f"),
                     _fmt(e["data_touched_per_step"], ".0f"), _fmt(e["acceptance"], ".2f"),
                     _fmt(e["mean_error"], ".3f"), _fmt(e["cov_error"], ".3f"), quality,
                     _fmt(e["ess_per_second"], ".1f"), _fmt(e["rhat"], ".3f"), _fmt(e["seconds"], ".1f")])
    table = format_table(["problem", "sampler", "precision", "status", "bits", "grads/step", "data/step", "accept",
                          "mean err", "cov err", "predictive", "ESS/s", "R-hat", "s"], rows, align="llll" + "r" * 10)
    lines = [describe(report["machine"]), "", table]
    lines.append("\nmean err: Mahalanobis distance of the mean from the exact one (posterior sds); cov err: relative Frobenius; "
                 "ESS/s: the smallest bulk ESS over parameters per second")
    for p, info in report["problems"].items():
        lines.append(f"  {p}: {info['dim']} parameters, N = {info['data_size']}; exact answer: {info['exact']}")
    for s in report["skipped"]:
        lines.append(f"skipped {s['problem']}/{s['sampler']}: {s['reason']}")
    for r in report["runs"]:
        if r["status"] != "ok":
            lines.append(f"diverged {r['problem']}/{r['sampler']}/{r['precision']}/seed{r['seed']}: {r['error']}")
    return "\n".join(lines)
