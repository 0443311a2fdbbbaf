"""``relaxtorch gibbs``'s picture: marginal error against wall-clock time, one line per sampler.

One line per (sampler, threads) for the first seed, log-log axes, the target error as a
dashed line.
"""
from __future__ import annotations

from pathlib import Path

from ..._files import atomic_write
from .._report import colors, figure, png


def draw_error_curves(report: dict, path) -> Path:
    first = report["config"]["sweep"]["seeds"][0]
    runs = [r for r in report["runs"] if r["seed"] == first and r["curve"]]
    col = colors(r["label"] for r in runs)
    fig, (ax,) = figure(1, width=6.5, height=4.5)
    for r in runs:
        pts = [p for p in r["curve"] if p["seconds"] > 0 and p["error"] > 0]
        ax.plot([p["seconds"] for p in pts], [p["error"] for p in pts], marker=".", color=col[r["label"]],
                label=r["label"] + ("" if r["status"] == "ok" else f" ({r['status']})"))
    ax.axhline(report["epsilon"], color="grey", ls="--", lw=0.8, label=f"ε = {report['epsilon']:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(title=f"{report['graph']['spec']}: marginal error vs time", xlabel="wall-clock seconds (sampling)",
           ylabel="mean TV distance to the reference")
    ax.legend(fontsize=7)
    return atomic_write(Path(path), png(fig))
