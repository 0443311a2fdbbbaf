"""Wall-clock overhead of simulated low precision in a training step, against float32 and QPyTorch.

    python benchmarks/bench_train_step.py [--reps 40] [--batch 256] [--hidden 1024] [--json PATH]

Claim: an 8-bit training step of an MLP 64-1024-1024-10 at batch 256 (weights
and activations in FP8 E4M3, errors, gradients and momentum in FP8 E5M2, weights
updated with stochastic rounding, SGD with momentum) costs at most 1.5x the
float32 step on the CPU.  Also timed, without a target: the same with an FP16
accumulator (the recipe of examples/train_digits_lp.py), and QPyTorch's
equivalent (its ``Quantizer`` modules between the layers and its ``OptimLP``)
when qtorch is importable.

One step is zero_grad, forward, cross-entropy, backward and the optimizer
step, on a batch of scikit-learn's digits images (64 features).  The runs take
turns step by step (float32, relaxtorch, ..., float32, ...) after a warm-up, and
the table reports each one's median and its ratio to float32's.
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.use_repo_src()

import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402

import relaxtorch as rt  # noqa: E402
from relaxtorch.jobs._report import format_table  # noqa: E402

try:
    from qtorch import FloatingPoint
    from qtorch.optim import OptimLP as QOptimLP
    from qtorch.quant import Quantizer as QQuantizer
    from qtorch.quant import quantizer as q_quantizer
except Exception as exc:  # absent, or its C++ extension failed to build
    QTORCH_MISSING = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
else:
    QTORCH_MISSING = None

F = rt.formats
TARGET = 1.5
LR, MOMENTUM = 0.05, 0.9


def mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def float32_run(model):
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def relaxtorch_run(model, acc=None):
    lp = rt.quantize_model(model, weight=F.FP8_E4M3, activation=F.FP8_E4M3, error=F.FP8_E5M2, generator=1)
    opt = rt.OptimLP(torch.optim.SGD(lp.parameters(), lr=LR, momentum=MOMENTUM), weight=F.FP8_E4M3,
                     grad=F.FP8_E5M2, momentum=F.FP8_E5M2, acc=acc, acc_rounding="stochastic", generator=2)
    return lp, opt


def qtorch_run(model):
    """QPyTorch's way: Quantizer modules after every layer and activation, its OptimLP around SGD."""
    e4m3, e5m2 = FloatingPoint(exp=4, man=3), FloatingPoint(exp=5, man=2)

    def q():
        return QQuantizer(forward_number=e4m3, backward_number=e5m2, forward_rounding="nearest",
                          backward_rounding="stochastic")
    layers = [q()]
    for m in copy.deepcopy(model):
        layers += [m, q()]
    lp = nn.Sequential(*layers)
    opt = QOptimLP(torch.optim.SGD(lp.parameters(), lr=LR, momentum=MOMENTUM),
                   weight_quant=q_quantizer(forward_number=e4m3, forward_rounding="stochastic"),
                   grad_quant=q_quantizer(forward_number=e5m2, forward_rounding="stochastic"),
                   momentum_quant=q_quantizer(forward_number=e5m2, forward_rounding="stochastic"))
    return lp, opt


def stepper(model, opt, batches):
    loss_fn = nn.CrossEntropyLoss()
    state = {"i": 0}

    def step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def parse_args(argv=None):
    p = C.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--reps", type=C.positive_int, default=40, help="timed steps per run (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per run first (default 5)")
    p.add_argument("--batch", type=C.positive_int, default=256, help="batch size (default 256)")
    p.add_argument("--hidden", type=C.positive_int, default=1024, help="hidden width (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights and batches (default 0)")
    p.add_argument("--threads", type=C.positive_int, help="torch and numba threads (default: all cores)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall-clock (default) or CPU seconds of the process (steadier on a busy machine)")
    p.add_argument("--json", default=str(C.RESULTS / "bench_train_step.json"),
                   help="where to write the results (default benchmarks/results/bench_train_step.json)")
    args = p.parse_args(argv)
    if args.warmup < 0:
        C.fail(f"Invalid --warmup: {args.warmup!r} (must be at least 0)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            import numba
            numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        except ImportError:
            pass
    info = C.machine(None, extra_packages=("qtorch",))
    info["relaxtorch"] = rt.__version__
    info["qtorch_status"] = "ok" if QTORCH_MISSING is None else f"unavailable ({QTORCH_MISSING})"

    X, y = load_digits(return_X_y=True)
    X = torch.tensor((X - X.mean(0)) / (X.std(0) + 1e-6), dtype=torch.float32)
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(8):
        idx = torch.randint(0, len(X), (args.batch,), generator=g)
        batches.append((X[idx], y[idx]))
    torch.manual_seed(args.seed)  # the initial weights; QPyTorch's rounding draws from the global generator
    base = mlp(args.hidden)
    runs = {
        "float32": float32_run(copy.deepcopy(base)),
        "relaxtorch 8-bit": relaxtorch_run(base),
        "relaxtorch 8-bit + FP16 acc": relaxtorch_run(base, acc=F.FP16),
        "qtorch 8-bit": qtorch_run(base) if QTORCH_MISSING is None else None,
    }
    fns = {name: (stepper(*run, batches) if run is not None else None) for name, run in runs.items()}
    t0 = time.perf_counter()
    for fn in fns.values():  # compile kernels outside the timings
        if fn is not None:
            fn()
    compile_s = time.perf_counter() - t0

    n_params = sum(p.numel() for p in base.parameters())
    print(C.describe(info))
    print(f"qtorch: {info.get('qtorch') or '-'} ({info['qtorch_status']})")
    print(f"MLP 64-{args.hidden}-{args.hidden}-10 ({n_params:,} parameters), batch {args.batch}, SGD momentum "
          f"{MOMENTUM}; median of {args.reps} interleaved steps after {args.warmup} warm-up; "
          f"{'wall-clock' if args.clock == 'wall' else 'CPU'} time")
    print()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    samples = C.time_interleaved(fns, args.reps, warmup=args.warmup, clock=clock)
    base_ms = C.median_ms(samples["float32"])
    results, rows = [], []
    for name in fns:
        ms = C.median_ms(samples[name])
        r = C.ratio(ms, base_ms)
        target = TARGET if name == "relaxtorch 8-bit" else None
        met = None if target is None or r is None else r <= target
        results.append({"run": name, "step_ms": ms, "per_float32": r,
                        "per_float32_paired": C.paired_ratio(samples[name], samples["float32"]),
                        "target_per_float32": target, "met": met,
                        "samples_ms": [s * 1e3 for s in samples[name]]})
        rows.append([name, C.fmt_ms(ms), C.fmt_ratio(r), "-" if target is None else f"<= {target:g}x",
                     "-" if met is None else ("yes" if met else "NO")])
    print(format_table(["run", "step ms", "per float32", "target", "met?"], rows, align="lrrll"))
    payload = {
        "benchmark": "bench_train_step",
        "claim": f"8-bit training step of MLP 64-{args.hidden}-{args.hidden}-10, batch {args.batch}: "
                 f"<= {TARGET}x the float32 step",
        "timestamp": C.timestamp(), "machine": info,
        "config": {"batch": args.batch, "hidden": args.hidden, "params": n_params, "reps": args.reps,
                   "warmup": args.warmup, "seed": args.seed, "clock": args.clock, "lr": LR, "momentum": MOMENTUM,
                   "statistic": "median", "interleaved": True},
        "compile_s": compile_s, "results": results,
    }
    print(f"\nwrote {C.write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
