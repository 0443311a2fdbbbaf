"""``relaxtorch gibbs``'s outputs: report.json, report.csv, marginals/*.npy and marginal_error.png.

Each run's marginals (``[n, max_cardinality]`` float64, evidence rows one-hot) are saved after
every checkpoint, so an interrupted run keeps the marginals it had; ``numpy.load(path)`` reads
them (``allow_pickle`` stays off).  ``marginals/reference.npy`` holds the reference.  The table
prints one line per (sampler, threads), the median over seeds.
"""
from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

import numpy as np

from ..._files import atomic_write
from .._report import describe, format_table, write_json

FILES = ("report.json", "report.csv", "marginals", "marginal_error.png")
COLUMNS = ["sampler", "threads", "seed", "status", "sweeps", "updates", "seconds", "updates_per_s", "error",
           "time_to_epsilon", "sweeps_to_epsilon", "mean_energy", "mean_magnetisation", "staleness",
           "compile_seconds"]


def marginals_path(out, name: str) -> Path:
    return Path(out) / "marginals" / f"{name}.npy"


def write_marginals(out, name: str, marginals) -> Path:
    """One table of marginals, atomically, as a ``.npy`` file."""
    array = np.ascontiguousarray(marginals, dtype=np.float64)
    return atomic_write(marginals_path(out, name), lambda f: np.save(f, array, allow_pickle=False))


def write_report(report: dict, out, *, plots: bool = True) -> list[Path]:
    """report.json and report.csv (and, with ``plots``, marginal_error.png) in ``out``."""
    out = Path(out)
    paths = [write_json(out / "report.json", report)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for row in report["runs"]:
        w.writerow({k: row.get(k) for k in COLUMNS})
    paths.append(atomic_write(out / "report.csv", buf.getvalue()))
    if plots and any(r["curve"] for r in report["runs"]):
        from .plots import draw_error_curves
        paths.append(draw_error_curves(report, out / "marginal_error.png"))
    return paths


def _median(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (sampler, threads): medians over seeds (time to epsilon: over the seeds that reached it)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["sampler"], r["threads"]), []).append(r)
    out = []
    for (s, k), rs in groups.items():
        entry = dict(sampler=s, threads=k, label=rs[0]["label"], seeds=len(rs),
                     reached=sum(r.get("time_to_epsilon") is not None for r in rs),
                     interrupted=sum(r["status"] != "ok" for r in rs))
        for key in ("updates_per_s", "sweeps", "error", "time_to_epsilon", "sweeps_to_epsilon", "mean_energy",
                    "staleness", "seconds"):
            entry[key] = _median(r.get(key) for r in rs)
        out.append(entry)
    return out


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_summary(report: dict) -> str:
    """The results table, the machine, the graph and the reference."""
    eps = report["epsilon"]
    rows = []
    for e in summarize(report["runs"]):
        rate = e["updates_per_s"]
        reach = (_fmt(e["time_to_epsilon"], ".3g") + (f" ({e['reached']}/{e['seeds']})" if e["seeds"] > 1 else "")
                 if e["reached"] else "not reached")
        rows.append([e["label"], "interrupted" if e["interrupted"] else "ok",
                     "-" if rate is None else f"{rate / 1e6:.2f}", _fmt(e["sweeps"], ".0f"), _fmt(e["error"], ".4f"),
                     reach, _fmt(e["mean_energy"], ".5g"), _fmt(e["staleness"], ".3g"), _fmt(e["seconds"], ".2f")])
    table = format_table(["sampler", "status", "M updates/s", "sweeps", "marginal err", f"s to err<={eps:g}",
                          "mean log-potential", "staleness", "s"], rows, align="ll" + "r" * 7)
    g, ref = report["graph"], report["reference"]
    how = {"exact": "exact enumeration", "uniform (symmetry)": "uniform marginals (symmetry)"}.get(
        ref["method"],
        f"sequential Gibbs, {ref.get('sweeps')} sweeps after {ref.get('burn_in')} (seed {ref.get('seed')})")
    lines = [describe(report["machine"]), "",
             f"graph: {g['spec']}: {g['variables']} variables ({g['free']} free), {g['factors']} factors, "
             f"{g['weights']} weights; reference: {how}", "", table,
             "\nmarginal err: mean over free variables of the total-variation distance to the reference marginal "
             "(medians over seeds); s: sampling wall-clock, compile and burn-in excluded"]
    return "\n".join(lines)
