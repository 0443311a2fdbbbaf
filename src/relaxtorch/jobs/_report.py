"""What every job's report shares: the machine it ran on, plain-text tables, JSON, figures.

``machine()`` has the same keys in every report and benchmark; ``format_table`` renders
GitHub-markdown tables; ``write_json`` writes finite JSON atomically; ``figure``/``png``
draw with matplotlib's ``Figure`` and the Agg renderer, never pyplot's global state.
"""
from __future__ import annotations

import io
import json
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .._files import atomic_write, finite

_REPO = Path(__file__).resolve().parents[3]


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else whatever ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The source tree's commit (with ``-dirty``), when relaxtorch runs from a git checkout."""
    if not (_REPO / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _numba_threads(numba) -> int:
    """numba's thread count, without starting its threading layer: ``numba.get_num_threads()``
    launches it, and its OpenMP layer then resets torch's intra-op threads (OpenMP's own
    setting) to the core count, which would undo a job's one thread per rank."""
    from numba.np.ufunc import parallel
    if getattr(parallel, "_is_initialized", True):
        return numba.get_num_threads()
    return numba.config.NUMBA_NUM_THREADS


def machine(device=None, extra_packages: tuple[str, ...] = ()) -> dict:
    """What a reader needs to weigh the numbers: CPU, cores, threads, versions, device, commit."""
    import torch

    from .. import __version__
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": usable,
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": _version("numpy"),
            "numba": None, "numba_threads": None, "relaxtorch": __version__, "git": _git_commit(), "device": "cpu"}
    try:
        import numba
        info["numba"], info["numba_threads"] = numba.__version__, _numba_threads(numba)
    except ImportError:  # pragma: no cover
        pass
    for package in extra_packages:
        info[package] = _version(package)
    if device is not None and torch.device(device).type == "cuda":
        index = torch.device(device).index or 0
        info["device"] = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        info["cuda"] = torch.version.cuda
    return info


def describe(info: dict) -> str:
    """The machine as a few lines for the top of a table."""
    numba = f"numba {info['numba']} ({info['numba_threads']} threads)" if info.get("numba") else "numba absent"
    return "\n".join([
        f"machine: {info['cpu']}; {info['cpu_count']} logical CPUs ({info['cpus_usable']} usable), "
        f"torch threads {info['torch_threads']}",
        f"software: python {info['python']}, torch {info['torch']}, {numba}, numpy {info['numpy']}"
        + (f", git {info['git']}" if info.get("git") else ""),
        f"device: {info['device']}" + (f" (CUDA {info['cuda']})" if info.get("cuda") else ""),
    ])


def write_json(path, payload: dict) -> Path:
    """``payload`` as indented JSON, non-finite numbers as null, written atomically."""
    return atomic_write(path, json.dumps(finite(payload), indent=2, allow_nan=False) + "\n")


def figure(n: int = 1, width: float = 6.0, height: float = 4.5, cols: int = 2):
    """A matplotlib ``Figure`` (no pyplot) with ``n`` axes in up to ``cols`` columns: ``(fig, axes)``."""
    from matplotlib.figure import Figure

    cols = max(1, min(n, cols))
    rows = math.ceil(n / cols) if n else 1
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(max(n, 1))]


def png(fig, dpi: int = 110) -> bytes:
    """The figure rendered to PNG bytes by the Agg backend."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def colors(names) -> dict:
    """A tab10 colour for each distinct name, in order of first appearance."""
    import matplotlib
    cmap = matplotlib.colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(dict.fromkeys(names))}


def format_table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """Render rows as a GitHub-markdown table (readable in a terminal and a README)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(row):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(row, widths, align)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def _cell(v) -> str:
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.6g}"
        return f"{v:.4g}"
    return str(v)
