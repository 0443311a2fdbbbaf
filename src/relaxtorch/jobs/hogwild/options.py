"""The checks of ``relaxtorch hogwild``'s options, from the command line or a TOML file.

Each option is checked for its range before anything is built (``--lr inf`` or
``--seed -1`` name the option), and the generated problems' sizes against the memory
this machine has free *before* their arrays are allocated (``--examples 1e12`` is a
one-line error, not a MemoryError after minutes).
"""
from __future__ import annotations

import math

from .._cli import CLIError
from .._config import MAX_LR, MAX_PENALTY, SEED_LIMIT

INT32_MAX = 2 ** 31 - 1  # the kernels index features, rows and columns with int32

# option -> (low, high, low open, high open); None: no bound on that side
FLOATS = {"lr": (0.0, MAX_LR, True, False), "lr_decay": (0.0, 1.0, True, False), "lam": (0.0, MAX_PENALTY, False, False),
          "model_range": (0.0, 1e30, True, False), "nnz": (0.0, 1e9, True, False), "skew": (0.0, 4.0, False, False),
          "max_df": (0.0, 1.0, True, False), "density": (0.0, 1.0, True, False),
          "timeout": (0.0, 1e9, True, False)}
INTS = {"seed": (0, SEED_LIMIT - 1), "epochs": (1, 10 ** 9), "examples": (1, INT32_MAX), "features": (2, INT32_MAX),
        "rank": (1, 10 ** 6), "rows": (1, INT32_MAX), "cols": (1, INT32_MAX), "stale_every": (1, 2 ** 30)}


def option_name(key: str, where: dict) -> str:
    """How an option reads in a message: ``--lr``, or ``x.toml: [hogwild].lr`` when the file set it."""
    return where.get(key) or f"--{key.replace('_', '-')}"


def check_options(opts: dict, where: dict) -> None:
    """CLIError naming the option for the first value out of its range; ``where``: key -> name
    of the config entry for options the TOML file set (the others came from the command line)."""
    for key, (lo, hi, lo_open, hi_open) in FLOATS.items():
        v = opts.get(key)
        if v is None:
            continue
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            brackets = ("(" if lo_open else "[") + f"{lo:g}, {hi:g}" + (")" if hi_open else "]")
            raise CLIError(f"{option_name(key, where)}: must be a finite number in {brackets}, got {v!r}")
    for key, (lo, hi) in INTS.items():
        v = opts.get(key)
        if v is None:
            continue
        if not lo <= v <= hi:
            bound = "2**63-1 (what torch.Generator accepts)" if key == "seed" else f"{hi:,}"
            raise CLIError(f"{option_name(key, where)}: must be an integer in {lo}..{bound}, got {v}")
    se = opts.get("stale_every")
    if se is not None and se & (se - 1):
        raise CLIError(f"{option_name('stale_every', where)}: must be a power of two, got {se}")


def available_memory() -> int | None:
    """Bytes this machine can still give (``MemAvailable``, else free pages); None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def estimate_bytes(opts: dict) -> tuple[int, str] | None:
    """Peak bytes of building the generated problem of ``opts`` and the option that drives
    most of them, or None for a problem read from a file or embedded.  Counted from the
    arrays the generators and the shared copies allocate (a generous bound, not a measurement)."""
    problem = str(opts["problem"])
    if problem.startswith("rcv1-like"):
        n, d, nnz = opts["examples"], opts["features"], opts["nnz"]
        # per non-zero: int32 index, float32 value, float64 tf, int64 row of the generator, the shared
        # copies (data codes, packed rows); per example: indptr, fill, margins, labels; per feature:
        # frequencies and their temporaries, permutation, idf, the planted model, every run's model
        parts = {f"--examples {n} (x --nnz {nnz:g})": n * min(nnz, d) * 48 + n * 48, f"--features {d}": d * 80}
    elif problem == "matrix-completion":
        rows, cols, rank = opts["rows"], opts["cols"], opts["rank"]
        # 1.2x drawn cells (int64, sorted by np.unique), row/col int32, float64 and float32 values, shared copies
        parts = {f"--rows {rows} x --cols {cols} (x --density {opts['density']:g})": rows * cols * opts["density"] * 64,
                 f"--rank {rank}": (rows + cols) * rank * 24}
    else:
        return None
    return int(sum(parts.values())), max(parts, key=parts.get)


def check_memory(opts: dict) -> None:
    """CLIError naming the option when the generated problem cannot fit in the free memory."""
    est = estimate_bytes(opts)
    if est is None:
        return
    need, which = est
    free = available_memory()
    if free is not None and need > free:
        raise CLIError(f"{which}: the problem needs about {_gib(need)} of memory and this machine has "
                       f"{_gib(free)} free (make it smaller)")


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"
