"""``python -m relaxtorch.dist``: one rank of a ``torchrun`` job, or the one-machine shortcut.

Under torchrun (RANK and WORLD_SIZE set)::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:29500 -m relaxtorch.dist --config job.toml

every rank runs the job and rank 0 prints the table and writes the report.
Without them it does what ``relaxtorch dist`` does.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from .._errors import CLIError
    from .cli import add_arguments, build_config, print_report, run
    parser = argparse.ArgumentParser(prog="python -m relaxtorch.dist",
                                     description="relaxtorch dist (see `relaxtorch dist --help`)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", 0))
    try:
        if not torchrun:
            run(args)
            return 0
        from pathlib import Path

        from torch.distributed.elastic.multiprocessing.errors import record

        from .cli import _prepare_out
        from .launch import run_torchrun
        cfg = build_config(args, world=int(os.environ["WORLD_SIZE"]))
        out = _prepare_out(args.out, args.resume) if rank == 0 else Path(args.out)
        report = record(run_torchrun)(cfg, out, resume=args.resume, progress=not args.no_progress)
        if rank == 0:
            print_report(report, out)
    except CLIError as exc:
        if rank == 0:
            print(f"relaxtorch dist: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if rank == 0:
            print("relaxtorch dist: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
