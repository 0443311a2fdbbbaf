"""The distributed report's pictures as PNG bytes (matplotlib's Agg renderer, without pyplot).

``loss_vs_step_png``: loss on the whole training set (solid) and test loss (dotted) against step.
``accuracy_vs_time_png``: test accuracy against simulated wall-clock (link model).
``bytes_per_step_png``: bytes each worker sends per step, one bar per run (log scale).
"""
from __future__ import annotations

from .._report import colors, figure, png


def _figure(width: float = 7.0, height: float = 4.5):
    fig, (ax,) = figure(1, width, height)
    return fig, ax


def _colors(runs):
    return list(colors(range(len(runs))).values())


def loss_vs_step_png(runs: list[dict]) -> bytes:
    fig, ax = _figure()
    for r, color in zip(runs, _colors(runs)):
        h = r["history"]
        ax.plot([p["step"] for p in h], [p["train_loss"] for p in h], color=color, label=f"{r['name']} train")
        ax.plot([p["step"] for p in r["history"]], [p["test_loss"] for p in r["history"]], color=color,
                linestyle=":", label=f"{r['name']} test")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("loss vs step (of rank 0's model, or the ranks' average for decentralized runs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return png(fig)


def accuracy_vs_time_png(runs: list[dict]) -> bytes:
    fig, ax = _figure()
    for r, color in zip(runs, _colors(runs)):
        ax.plot([p["sim_s"] for p in r["history"]], [100 * p["test_acc"] for p in r["history"]], color=color,
                marker=".", label=f"{r['name']} ({r['link']})")
    ax.set_xlabel("simulated wall-clock (s): compute + compression + link-model communication")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs simulated time")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return png(fig)


def bytes_per_step_png(runs: list[dict]) -> bytes:
    fig, ax = _figure(width=max(5.0, 1.2 * len(runs) + 2))
    values = [r["summary"]["bytes_per_step"] for r in runs]
    bars = ax.bar(range(len(runs)), [max(v, 1.0) for v in values], color=_colors(runs))
    for bar, v in zip(bars, values):
        ax.annotate(f"{v:,.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=7)
    ax.set_xticks(range(len(runs)), [r["name"] for r in runs], rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("bytes sent per worker per step")
    ax.set_title("communication per step")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    return png(fig)
