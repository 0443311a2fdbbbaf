"""Write a sweep's report (JSON, CSV, PNG plots) atomically and format its table."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from ..._files import atomic_write, finite
from .._report import format_table

CSV_FIELDS = ["model", "dataset", "algorithm", "precision", "order", "seed", "task", "test_error", "train_loss",
              "suboptimality", "iterate_test_error", "weight_bits", "memory_bytes", "seconds", "train_seconds",
              "epochs", "batch_size", "lr", "sort_seconds", "order_bytes"]



def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in
                    {**{k: r.get(k) for k in CSV_FIELDS}, "batch_size": r["hyper"]["batch_size"],
                     "lr": r["hyper"]["lr"]}.items()})
    return buf.getvalue()


FILES = ("report.json", "report.csv", "pareto.png", "loss_curves.png", "order_cost.png")


def write_report(report: dict, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """report.json, report.csv, pareto.png, loss_curves.png and order_cost.png in ``out_dir`` (the
    PNGs only with ``plots``); returns the paths."""
    out = Path(out_dir)
    paths = [out / name for name in FILES]
    atomic_write(paths[1], to_csv(report["runs"]))
    atomic_write(paths[0], json.dumps(finite(report), indent=1, allow_nan=False) + "\n")  # last: it says what is done
    if not plots:
        return paths[:2]
    from . import plots as png
    atomic_write(paths[2], png.pareto_png(report["summary"]))
    atomic_write(paths[3], png.loss_curves_png(report["runs"]))
    atomic_write(paths[4], png.order_cost_png(report["summary"]))
    return paths


def _bytes(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def _err(s: dict, key: str = "test_error") -> str:
    v = s[key]
    if v is None:
        return ""
    if s["task"] == "regression":
        return f"{v:.4g}" + (f" ± {s['test_error_std']:.2g}" if key == "test_error" else "")
    return f"{100 * v:.2f}" + (f" ± {100 * s['test_error_std']:.2f}" if key == "test_error" else "")


def _delta(s: dict) -> str:
    d = s["delta_test_error"]
    if d is None:
        return ""
    return f"{d:+.3g}" if s["task"] == "regression" else f"{100 * d:+.2f}"


def _has_orders(summary: list[dict]) -> bool:
    """Whether the sweep had an order axis (anything but random reshuffling alone)."""
    return any(s.get("order", "rr") != "rr" for s in summary)


def format_summary(report: dict) -> str:
    """The table over seeds, then the skipped combinations; with an order axis, each order's
    sorting seconds and state bytes next to its loss."""
    summary = report["summary"]
    has_iterate = any(s["iterate_test_error"] is not None for s in summary)
    orders = _has_orders(summary)
    headers = ["model", "data", "algorithm", "precision"] + (["order"] if orders else [])
    headers += ["bits", "memory", "test err %", "Δ fp32 sgd"]
    headers += ["last iterate %"] if has_iterate else []
    headers += ["train loss", "rel. subopt", "seconds"]
    headers += ["sort s", "order state"] if orders else []
    rows = []
    for s in summary:
        row = [s["model"], s["dataset"], s["algorithm"], s["precision"]] + ([s["order"]] if orders else [])
        row += [f"{s['weight_bits']:g}", _bytes(s["memory_bytes"]), _err(s), _delta(s)]
        row += [_err(s, "iterate_test_error")] if has_iterate else []
        row += [f"{s['train_loss']:.4g}" if s["train_loss"] is not None else "",
                f"{s['suboptimality']:.2e}" if s["suboptimality"] is not None else "", f"{s['seconds']:.1f}"]
        row += [f"{s['sort_seconds']:.2f}", _bytes(s["order_bytes"])] if orders else []
        rows.append(row)
    left = 5 if orders else 4
    text = format_table(headers, rows, "l" * left + "r" * (len(headers) - left))
    n_seeds = max((len(s["seeds"]) for s in summary), default=0)
    text += (f"\n\ntest err: mean ± std over {n_seeds} seed(s) (% misclassified; MSE for regression); "
             "Δ: difference to float32 SGD of the same model and data (percentage points); memory: weights + "
             "optimizer state; bits: per stored weight.")
    if orders:
        text += ("\norder: the example order (relaxtorch.order); Δ against float32 SGD with random reshuffling; "
                 "seconds: training without sorting; sort s: seconds of sorting (per-example gradients, observe, "
                 "epoch); order state: peak bytes of the order's state.")
    if has_iterate:
        text += "\nlast iterate: SWALP's final low-precision iterate (the same run without averaging)."
    if report["skipped"]:
        reasons = Counter(s["reason"] for s in report["skipped"])
        text += "\nskipped: " + "; ".join(f"{r} ({n}x)" for r, n in reasons.items())
    return text
