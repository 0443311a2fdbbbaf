"""The ``relaxtorch`` command: the registry of jobs and the one ``main()``.

Each job is a module under :mod:`relaxtorch.jobs` with ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args)``; ``main`` parses the command line and runs
the job under the error policy of :mod:`relaxtorch.jobs._cli`.
"""
from __future__ import annotations

import importlib
import sys

from relaxtorch import __version__

from .jobs._cli import CLIError, Parser, execute  # noqa: F401 - CLIError: the jobs' user-error type

JOBS = {
    "formats": "relaxtorch.jobs.formats.cli",
    "tradeoff": "relaxtorch.jobs.tradeoff.cli",
    "hogwild": "relaxtorch.jobs.hogwild.cli",
    "dist": "relaxtorch.jobs.distributed.cli",
    "sample": "relaxtorch.jobs.sample.cli",
    "gibbs": "relaxtorch.jobs.gibbs.cli",
}


def build_parser(only: str | None = None) -> Parser:
    """The parser of every job (or of job ``only``, for ``python -m relaxtorch.jobs.<job>``)."""
    parser = Parser(prog="relaxtorch",
                    description="Relaxed-consistency machine learning: what each relaxation saves and what it costs.")
    parser.add_argument("--version", action="version", version=f"relaxtorch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in JOBS.items():
        if only is not None and name != only:
            continue
        job = importlib.import_module(module)
        p = sub.add_parser(name, help=job.HELP, description=job.DESCRIPTION)
        job.add_arguments(p)
        p.set_defaults(func=job.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``relaxtorch COMMAND ...``; returns the exit code (see :mod:`relaxtorch.jobs._cli`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    only = argv[0] if argv and argv[0] in JOBS else None  # build just the parser that is needed
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return execute(args.command, args.func, args)


if __name__ == "__main__":
    sys.exit(main())
