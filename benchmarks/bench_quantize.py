"""Speed of ``relaxtorch.quantize`` against ``x.clone()`` (the memory-bandwidth floor) and QPyTorch.

    python benchmarks/bench_quantize.py [--n 16777216] [--reps 7] [--device cpu|cuda] [--json PATH]

Claim: on a large float32 tensor, rounding to a format costs little more than
copying it: FP8 round-to-nearest within 2x a clone, FP8 stochastic rounding
within 3x, MX block formats (a shared scale per 32 values) within 4x.  Other
cases are timed for comparison and carry no target.

Each case times ``x.clone()``, ``rt.quantize`` and, if QPyTorch is importable,
its matching function, interleaved (clone, relaxtorch, qtorch, clone, ...) after
a warm-up round, and reports the medians and the ratios to the clone.  QPyTorch
is optional (it has no MX formats: those cells read n/a); relaxtorch comes from
the repository's ``src`` when it is not installed, so the script runs in a
peer's virtual environment too.
"""
from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.use_repo_src()

import torch  # noqa: E402

import relaxtorch as rt  # noqa: E402
from relaxtorch.jobs._report import format_table  # noqa: E402

try:
    from qtorch.quant import block_quantize, fixed_point_quantize, float_quantize
except Exception as exc:  # absent, or its C++ extension failed to build
    float_quantize = fixed_point_quantize = block_quantize = None
    QTORCH_MISSING = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
else:
    QTORCH_MISSING = None

F = rt.formats
TARGETS = {"fp8_nearest": 2.0, "fp8_stochastic": 3.0, "mx": 4.0}


def cases():
    """(name, relaxtorch format, rounding, qtorch function of (x, rounding) or None, target key or None)."""
    q_float = (lambda e, m: lambda x, r: float_quantize(x, exp=e, man=m, rounding=r)) if float_quantize else None
    q_fixed = (lambda x, r: fixed_point_quantize(x, wl=8, fl=4, rounding=r)) if fixed_point_quantize else None
    q_block = (lambda x, r: block_quantize(x, wl=8, dim=-1, rounding=r)) if block_quantize else None
    rows = [
        ("FP8_E4M3", F.FP8_E4M3, "nearest", q_float and q_float(4, 3), "fp8_nearest"),
        ("FP8_E4M3", F.FP8_E4M3, "stochastic", q_float and q_float(4, 3), "fp8_stochastic"),
        ("FP8_E5M2", F.FP8_E5M2, "nearest", q_float and q_float(5, 2), "fp8_nearest"),
        ("BF16", F.BF16, "nearest", q_float and q_float(8, 7), None),
        ("FixedPoint(8,4)", rt.FixedPoint(8, 4), "nearest", q_fixed, None),
        ("FixedPoint(8,4)", rt.FixedPoint(8, 4), "stochastic", q_fixed, None),
        ("BlockFloat(8)", rt.BlockFloat(8), "nearest", q_block, None),
    ]
    for name in ("MXFP8_E4M3", "MXFP4", "MXINT8"):
        for rounding in ("nearest", "stochastic"):
            rows.append((name, getattr(F, name), rounding, None, "mx"))
    return rows


def parse_args(argv=None):
    p = C.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--n", type=C.positive_int, default=2**24, help="number of float32 values (default 2**24)")
    p.add_argument("--reps", type=C.positive_int, default=7, help="timed repetitions per case (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds per case before timing (default 1)")
    p.add_argument("--scale", type=float, default=4.0, help="x = randn(n) * scale (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed for x and for stochastic rounding (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--json", default=str(C.RESULTS / "bench_quantize.json"),
                   help="where to write the results (default benchmarks/results/bench_quantize.json)")
    args = p.parse_args(argv)
    if args.warmup < 0:
        C.fail(f"Invalid --warmup: {args.warmup!r} (must be at least 0)")
    if not args.scale > 0 or args.scale == float("inf"):
        C.fail(f"Invalid --scale: {args.scale!r} (must be a positive finite number)")
    return args


def shape_for(n: int) -> tuple[int, ...]:
    """A matrix with rows of 4096 when n allows (MX blocks run along the last dimension), else a vector."""
    return (n // 4096, 4096) if n % 4096 == 0 else (n,)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = C.resolve_device(args.device)
    sync = C.synchronizer(device)
    info = C.machine(device, extra_packages=("qtorch",))
    info["relaxtorch"] = rt.__version__
    info["relaxtorch_from"] = str(Path(rt.__file__).resolve().parent)
    info["qtorch_status"] = "ok" if QTORCH_MISSING is None else f"unavailable ({QTORCH_MISSING})"

    torch.manual_seed(args.seed)  # QPyTorch's stochastic rounding draws from torch's global generator
    gen = torch.Generator().manual_seed(args.seed)
    x = (torch.randn(shape_for(args.n), generator=torch.Generator().manual_seed(args.seed)) * args.scale).to(device)
    table = cases()

    # Compile every numba kernel (about 2 s the first time) on a small tensor, outside the timings.
    t0 = time.perf_counter()
    small = x.reshape(-1)[:4096].reshape(1, -1).clone()
    for _, fmt, rounding, qfn, _ in table:
        rt.quantize(small, fmt, rounding, generator=gen)
        if qfn is not None:
            qfn(small, rounding)
    sync()
    compile_s = time.perf_counter() - t0

    print(C.describe(info))
    print(f"qtorch: {info.get('qtorch') or '-'} ({info['qtorch_status']})")
    print(f"x: {args.n:,} float32 values, shape {tuple(x.shape)}, randn * {args.scale:g}, seed {args.seed}; "
          f"median of {args.reps} interleaved reps after {args.warmup} warm-up; kernel warm-up {compile_s:.1f} s")
    print()

    results, rows = [], []
    t_start = time.perf_counter()
    for i, (name, fmt, rounding, qfn, target_key) in enumerate(table, 1):
        label = f"{name} {rounding}"
        print(f"[{i}/{len(table)}] {label} ...", file=sys.stderr, flush=True)
        fns = {
            "clone": x.clone,
            "relaxtorch": partial(rt.quantize, x, fmt, rounding, generator=gen),
            "qtorch": partial(qfn, x, rounding) if qfn is not None else None,
        }
        samples = C.time_interleaved(fns, args.reps, warmup=args.warmup, sync=sync)
        clone_ms, rt_ms, q_ms = (C.median_ms(samples[k]) for k in ("clone", "relaxtorch", "qtorch"))
        rt_ratio, q_ratio = C.ratio(rt_ms, clone_ms), C.ratio(q_ms, clone_ms)
        target = TARGETS.get(target_key)
        met = None if target is None else rt_ratio <= target
        results.append({
            "case": label, "format": repr(fmt), "rounding": rounding,
            "clone_ms": clone_ms, "relaxtorch_ms": rt_ms, "qtorch_ms": q_ms,
            "relaxtorch_per_clone": rt_ratio, "qtorch_per_clone": q_ratio,
            "qtorch_per_relaxtorch": C.ratio(q_ms, rt_ms),
            "relaxtorch_per_clone_paired": C.paired_ratio(samples["relaxtorch"], samples["clone"]),
            "qtorch_per_clone_paired": C.paired_ratio(samples["qtorch"], samples["clone"]),
            "target_per_clone": target, "met": met,
            "samples_ms": {k: [s * 1e3 for s in v] for k, v in samples.items()},
        })
        rows.append([label, C.fmt_ms(clone_ms), C.fmt_ms(rt_ms), C.fmt_ratio(rt_ratio), C.fmt_ms(q_ms),
                     C.fmt_ratio(q_ratio), "-" if target is None else f"<= {target:g}x",
                     "-" if met is None else ("yes" if met else "NO")])
    total_s = time.perf_counter() - t_start

    headers = ["case", "clone ms", "relaxtorch ms", "relaxtorch/clone", "qtorch ms", "qtorch/clone",
               "target", "met?"]
    print(format_table(headers, rows, align="lrrrrrll"))
    missed = [r["case"] for r in results if r["met"] is False]
    with_target = sum(r["met"] is not None for r in results)
    print()
    print(f"targets met: {with_target - len(missed)}/{with_target}"
          + (f" (missed: {', '.join(missed)})" if missed else "") + f"; timed in {total_s:.0f} s")

    payload = {
        "benchmark": "bench_quantize",
        "claim": "relaxtorch.quantize / x.clone(): FP8 nearest <= 2x, FP8 stochastic <= 3x, MX <= 4x",
        "timestamp": C.timestamp(),
        "machine": info,
        "config": {"n": args.n, "shape": list(x.shape), "dtype": "float32", "scale": args.scale,
                   "seed": args.seed, "reps": args.reps, "warmup": args.warmup, "device": str(device),
                   "statistic": "median", "interleaved": True},
        "compile_s": compile_s,
        "total_s": total_s,
        "results": results,
    }
    path = C.write_json(args.json, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
