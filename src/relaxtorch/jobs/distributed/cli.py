"""``relaxtorch dist``: compressed and decentralized data-parallel training, compared side by side.

``python -m relaxtorch.jobs.distributed`` takes the same options; under ``torchrun``
(RANK and WORLD_SIZE set) it is one rank of a multi-node job and rank 0 prints the
table and writes the report. Command-line options override the config's ``[dist]``
table and every run.

Files go through :class:`relaxtorch.jobs._output.Staging`, checkpoints included: a job
writes into ``OUT/.relaxtorch-staging-*`` and its files replace the previous job's at the
end; an interrupted or failed job leaves them in ``OUT/partial`` (its checkpoints in
``OUT/partial/checkpoints``), and ``--resume`` continues from the newest checkpoints:
``OUT/partial``, a killed job's staging folder, else ``OUT/checkpoints``.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from .._cli import CLIError, RunFailed
from .config import ALGORITHMS, DEFAULT_ALGORITHMS, MODELS, PARTITIONS, TOPOLOGIES, ConfigError, load_config, override
from .schedule import SCHEDULES


_error = CLIError
HELP = "compressed / decentralized data-parallel training on N ranks (CocktailSGD, D-PSGD, ...)"
DESCRIPTION = ("Train the same model with several communication algorithms on N local ranks (torch.distributed: "
               "gloo on CPU, NCCL on GPU) and compare bytes sent, accuracy and simulated time on a slow link. "
               "Writes report.json, report.csv, history.csv and PNG plots to --out. For several machines: "
               "torchrun --nnodes K --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint FIRST_NODE:29500 "
               "-m relaxtorch.jobs.distributed ...")


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--nproc", type=int, metavar="N", help="local ranks (default 4; under torchrun: its world size)")
    a("--config", metavar="FILE", help="TOML config: [dist] defaults and one [[runs]] table per run "
                                       "(examples/dist_*.toml)")
    a("--algorithm", metavar="LIST", help=f"comma-separated, replacing the config's runs: {', '.join(ALGORITHMS)} "
                                          f"(default {','.join(DEFAULT_ALGORITHMS)})")
    a("--model", help=f"one of {', '.join(MODELS)} (default mlp)")
    a("--topology", help=f"gossip graph of decentralized runs: {', '.join(TOPOLOGIES)} or torus:RxC "
                         "(default ring)")
    a("--link", metavar="BW,LAT", help="simulated link, e.g. 500Mbps,1ms or unlimited (default 500Mbps,1ms)")
    a("--partition", help=f"data split across ranks: {', '.join(PARTITIONS)} (default iid)")
    a("--label-skew", type=float, metavar="S", help="fraction of examples sorted by label with --partition label "
                                                    "(default 0.9; 1: each rank a few labels)")
    a("--reshuffle", action="store_true", default=None, help="redraw the partition every epoch")
    a("--order", help="example order of every rank (relaxtorch.order): rr (default), so, flipflop, sequential, "
                      "grab, pair, cdgrab (pair balance shared across the ranks), ...")
    a("--steps", type=int, help="training steps per run (default 300)")
    a("--batch-size", type=int, help="minibatch per rank (default 32)")
    a("--lr", type=float, help="step size (default 0.1)")
    a("--lr-schedule", choices=SCHEDULES, help="step-size schedule: constant (default), step, cosine, inverse_sqrt")
    a("--eval-every", type=int, metavar="K", help="evaluate every K steps (default 25)")
    a("--checkpoint-every", type=int, metavar="K", help="checkpoint every K steps; 0: never (default 100)")
    a("--out", metavar="DIR", default="dist_out", help="output folder (default ./dist_out)")
    a("--seed", type=int, help="seed of data split, order and initial weights (default 0)")
    a("--resume", action="store_true", help="continue each run from its last checkpoint in --out")
    a("--timeout", type=float, metavar="SECONDS", help="bound on every collective; a rank silent this long "
                                                       "stops the job (default 60)")
    a("--device", choices=("auto", "cpu", "cuda"), help="auto: CUDA (NCCL) when available, else CPU (gloo)")
    a("--no-progress", action="store_true", help="no progress bar")


def build_config(args, world: int | None = None):
    """The validated job of ``args`` (CLIError on a user error); ``world`` fixes nproc (torchrun)."""
    from .algorithms import check_run
    algorithms = None
    if args.algorithm is not None:
        algorithms = [a.strip() for a in args.algorithm.split(",") if a.strip()]
    nproc = args.nproc
    if world is not None:
        if nproc is not None and nproc != world:
            raise _error(f"--nproc {nproc} differs from torchrun's world size {world}")
        nproc = world
    try:
        cfg = load_config(args.config)
        cfg = override(cfg, algorithms=algorithms, nproc=nproc, model=args.model, topology=args.topology,
                       link=args.link, partition=args.partition, label_skew=args.label_skew,
                       reshuffle=args.reshuffle, order=args.order, steps=args.steps, batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
                       eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
                       timeout=args.timeout, device=args.device)
    except ConfigError as exc:
        raise _error(str(exc)) from None
    from .config import order_error
    for spec in cfg.runs:
        why = check_run(spec, cfg.nproc) or order_error(spec)
        if why:
            raise _error(f"run {spec.name!r}: {why}")
    if cfg.device == "cuda" and world is None:
        import torch
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < cfg.nproc:
            raise _error(f"--device cuda: {cfg.nproc} ranks need as many GPUs; torch {torch.__version__} "
                         f"sees {gpus}")
    return cfg


def _owns() -> tuple:
    from .report import FILES
    return (*FILES, "checkpoints", "rank*-error.txt")


def _prepare_out(out: str, resume: bool, cfg=None, world: int | None = None):
    """The job's :class:`Staging` in ``out`` (checked now: a one-line error before any rank starts).

    Checkpoints are staged like every other file, so a new job never mixes its checkpoints
    with an old report.  With ``resume`` the staging folder starts with the newest checkpoints
    of ``out`` (hard links, else copies): those of an interrupted job (``out/partial``, or the
    staging folder of one killed with SIGKILL), else the last complete job's; each is checked
    here, so a damaged file is a one-line error before any rank starts."""
    from .._output import Staging, dead_stagings
    stage = Staging(out, "dist", owns=_owns())
    if not resume:
        return stage
    try:
        sources = [d / "checkpoints" for d in (stage.partial, *dead_stagings(stage.out), stage.out)]
        sources = [d for d in sources if d.is_dir() and any(d.glob("*.pt"))]
        if not sources:
            raise _error(f"--resume: no checkpoints in {out}/checkpoints or {out}/partial/checkpoints "
                         "(nothing to resume)")
        source = max(sources, key=lambda d: max(p.stat().st_mtime for p in d.glob("*.pt")))
        if cfg is not None:
            from .checkpoint import check
            for spec in cfg.runs:
                why = check(source / f"{spec.name}.pt", world or cfg.nproc)
                if why:
                    raise _error(f"--resume: {why.replace('checkpoint read by rank 0: ', '')}")
        target = stage.path / "checkpoints"
        target.mkdir()
        for p in source.glob("*.pt"):
            try:
                os.link(p, target / p.name)  # safe: checkpoints are replaced by rename, never rewritten
            except OSError:
                shutil.copy2(p, target / p.name)
    except BaseException:
        shutil.rmtree(stage.path, ignore_errors=True)
        raise
    return stage


def print_report(report: dict, out: Path) -> None:
    from .report import FILES, format_summary
    print(format_summary(report))
    print(f"\n{len(report['runs'])} run(s) in {report['seconds']:.0f} s; wrote:")
    for name in FILES:
        print(f"  {out / name}")


def run(args) -> None:
    """Handler of ``relaxtorch dist``: validate, launch the local ranks (or be one torchrun rank), print the table."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        _run_torchrun_rank(args)
        return
    from .launch import RankFailure, launch_local
    cfg = build_config(args)
    with _prepare_out(args.out, args.resume, cfg) as stage, stage.writing():
        try:
            report = launch_local(cfg, stage.path, resume=args.resume, progress=not args.no_progress)
            stage.commit()
        except RankFailure as exc:
            raise RunFailed(_rank_failure(exc, stage)) from None
    print_report(report, stage.out)


def _rank_failure(exc, stage) -> str:
    """The one line of a rank's failure, with paths as they are once the files are in OUT/partial;
    the traceback goes to a file there."""
    msg = str(exc).replace(str(stage.path), str(stage.partial))
    if exc.traceback:
        tb = stage.path / f"rank{exc.rank}-error.txt"
        try:
            tb.write_text(exc.traceback, encoding="utf-8")
            msg += f" (traceback: {stage.if_unfinished(tb)})"
        except OSError:
            pass
    return msg


def _run_torchrun_rank(args) -> None:
    """One rank of a torchrun job.  Rank 0 stages and writes the files (the others write none).

    No ``@record`` here: relaxtorch's own one line (rank 0) says what went wrong, and an error
    file would make torchrun print this rank's traceback too.  torchrun itself still prints its
    ``ChildFailedError`` summary after any rank exits non-zero (torch 2.13 always does)."""
    from .launch import run_torchrun
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    cfg = build_config(args, world=world)
    if rank != 0:
        run_torchrun(cfg, Path(args.out), resume=args.resume, progress=False)
        return
    with _prepare_out(args.out, args.resume, cfg, world) as stage:
        with stage.writing():
            report = run_torchrun(cfg, stage.path, resume=args.resume, progress=not args.no_progress)
            stage.commit()
    print_report(report, stage.out)
