"""Speed of ``relaxtorch.quantize_``/``quantize`` against the memory limit (a warm ``y.copy_(x)``), ``x.clone()`` and QPyTorch.

    python benchmarks/bench_quantize.py [--n 16777216] [--reps 9] [--device cpu|cuda] [--json PATH]

Claims, on a large float32 tensor (2**24 values):
- in place (``quantize_`` on a warm buffer), against ``y.copy_(x)`` into a warm
  buffer (one read and one write of every value: the physical limit): float
  formats and fixed point at nearest <= 1.3x, stochastic rounding <= 1.6x, MX
  and block formats <= 2.0x;
- out of place (``quantize``, which allocates its result), against ``x.clone()``
  (which allocates too): <= 1.2x.

Every case times, interleaved (copy_, clone, quantize_, quantize, qtorch,
copy_, ...), after warm-up rounds, and reports the medians and the ratios.
Every buffer is touched before timing (first-touch page faults are not
counted anywhere), and a global warm-up round runs every case once before the
first timed row.  ``quantize_`` gets a fresh copy of x before each call,
untimed.  QPyTorch is optional (it has no MX formats: those cells read n/a);
relaxtorch comes from the repository's ``src`` when it is not installed, so the
script runs in a peer's virtual environment too.
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
TARGETS = {"nearest": 1.3, "stochastic": 1.6, "block": 2.0}  # quantize_ / copy_
OUT_OF_PLACE_TARGET = 1.2  # quantize / clone


def target_key(fmt, rounding: str) -> str:
    if isinstance(fmt, (rt.MXFormat, rt.BlockFloat)):
        return "block"
    return "stochastic" if rounding == "stochastic" else "nearest"


def cases():
    """(name, relaxtorch format, rounding, qtorch function of (x, rounding) or None)."""
    q_float = (lambda e, m: lambda x, r: float_quantize(x, exp=e, man=m, rounding=r)) if float_quantize else None
    q_fixed = (lambda x, r: fixed_point_quantize(x, wl=8, fl=4, rounding=r)) if fixed_point_quantize else None
    q_block = (lambda x, r: block_quantize(x, wl=8, dim=-1, rounding=r)) if block_quantize else None
    rows = [
        ("FP8_E4M3", F.FP8_E4M3, "nearest", q_float and q_float(4, 3)),
        ("FP8_E4M3", F.FP8_E4M3, "stochastic", q_float and q_float(4, 3)),
        ("FP8_E4M3", F.FP8_E4M3, "nearest_away", None),
        ("FP8_E5M2", F.FP8_E5M2, "nearest", q_float and q_float(5, 2)),
        ("BF16", F.BF16, "nearest", q_float and q_float(8, 7)),
        ("FixedPoint(8,4)", rt.FixedPoint(8, 4), "nearest", q_fixed),
        ("FixedPoint(8,4)", rt.FixedPoint(8, 4), "stochastic", q_fixed),
        ("BlockFloat(8)", rt.BlockFloat(8), "nearest", q_block),
    ]
    for name in ("MXFP8_E4M3", "MXFP4", "MXINT8"):
        for rounding in ("nearest", "stochastic"):
            rows.append((name, getattr(F, name), rounding, None))
    return rows


def parse_args(argv=None):
    p = C.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--n", type=C.positive_int, default=2**24, help="number of float32 values (default 2**24)")
    p.add_argument("--reps", type=C.positive_int, default=9, help="timed repetitions per case (default 9)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds per case before timing (default 2)")
    p.add_argument("--only", help="run only the cases whose label contains this text (e.g. MX)")
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


def _numba_threads():
    """numba's threads, threading layer and the CPU name LLVM targets (call after a parallel kernel ran)."""
    try:
        import llvmlite.binding as llvm
        import numba
        return {"threads": numba.get_num_threads(), "layer": numba.threading_layer(),
                "llvm_cpu": llvm.get_host_cpu_name()}
    except Exception as exc:  # numba missing, or no parallel kernel has run yet
        return f"unavailable ({type(exc).__name__})"


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
    for _, fmt, rounding, qfn in table:
        rt.quantize(small, fmt, rounding, generator=gen)
        if qfn is not None:
            qfn(small, rounding)
    sync()
    compile_s = time.perf_counter() - t0

    print(C.describe(info))
    print(f"qtorch: {info.get('qtorch') or '-'} ({info['qtorch_status']})")
    print(f"torch threads: {torch.get_num_threads()}; numba: {_numba_threads()}")
    print(f"x: {args.n:,} float32 values, shape {tuple(x.shape)}, randn * {args.scale:g}, seed {args.seed}; "
          f"median of {args.reps} interleaved reps after {args.warmup} warm-up; kernel warm-up {compile_s:.1f} s")
    print()

    y = torch.empty_like(x)  # the warm destination of copy_ and the in-place buffer, both touched now
    z = torch.empty_like(x)
    y.copy_(x)
    z.copy_(x)
    if args.only:
        table = [row for row in table if args.only.lower() in f"{row[0]} {row[2]}".lower()]

    def case_fns(fmt, rounding, qfn):
        fns = {
            "copy_": partial(y.copy_, x),
            "clone": x.clone,
            "quantize_": partial(rt.quantize_, z, fmt, rounding, generator=gen),
            "quantize": partial(rt.quantize, x, fmt, rounding, generator=gen),
            "qtorch": partial(qfn, x, rounding) if qfn is not None else None,
        }
        return fns, {"quantize_": partial(z.copy_, x)}

    for _, fmt, rounding, qfn in table:  # global warm-up: allocator, page cache, thread pools, every kernel
        fns, setup = case_fns(fmt, rounding, qfn)
        C.time_interleaved(fns, 0, warmup=1, sync=sync, setup=setup)

    results, rows = [], []
    t_start = time.perf_counter()
    for i, (name, fmt, rounding, qfn) in enumerate(table, 1):
        label = f"{name} {rounding}"
        print(f"[{i}/{len(table)}] {label} ...", file=sys.stderr, flush=True)
        fns, setup = case_fns(fmt, rounding, qfn)
        samples = C.time_interleaved(fns, args.reps, warmup=args.warmup, sync=sync, setup=setup)
        ms = {k: C.median_ms(v) for k, v in samples.items()}
        inplace = C.ratio(ms["quantize_"], ms["copy_"])
        outplace = C.ratio(ms["quantize"], ms["clone"])
        q_ratio = C.ratio(ms["qtorch"], ms["clone"])
        key = target_key(fmt, rounding)
        target = TARGETS[key]
        met_in, met_out = inplace <= target, outplace <= OUT_OF_PLACE_TARGET
        results.append({
            "case": label, "format": repr(fmt), "rounding": rounding,
            "copy_ms": ms["copy_"], "clone_ms": ms["clone"], "quantize__ms": ms["quantize_"],
            "quantize_ms": ms["quantize"], "qtorch_ms": ms["qtorch"],
            "quantize__per_copy_": inplace, "quantize_per_clone": outplace, "qtorch_per_clone": q_ratio,
            "clone_per_copy_": C.ratio(ms["clone"], ms["copy_"]),
            "quantize__per_copy__paired": C.paired_ratio(samples["quantize_"], samples["copy_"]),
            "quantize_per_clone_paired": C.paired_ratio(samples["quantize"], samples["clone"]),
            "qtorch_per_clone_paired": C.paired_ratio(samples["qtorch"], samples["clone"]),
            "target_quantize__per_copy_": target, "target_quantize_per_clone": OUT_OF_PLACE_TARGET,
            "met_in_place": met_in, "met_out_of_place": met_out,
            "samples_ms": {k: [s * 1e3 for s in v] for k, v in samples.items()},
        })
        rows.append([label, C.fmt_ms(ms["copy_"]), C.fmt_ms(ms["clone"]), C.fmt_ms(ms["quantize_"]),
                     C.fmt_ratio(inplace), f"<= {target:g}x {'yes' if met_in else 'NO'}",
                     C.fmt_ms(ms["quantize"]), C.fmt_ratio(outplace),
                     f"<= {OUT_OF_PLACE_TARGET:g}x {'yes' if met_out else 'NO'}",
                     C.fmt_ms(ms["qtorch"]), C.fmt_ratio(q_ratio)])
    total_s = time.perf_counter() - t_start

    headers = ["case", "copy_ ms", "clone ms", "quantize_ ms", "/copy_", "target", "quantize ms", "/clone",
               "target", "qtorch ms", "qtorch/clone"]
    print(format_table(headers, rows, align="lrrrrlrrlrr"))
    missed = [f"{r['case']} ({'in place' if not r['met_in_place'] else ''}"
              f"{', ' if not r['met_in_place'] and not r['met_out_of_place'] else ''}"
              f"{'out of place' if not r['met_out_of_place'] else ''})"
              for r in results if not (r["met_in_place"] and r["met_out_of_place"])]
    n_targets = 2 * len(results)
    n_met = sum(r["met_in_place"] for r in results) + sum(r["met_out_of_place"] for r in results)
    print()
    print(f"targets met: {n_met}/{n_targets}" + (f" (missed: {'; '.join(missed)})" if missed else "")
          + f"; timed in {total_s:.0f} s")

    payload = {
        "benchmark": "bench_quantize",
        "claim": "relaxtorch.quantize_ / warm y.copy_(x): nearest <= 1.3x, stochastic <= 1.6x, MX and block "
                 "formats <= 2.0x; relaxtorch.quantize / x.clone() <= 1.2x",
        "timestamp": C.timestamp(),
        "machine": info,
        "config": {"n": args.n, "shape": list(x.shape), "dtype": "float32", "scale": args.scale,
                   "seed": args.seed, "reps": args.reps, "warmup": args.warmup, "device": str(device),
                   "statistic": "median", "interleaved": True, "threads": torch.get_num_threads(),
                   "numba_threads": _numba_threads()},
        "compile_s": compile_s,
        "total_s": total_s,
        "results": results,
    }
    path = C.write_json(args.json, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
