"""Shared helpers for the scripts in benchmarks/: the machine, the clock, the report.

A benchmark runs its baseline and its contenders in one process, interleaved
(baseline, contender, ..., baseline, contender, ...) so that noise on a shared
machine hits them alike, and reports the median of each and their ratio.  It
names the machine it ran on and writes JSON next to its table.

A benchmark also runs in a peer's virtual environment with relaxtorch taken from
the repository's ``src`` (``use_repo_src()``); the machine description is
relaxtorch's own, with the same keys as every job's report.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def use_repo_src() -> None:
    """Make ``import relaxtorch`` find the repository's source when it is not installed."""
    src = str(REPO / "src")
    if src not in sys.path:
        sys.path.insert(0, src)


# ----------------------------------------------------------------------------- machine

def resolve_device(name: str):
    """``torch.device`` for ``--device``; a CUDA request without CUDA is a one-line error (exit 2)."""
    import torch

    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            fail(f"Invalid --device: {name!r} (torch {torch.__version__} sees no CUDA device)")
    elif name != "cpu":
        fail(f"Invalid --device: {name!r} (expected cpu or cuda)")
    return torch.device(name)


def machine(device=None, extra_packages: tuple[str, ...] = ()) -> dict:
    """The machine, with the keys of every relaxtorch report (``relaxtorch.jobs._report.machine``)."""
    use_repo_src()
    from relaxtorch.jobs._report import machine as describe_machine
    return describe_machine(device, extra_packages)


def describe(info: dict) -> str:
    """The machine as a few lines for the top of a table."""
    use_repo_src()
    from relaxtorch.jobs._report import describe as lines
    return lines(info)


# ----------------------------------------------------------------------------- timing

def synchronizer(device) -> Callable[[], None]:
    """A no-op on the CPU; ``torch.cuda.synchronize`` on a CUDA device."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_interleaved(fns: dict[str, Callable[[], object] | None], reps: int, warmup: int = 1,
                     sync: Callable[[], None] = lambda: None,
                     clock: Callable[[], float] = time.perf_counter,
                     setup: dict[str, Callable[[], object]] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function: ``warmup`` untimed rounds, then ``reps`` timed rounds.

    A round calls every function once, in the dict's order, so the baseline and
    the contenders take turns.  Each call's result is dropped before the next
    call (its allocation is part of the cost; its memory is not held over).
    ``None`` entries are skipped and get an empty list.  The garbage collector
    is off while timing.  ``clock`` is wall-clock by default; ``time.process_time``
    counts the CPU seconds of this process instead (steady on a busy shared machine).
    ``setup[name]``, when given, runs untimed before each call of ``fns[name]`` (an in-place
    contender gets fresh input every time).
    """
    setup = setup or {}
    live = {name: fn for name, fn in fns.items() if fn is not None}
    times: dict[str, list[float]] = {name: [] for name in fns}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(warmup + reps):
            for name, fn in live.items():
                if name in setup:
                    setup[name]()
                sync()
                t0 = clock()
                out = fn()
                sync()
                t1 = clock()
                del out
                if r >= warmup:
                    times[name].append(t1 - t0)
    finally:
        if was_enabled:
            gc.enable()
    return times


def median_ms(samples: list[float]) -> float | None:
    return statistics.median(samples) * 1e3 if samples else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def paired_ratio(samples: list[float], baseline: list[float]) -> float | None:
    """Median over rounds of contender/baseline in the same round (robust to drifts between rounds)."""
    if not samples or len(samples) != len(baseline):
        return None
    return statistics.median(s / b for s, b in zip(samples, baseline))


# ----------------------------------------------------------------------------- report

def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def fmt_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (a temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is an ordinary file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def fail(message: str) -> None:
    """A CLI error: one line on stderr, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors follow the CLI rule: one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        fail(message)


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (``2**24`` and ``16_777_216`` are accepted too)."""
    try:
        base, _, power = text.replace("_", "").partition("**")
        value = int(base) ** int(power) if power else int(base)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def two_thread_ceiling(seconds: float = 0.25) -> float:
    """How much two threads get done against one on this machine, right now: a throughput-bound
    numba loop over an L1-resident array (vector multiply-adds, no memory traffic, no sharing) run
    for about ``seconds`` on one thread, then the same on each of two threads at once; returns
    2·t1/t2.  On a VM whose two vCPUs share a physical core, or a loaded host, this is well below
    2, and no parallel kernel on the machine can beat it: print it beside a parallel speed-up."""
    import threading

    import numpy as np
    from numba import njit

    @njit(nogil=True, fastmath=True, cache=False)
    def spin(a, reps):
        s = 0.0
        for _ in range(reps):
            for i in range(a.shape[0]):
                s += a[i] * a[i] + 1.0
        return s

    a = np.random.default_rng(0).random(4096).astype(np.float32)
    spin(a, 1)
    t = time.perf_counter()
    spin(a, 1000)
    reps = max(1, int(1000 * seconds / max(time.perf_counter() - t, 1e-9)))
    t = time.perf_counter()
    spin(a, reps)
    t1 = time.perf_counter() - t
    threads = [threading.Thread(target=spin, args=(a.copy(), reps)) for _ in range(2)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return 2 * t1 / (time.perf_counter() - t)
