"""The distributed job's report: per-run summary, table, report.json / report.csv / history.csv, plots.

Per run: bytes each worker sent per step (exact counts from the algorithm's
``CommStats``), the compression ratio against float32 messages of the same
exchange, how many times fewer bytes than the job's float32 all-reduce run
(same model, data and ranks), test accuracy and its difference to that run,
consensus distance, and the time per step split into compute, compression and
communication - simulated by the link model and really measured - next to
the simulated and the real step time, and the slowdown: the simulated step time over
the float32 all-reduce run's on an unlimited link.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..._files import atomic_write, finite
from .._report import format_table, machine

SUMMARY_FIELDS = ["name", "algorithm", "order", "model", "params", "world", "partition", "link", "steps", "evaluated",
                  "test_acc", "test_loss", "train_loss", "consensus", "acc_vs_allreduce_pp", "bytes_per_step",
                  "messages_per_step", "compression_ratio", "vs_allreduce", "sim_step_s", "sim_unlimited_step_s",
                  "link_slowdown", "slowdown", "compute_step_s",
                  "compress_step_s", "sim_comm_step_s", "comm_step_s", "wall_step_s", "sim_total_s", "sort_step_s",
                  "order_bytes"]
HISTORY_FIELDS = ["step", "epoch", "lr", "train_loss", "batch_loss", "test_loss", "test_acc", "consensus", "bytes_per_worker",
                  "messages_per_worker", "sim_s", "wall_s", "sort_s"]
FILES = ("report.json", "report.csv", "history.csv", "loss_vs_step.png", "accuracy_vs_time.png",
         "bytes_per_step.png")


def summarize(rec: dict) -> dict:
    """The per-run numbers of the table, from a run record (see ``train.run_job``)."""
    spec, totals, last = rec["spec"], rec["totals"], rec["history"][-1]
    steps, n = spec["steps"], rec["world"]
    sent = sum(s["bytes_sent"] for s in rec["rank_stats"])
    f32 = sum(s["float32_bytes"] for s in rec["rank_stats"])
    sim_step, unlimited_step = totals["sim_s"] / steps, totals["sim_unlimited_s"] / steps
    return {
        "name": rec["name"], "algorithm": rec["algorithm"], "model": spec["model"], "params": rec["params"],
        "world": n, "partition": spec["partition"], "link": rec["link"], "steps": steps,
        "evaluated": rec["evaluated"], "test_acc": last["test_acc"], "test_loss": last["test_loss"],
        "train_loss": last["train_loss"], "consensus": last["consensus"], "acc_vs_allreduce_pp": None,
        "bytes_per_step": sent / n / steps,
        "messages_per_step": sum(s["messages_sent"] for s in rec["rank_stats"]) / n / steps,
        "compression_ratio": f32 / sent if sent else None, "vs_allreduce": None,
        "sim_step_s": sim_step, "sim_unlimited_step_s": unlimited_step,
        "link_slowdown": sim_step / unlimited_step if unlimited_step else None, "slowdown": None,
        "compute_step_s": totals["compute_s"] / steps,
        "compress_step_s": totals["compress_s"] / steps, "sim_comm_step_s": totals["simulated_comm_s"] / steps,
        "comm_step_s": totals["comm_s"] / steps, "wall_step_s": totals["wall_s"] / steps,
        "sim_total_s": totals["sim_s"], "order": rec.get("order", spec.get("order", "rr")),
        "sort_step_s": (last.get("sort_s") or 0.0) / steps, "order_bytes": rec.get("order_bytes", 0)}


def _baseline_key(s: dict) -> tuple:
    return (s["model"], s["world"], s["partition"])


def build_report(cfg, records: list[dict], seconds: float) -> dict:
    """The report of finished runs: config, machine, and per run its record and summary."""
    summaries = [summarize(r) for r in records]
    base = {}
    for s in summaries:  # the float32 all-reduce run, with random reshuffling where the job has one
        if s["algorithm"] == "allreduce" and (_baseline_key(s) not in base or s["order"] == "rr"):
            base[_baseline_key(s)] = s
    for s in summaries:
        b = base.get(_baseline_key(s))
        if b is not None:
            s["acc_vs_allreduce_pp"] = 100 * (s["test_acc"] - b["test_acc"])
            s["vs_allreduce"] = b["bytes_per_step"] / s["bytes_per_step"] if s["bytes_per_step"] else None
            s["slowdown"] = s["sim_step_s"] / b["sim_unlimited_step_s"] if b["sim_unlimited_step_s"] else None
    return {"version": 1, "config": cfg.to_dict(), "machine": machine(), "seconds": seconds,
            "runs": [{**r, "summary": s} for r, s in zip(records, summaries)]}



def _csv(fields: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in fields})
    return buf.getvalue()


def write_report(report: dict, out_dir, *, plots: bool = True) -> list[Path]:
    """Write the files of ``FILES`` into ``out_dir`` (each atomically; the PNGs only with ``plots``);
    returns their paths."""
    out = Path(out_dir)
    paths = [out / f for f in FILES]
    runs = report["runs"]
    atomic_write(paths[0], json.dumps(finite(report), indent=1, allow_nan=False) + "\n")
    atomic_write(paths[1], _csv(SUMMARY_FIELDS, [r["summary"] for r in runs]))
    atomic_write(paths[2], _csv(["run"] + HISTORY_FIELDS, [{"run": r["name"], **h} for r in runs
                                                           for h in r["history"]]))
    if not plots:
        return paths[:3]
    from . import plots as png
    atomic_write(paths[3], png.loss_vs_step_png(runs))
    atomic_write(paths[4], png.accuracy_vs_time_png(runs))
    atomic_write(paths[5], png.bytes_per_step_png(runs))
    return paths


def _bytes(n: float) -> str:
    for unit, f in (("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n:.0f} B"


def _opt(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def format_summary(report: dict) -> str:
    """The side-by-side table of the runs and a line of what the columns mean (with example orders
    other than random reshuffling: each run's order, its sorting time per step and state bytes)."""
    orders = any(r["summary"].get("order", "rr") != "rr" for r in report["runs"])
    rows = []
    for r in report["runs"]:
        s = r["summary"]
        rows.append([s["name"], f"{s['model']} {s['params'] / 1e6:.2f}M", _opt(100 * s["test_acc"], ".2f"),
                     _opt(s["acc_vs_allreduce_pp"], "+.2f"), _opt(s["train_loss"], ".4g"),
                     _opt(s["consensus"], ".2e"), _bytes(s["bytes_per_step"]), _opt(s["compression_ratio"], ".1f"),
                     _opt(s["vs_allreduce"], ".1f"), f"{1e3 * s['sim_step_s']:.2f}",
                     _opt(s["link_slowdown"], ".2f"), _opt(s["slowdown"], ".2f"), f"{1e3 * s['compute_step_s']:.2f}",
                     f"{1e3 * s['compress_step_s']:.2f}", f"{1e3 * s['sim_comm_step_s']:.2f}",
                     f"{1e3 * s['comm_step_s']:.2f}", f"{1e3 * s['wall_step_s']:.2f}"])
        if orders:
            rows[-1][2:2] = [s["order"]]
            rows[-1] += [f"{1e3 * s['sort_step_s']:.2f}", _bytes(s["order_bytes"])]
    headers = ["run", "model", "test acc %", "Δ allreduce", "train loss", "consensus", "sent/step", "compr.",
               "x fewer", "sim ms/step", "vs unlimited", "slowdown", "compute", "compress", "comm sim", "comm real", "real ms/step"]
    if orders:
        headers[2:2] = ["order"]
        headers += ["sort ms/step", "order state"]
    links = sorted({r["summary"]["link"] for r in report["runs"]})
    world = sorted({r["summary"]["world"] for r in report["runs"]})
    left = 3 if orders else 2
    text = format_table(headers, rows, "l" * left + "r" * (len(headers) - left))
    text += (f"\n\n{'/'.join(map(str, world))} ranks, link {', '.join(links)}. sent/step: bytes each worker sent "
             "per step; compr.: float32 bytes of the same messages / bytes sent; x fewer: bytes of the float32 "
             "all-reduce run / this run's; Δ allreduce: test accuracy minus the all-reduce run's (percentage "
             "points); test acc and train loss (on the whole training set) are rank 0's model's, or the "
             "ranks' average model's for decentralized runs; consensus: mean squared distance of the ranks' "
             "models to their average; times in ms per "
             "step (compute, compress: measured, in CPU seconds of each rank's thread when the ranks outnumber "
             "the cores; comm sim: link model; comm real: measured on this machine); "
             "sim ms/step: the simulated run's time over its steps, following every rank's clock (a synchronous "
             "step waits for the slowest rank's compute + compress + comm sim; an overlapping run computes while "
             "the previous exchange is on the link); "
             "vs unlimited: sim ms/step over the same steps' time on an unlimited link; slowdown: sim ms/step "
             "over the float32 all-reduce run's time on an unlimited link (the paper's comparison).")
    if orders:
        text += ("\norder: each rank's example order (relaxtorch.order; cdgrab: pair balance shared across the ranks, "
                 "one all-gather per step); sort ms/step: per-example gradients + the order's observe, per rank, "
                 "not in the times above; order state: peak bytes of rank 0's order state.")
    return text
