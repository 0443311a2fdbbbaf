"""Float32 all-reduce vs CocktailSGD on a simulated slow link: bytes, and simulated time per step.

    python benchmarks/bench_comm.py [--nproc 4] [--model mlp1m] [--steps 40] [--reps 3] [--link 500Mbps,1ms]

Claim (CocktailSGD, Wang et al., ICML 2023): on a 500 Mbps / 1 ms link, training the
1.13M-parameter MLP on 4 ranks with CocktailSGD's compression (10% random, top 20%,
4-bit buckets of 128, communication overlapped with the next step) is at most 1.3x
slower than float32 all-reduce on an unlimited link (the paper's comparison: the
"slowdown" column), while float32 all-reduce on the slow link is dominated by the link.
The compression must therefore cost less than the network it saves.

One ``relaxtorch dist`` job on ``--nproc`` local gloo ranks trains all-reduce and
CocktailSGD ``--reps`` times each, interleaved (allreduce, cocktail, allreduce, ...),
from the same initial model on the same minibatches.  The same rules for both:

- each rank runs torch on cores // ranks intra-op threads (1 when ranks >= cores);
- every step's compute (forward, backward) and compression (everything CocktailSGD does
  to the numbers: subsets, top-K, quantization, error feedback, the server's work, decoding
  and applying the update; nothing for float32 all-reduce) are measured on each rank, in CPU
  seconds of the rank's thread when the ranks' threads outnumber the cores (a rank waiting
  for a core another rank holds is not charged), else in wall-clock seconds;
- communication is timed by the link model from the exact bytes and messages sent (one
  latency per round of messages that go out together: 2(N-1) rounds for the ring
  all-reduce, 2 for CocktailSGD's two phases); it only accounts for time, never sleeps;
- a run's simulated time follows every rank's clock (``train.simulated_seconds``): float32
  all-reduce waits each step for the slowest rank's compute + communication; CocktailSGD
  (update one step stale) computes step t+1 while step t's exchange is on the link and
  waits for it before compressing step t+1.  The time of the whole run divided by its
  steps, for both;
- on an unlimited link the same measurements are replayed without the link time.

CocktailSGD's exchange runs in a background thread only where each rank has a spare core;
otherwise inline, just before the next step compresses (the same values, and its work is
counted either way).  Medians over repetitions; the machine is named.

Then, in this process, the stage breakdown of one rank's CocktailSGD step on the same
model (``_cocktail_stages``: subsets, gather, top-K, quantize, error feedback, server,
updates, apply; CPU ms per step of the compiled kernels and of the previous torch code,
interleaved, one thread), so a run shows where the compression time goes.
"""
from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.use_repo_src()

from relaxtorch.jobs._report import format_table  # noqa: E402

TARGET = 1.3  # CocktailSGD at 500 Mbps / float32 all-reduce on an unlimited link


def parse_args(argv=None):
    p = C.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--nproc", type=C.positive_int, default=4, help="ranks (default 4)")
    p.add_argument("--model", default="mlp1m", choices=("mlp", "mlp1m"), help="model (default mlp1m, 1.13M params)")
    p.add_argument("--steps", type=C.positive_int, default=40, help="training steps per run (default 40)")
    p.add_argument("--reps", type=C.positive_int, default=3, help="runs of each algorithm (default 3)")
    p.add_argument("--link", default="500Mbps,1ms", help="simulated link (default 500Mbps,1ms)")
    p.add_argument("--batch-size", type=C.positive_int, default=32, help="minibatch per rank (default 32)")
    p.add_argument("--timeout", type=float, default=120.0, help="collective timeout in seconds (default 120)")
    p.add_argument("--stage-reps", type=int, default=5,
                   help="cycles of the stage breakdown per implementation (default 5; 0 skips it)")
    p.add_argument("--timeline", action="store_true",
                   help="also print each rank's per-step compute, compression and link time of the first "
                        "CocktailSGD run, and rank 0's clock step by step")
    p.add_argument("--json", default=str(C.RESULTS / "bench_comm.json"),
                   help="where to write the results (default benchmarks/results/bench_comm.json)")
    return p.parse_args(argv)


def job(args):
    from relaxtorch.jobs.distributed import parse
    runs = [{"algorithm": a, "name": f"{a}-r{r}"} for r in range(1, args.reps + 1) for a in ("allreduce", "cocktail")]
    raw = {"dist": {"nproc": args.nproc, "model": args.model, "steps": args.steps, "batch_size": args.batch_size,
                    "lr": 0.05, "momentum": 0.9, "link": args.link, "eval_every": args.steps,
                    "checkpoint_every": 0, "timeout": args.timeout, "device": "cpu"}, "runs": runs}
    try:
        return parse(raw)
    except ValueError as exc:
        C.fail(str(exc))


def main(argv=None) -> int:
    args = parse_args(argv)
    from relaxtorch.jobs.distributed import RankFailure, launch_local
    cfg = job(args)
    info = C.machine()
    print(C.describe(info))
    from relaxtorch.jobs.distributed.launch import _threads
    rank_threads = _threads(cfg, args.nproc)
    print(f"job: {args.nproc} gloo ranks, {args.model}, {args.steps} steps x {args.reps} reps per algorithm, "
          f"batch {args.batch_size} per rank, link {args.link}")
    from relaxtorch.comm.cocktail import spare_core
    cores = C.machine()["cpus_usable"]
    cpu_clock = args.nproc * rank_threads > cores
    print(f"ranks: torch {rank_threads} intra-op thread(s) each (cores // ranks); compute and compression timed in "
          f"{'CPU seconds of each rank thread (ranks outnumber the ' + str(cores) + ' cores)' if cpu_clock else 'wall-clock seconds'}; "
          "CocktailSGD's compression kernels are serial numba, its exchange runs "
          + ("in a background thread per rank (a spare core each)" if spare_core(args.nproc) else
             "inline (no spare core for an exchange thread)"))
    import _cocktail_stages as S
    t0 = time.perf_counter()
    timeline = None
    with tempfile.TemporaryDirectory(prefix="bench_comm-") as out, \
            tempfile.TemporaryDirectory(prefix="bench_comm-timeline-") as tl:
        os.environ[S.TIMELINE_ENV] = tl  # the ranks inherit it
        try:
            report = launch_local(cfg, out, progress=False, factory=S.timeline_factory if args.timeline else None)
        except RankFailure as exc:
            C.fail(str(exc))
        if args.timeline:
            timeline = {r["name"]: S.read_timeline(tl, r["name"], args.nproc) for r in report["runs"]}
    seconds = time.perf_counter() - t0
    per = {"allreduce": [], "cocktail": []}
    for r in report["runs"]:
        per[r["algorithm"]].append(r["summary"])

    def med(algo, key):
        return statistics.median(s[key] for s in per[algo])

    keys = ("bytes_per_step", "compression_ratio", "sim_step_s", "sim_unlimited_step_s", "link_slowdown",
            "slowdown", "compute_step_s", "compress_step_s", "sim_comm_step_s", "comm_step_s")
    medians = {a: {k: med(a, k) for k in keys} for a in per}
    a, c = medians["allreduce"], medians["cocktail"]
    # the paper's comparison, per repetition (each cocktail run against the all-reduce run next to it)
    paired = [cs["sim_step_s"] / as_["sim_unlimited_step_s"] for as_, cs in zip(per["allreduce"], per["cocktail"])]
    rows = []
    for name, m in (("float32 all-reduce", a), ("CocktailSGD", c)):
        rows.append([name, f"{m['bytes_per_step']:,.0f}", f"{m['compression_ratio']:.1f}",
                     f"{1e3 * m['sim_step_s']:.2f}", f"{1e3 * m['sim_unlimited_step_s']:.2f}",
                     f"{m['link_slowdown']:.2f}x", f"{m['sim_step_s'] / a['sim_unlimited_step_s']:.2f}x",
                     f"{1e3 * m['compute_step_s']:.2f}", f"{1e3 * m['compress_step_s']:.2f}",
                     f"{1e3 * m['sim_comm_step_s']:.2f}", f"{1e3 * m['comm_step_s']:.2f}"])
    print()
    print(format_table(["algorithm", "bytes/step/worker", "compression", f"sim ms/step ({args.link})",
                        "sim ms/step (unlimited)", "vs own unlimited", "slowdown", "compute ms", "compress ms",
                        "comm sim ms", "comm real ms"], rows, "lrrrrrrrrrr"))
    print("slowdown: sim ms/step over float32 all-reduce's sim ms/step on an unlimited link (medians); "
          "vs own unlimited: the same algorithm's steps on an unlimited link.")
    fewer = a["bytes_per_step"] / c["bytes_per_step"]
    vs_fp32_fast = c["sim_step_s"] / a["sim_unlimited_step_s"]
    speedup = a["sim_step_s"] / c["sim_step_s"]
    ok = vs_fp32_fast <= TARGET
    print(f"\nCocktailSGD sends {fewer:.1f}x fewer bytes than float32 all-reduce.")
    print(f"slowdown: CocktailSGD at {args.link} takes {vs_fp32_fast:.2f}x the time of float32 all-reduce on an "
          f"unlimited link (target <= {TARGET}x: {'met' if ok else 'NOT met'}; per repetition "
          f"{', '.join(f'{r:.2f}x' for r in paired)}); float32 all-reduce at {args.link}: "
          f"{a['link_slowdown']:.2f}x.")
    print(f"At {args.link}, a CocktailSGD step takes {1 / speedup:.2f}x the time of a float32 all-reduce step "
          f"there; against its own steps on an unlimited link {c['link_slowdown']:.2f}x.")
    print(f"(medians over {args.reps} runs of {args.steps} steps; {seconds:.0f} s in all)")
    if timeline is not None:
        print_timeline(timeline, report)
    stages = None
    if args.stage_reps > 0:
        stages = stage_breakdown(cfg, args)
    payload = {"benchmark": "bench_comm", "timestamp": C.timestamp(), "machine": info, "args": vars(args),
               "rank_threads": rank_threads, "medians": medians, "bytes_fewer": fewer,
               "slowdown": vs_fp32_fast, "slowdown_per_rep": paired,
               "cocktail_link_slowdown": c["link_slowdown"], "allreduce_link_slowdown": a["link_slowdown"],
               "cocktail_vs_allreduce_unlimited": vs_fp32_fast, "cocktail_speedup_on_link": speedup,
               "target": TARGET, "target_met": ok, "stages_cpu_s_per_step": stages,
               "runs": [{"name": r["name"], **r["summary"]} for r in report["runs"]], "seconds": seconds}
    path = C.write_json(args.json, payload)
    print(f"wrote {path}")
    return 0


def print_timeline(timeline: dict, report: dict) -> None:
    """Per rank: medians and means of each step's measurements; then rank 0's clock, step by step."""
    from relaxtorch.jobs.distributed.train import simulated_seconds
    for run in report["runs"]:
        t = timeline[run["name"]]
        print(f"\ntimeline of {run['name']} ({run['clock']} clock; ms per step, median / mean over its steps):")
        rows = [[f"rank {i}"] + [f"{1e3 * float(t[i, :, f].median()):.2f} / {1e3 * float(t[i, :, f].mean()):.2f}"
                                 for f in range(5)] for i in range(t.shape[0])]
        rows.append(["slowest per step"] + [f"{1e3 * float(t[..., f].max(0).values.median()):.2f} / "
                                            f"{1e3 * float(t[..., f].max(0).values.mean()):.2f}" for f in range(5)])
        print(format_table(["rank", "compute", "compress", "link (sim)", "comm (real)", "wall (real)"], rows, "lrrrrr"))
        clocks = [simulated_seconds(t[:, :k], run["overlap"]) for k in range(1, min(t.shape[1], 12) + 1)]
        print("  the run's clock after each of the first steps, ms: "
              + ", ".join(f"{1e3 * c:.1f}" for c in clocks))
        if run["algorithm"] == "cocktail":
            break


def stage_breakdown(cfg, args) -> dict:
    """Print and return the per-stage CPU ms of one rank's CocktailSGD step (see _cocktail_stages)."""
    import _cocktail_stages as S
    from relaxtorch.data import load_dataset
    from relaxtorch.jobs.distributed.models import build_model
    spec = next(r for r in cfg.runs if r.algorithm == "cocktail")
    ds = load_dataset(spec.data, seed=cfg.seed)
    shapes = [tuple(p.shape) for p in build_model(args.model, ds.n_features, ds.n_classes).parameters()]
    o = spec.options
    res = S.run(shapes, world=args.nproc, random_ratio=o.get("random_ratio", 0.1), topk_ratio=o.get("topk_ratio", 0.2),
                bits=o.get("bits", 4), bucket=o.get("bucket", 128), reps=args.stage_reps)
    from relaxtorch.comm.cocktail import spare_core
    threaded = spare_core(args.nproc)
    rows = []
    for name in S.STAGES + ("total",):
        old, new = res["previous"][name], res["compiled"][name]
        where = S.WHERE.get(name, "") if threaded or name == "total" else "main"
        rows.append([name, where, f"{1e3 * old:.3f}", f"{1e3 * new:.3f}",
                     f"{old / new:.1f}x" if new else "n/a"])
    print(f"\nCocktailSGD stage breakdown, one rank of {args.nproc} ({sum(map(math.prod, shapes)):,} parameters): "
          f"CPU ms per step, medians over {args.stage_reps} cycles each, previous and compiled interleaved, 1 thread")
    print(format_table(["stage", "thread", "previous ms", "compiled ms", "speed-up"], rows, "llrrr"))
    return res


if __name__ == "__main__":
    sys.exit(main())
