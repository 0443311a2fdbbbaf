"""The job's pictures: traces, autocorrelation, ESS per second, and samples against the exact posterior.

``pictures[label]`` holds, per run, what the plots need (kept in memory, not in report.json):
the first parameter's trace in chain 0, its autocorrelation (mean over chains) and up to
``POINTS`` pooled draws of the first two parameters.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..._files import atomic_write
from .._report import colors, figure, png

POINTS = 1000
MAX_LAG = 100


def picture(samples_flat: torch.Tensor) -> dict:
    """What the plots keep of one run's samples (chains, draws, dim) float64."""
    from ...mcmc.diagnostics import autocorrelation
    x = samples_flat
    pooled = x.reshape(-1, x.shape[2])[:, :2]
    step = max(1, pooled.shape[0] // POINTS)
    acf = autocorrelation(x[:, :, :1]).mean(0)[:MAX_LAG].flatten() if x.shape[1] > 2 else torch.ones(1)
    return {"trace": x[0, :, 0].tolist(), "acf": acf.tolist(), "points": pooled[::step].tolist()}


def _by_problem(report, pictures):
    out: dict[str, list] = {}
    for r in report["runs"]:
        label = f"{r['problem']}/{r['sampler']}/{r['precision']}/seed{r['seed']}"
        if label in pictures and r["seed"] == report["config"]["sweep"]["seeds"][0]:
            out.setdefault(r["problem"], []).append((f"{r['sampler']} {r['precision']}", r, pictures[label]))
    return out


def draw_all(report: dict, pictures: dict, out) -> list[Path]:
    groups = _by_problem(report, pictures)
    if not groups:
        return []
    names = [n for runs in groups.values() for n, _, _ in runs]
    col = colors(names)
    paths = []
    for fname, draw in (("traces.png", _trace), ("autocorrelation.png", _acf), ("ess_per_second.png", _ess),
                        ("posterior.png", _posterior)):
        keys = [p for p in groups if draw is not _posterior or report.get("exact", {}).get(p)]
        if not keys:
            continue
        fig, axes = figure(len(keys), width=5.5, height=3.8)
        for ax, p in zip(axes, keys):
            draw(ax, p, groups[p], col, report)
        paths.append(atomic_write(Path(out) / fname, png(fig)))
    return paths


def _trace(ax, p, runs, col, report):
    for name, _, pic in runs:
        ax.plot(pic["trace"], lw=0.6, color=col[name], label=name)
    ax.set(title=f"{p}: trace of the first parameter (chain 0)", xlabel="kept draw", ylabel="θ[0]")
    ax.legend(fontsize=6)


def _acf(ax, p, runs, col, report):
    for name, _, pic in runs:
        ax.plot(pic["acf"], color=col[name], label=name)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(title=f"{p}: autocorrelation of θ[0]", xlabel="lag (kept draws)", ylabel="ACF")
    ax.legend(fontsize=6)


def _ess(ax, p, runs, col, report):
    names = [n for n, _, _ in runs]
    values = [r.get("ess_per_second") or 0.0 for _, r, _ in runs]
    ax.barh(range(len(names)), values, color=[col[n] for n in names])
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(title=f"{p}: bulk ESS per second (higher is better)", xlabel="ESS / s")
    if values and max(values) > 0 and max(values) / max(min(v for v in values if v > 0), 1e-12) > 100:
        ax.set_xscale("log")


def _posterior(ax, p, runs, col, report):
    exact = report["exact"][p]
    for name, _, pic in runs:
        pts = torch.tensor(pic["points"])
        if pts.ndim == 2 and pts.shape[1] == 2:
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.3, color=col[name], label=name)
        elif pts.ndim == 2:
            ax.hist(pts[:, 0].numpy(), bins=40, density=True, histtype="step", color=col[name], label=name)
    mean, cov = torch.tensor(exact["mean"][:2]), torch.tensor(exact["cov2"])
    if mean.numel() == 2:
        vals, vecs = torch.linalg.eigh(cov)
        t = torch.linspace(0, 2 * math.pi, 200)
        circle = torch.stack([t.cos(), t.sin()])
        ellipse = mean[:, None] + vecs @ (2 * vals.clamp_min(0).sqrt()[:, None] * circle)
        ax.plot(ellipse[0], ellipse[1], color="black", lw=1.2, label="exact (2 sd)")
    ax.set(title=f"{p}: samples vs exact posterior", xlabel="θ[0]", ylabel="θ[1]")
    ax.legend(fontsize=6, markerscale=4)
