"""The sweep's pictures, returned as PNG bytes (matplotlib's Agg renderer, without pyplot).

``pareto_png``: per model and data set, memory for weights + optimizer state
(log x) against test error, one marker per precision x algorithm (mean over
seeds, std as error bar), the Pareto frontier drawn as a step line.
``loss_curves_png``: per model and data set, relative suboptimality (convex
models) or training loss against epoch on a log y scale, one line per
algorithm x precision x order (mean over seeds).
``order_cost_png``: per model and data set, final training loss against seconds of sorting
(log x), one marker per order, labelled with the peak bytes of its state.
"""
from __future__ import annotations

import math

import numpy as np

from .._report import colors, figure, png

_MARKERS = {"sgd": "o", "swalp": "s", "svrg": "^", "halp": "D"}
_STYLES = {"sgd": "-", "swalp": "--", "svrg": "-.", "halp": ":"}
_ORDER_MARKERS = {"rr": "o", "grab": "*", "pair": "P", "cdgrab": "X", "recursive": "h", "prob": "d",
                  "herding": "v", "so": "<", "flipflop": ">", "sequential": "1", "blocks": "s"}
_FLOOR = 1e-16  # suboptimality below float64 resolution is drawn at this floor


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both memory (x) and error (y), by increasing x."""
    front, best = [], math.inf
    for x, y in sorted(points, key=lambda p: (p[0], p[1])):
        if y < best:
            front.append((x, y))
            best = y
    return front


def pareto_png(summary: list[dict]) -> bytes:
    from matplotlib.ticker import NullFormatter

    pairs = list(dict.fromkeys((s["model"], s["dataset"]) for s in summary))
    fig, axes = figure(len(pairs))
    color = colors(s["precision"] for s in summary)
    for ax, (model, ds) in zip(axes, pairs):
        group = [s for s in summary if (s["model"], s["dataset"]) == (model, ds) and s["test_error"] is not None]
        scale = 1.0 if group and group[0]["task"] == "regression" else 100.0
        for s in group:
            ax.errorbar(s["memory_bytes"], scale * s["test_error"], yerr=scale * (s["test_error_std"] or 0),
                        marker=_MARKERS[s["algorithm"]], color=color[s["precision"]], linestyle="none",
                        markersize=7, capsize=2, label=f"{s['algorithm']} {s['precision']}")
        front = pareto_front([(s["memory_bytes"], scale * s["test_error"]) for s in group])
        if front:
            xs, ys = zip(*front)
            ax.step(xs, ys, where="post", color="0.3", linewidth=1, zorder=0, label="Pareto frontier")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide on short ranges
        ax.set_xlabel("memory for weights + optimizer state (bytes)")
        ax.set_ylabel("test error (%)" if scale == 100.0 else "test MSE")
        ax.set_title(f"{model} on {ds}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    return png(fig)


def loss_curves_png(runs: list[dict]) -> bytes:
    pairs = list(dict.fromkeys((r["model"], r["dataset"]) for r in runs))
    fig, axes = figure(len(pairs))
    color = colors(r["precision"] for r in runs)
    for ax, (model, ds) in zip(axes, pairs):
        group = [r for r in runs if (r["model"], r["dataset"]) == (model, ds)]
        convex = all(r["suboptimality"] is not None for r in group)
        key = "suboptimality" if convex else "train_loss"
        curves: dict[tuple, list] = {}
        for r in group:
            curves.setdefault((r["algorithm"], r["precision"], r.get("order", "rr")), []).append(
                [h[key] for h in r["history"]])
        orders = len({k[2] for k in curves}) > 1
        for (alg, prec, order), hs in curves.items():
            n = min(len(h) for h in hs)
            y = np.array([h[:n] for h in hs], dtype=float)
            y = np.nanmean(np.where(np.isfinite(y), y, np.nan), axis=0)
            label = f"{alg} {prec}" + (f" {order}" if orders else "")
            ax.plot(np.arange(n), np.maximum(y, _FLOOR) if convex else y, _STYLES[alg], color=color[prec],
                    marker=_ORDER_MARKERS.get(order, _MARKERS[alg]) if orders else _MARKERS[alg], markersize=3,
                    label=label)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("relative suboptimality (f - f*) / f*" if convex else "training loss (with L2)")
        ax.set_title(f"{model} on {ds}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    return png(fig)


def order_cost_png(summary: list[dict]) -> bytes:
    pairs = list(dict.fromkeys((s["model"], s["dataset"]) for s in summary))
    fig, axes = figure(len(pairs))
    color = colors(s["precision"] for s in summary)
    for ax, (model, ds) in zip(axes, pairs):
        for s in summary:
            if (s["model"], s["dataset"]) != (model, ds) or s["train_loss"] is None:
                continue
            order = s.get("order", "rr")
            kib = (s.get("order_bytes") or 0) / 1024
            ax.plot(max(s.get("sort_seconds") or 0.0, 1e-6), s["train_loss"], linestyle="none",
                    marker=_ORDER_MARKERS.get(order, "o"), color=color[s["precision"]], markersize=7,
                    label=f"{order} {s['algorithm']} {s['precision']} ({kib:.1f} KiB)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("seconds of sorting per run (per-example gradients + sorter)")
        ax.set_ylabel("final training loss")
        ax.set_title(f"{model} on {ds}: cost of the example order")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    return png(fig)
