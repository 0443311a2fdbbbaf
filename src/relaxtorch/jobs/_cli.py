"""The jobs' one error policy, shared by ``relaxtorch`` and ``python -m relaxtorch.jobs.<job>``.

Exit codes: 0 done; 2 a user error (``CLIError``, a bad option or config), printed as
one line on stderr; 1 a run that failed (``RunFailed``: a worker or rank died) or an
internal error, one line too, with the traceback saved to a file for a bug report;
130 Ctrl-C; 141 when the reader of stdout went away (``relaxtorch formats | head``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


class RunFailed(Exception):
    """A run that started and failed (a worker or rank died): one line on stderr, exit code 1."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors (``--steps abc``) as one line and exit 2, like every other user error."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _quiet_rank() -> bool:
    """Under torchrun only rank 0 speaks: every rank validates the same options and fails alike."""
    return "WORLD_SIZE" in os.environ and os.environ.get("RANK", "0") != "0"


def _say(prefix: str, message: str) -> None:
    if not _quiet_rank():
        print(f"{prefix}: {message}", file=sys.stderr)


def _save_traceback() -> str | None:
    try:
        fd, path = tempfile.mkstemp(prefix="relaxtorch-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(traceback.format_exc())
        return path
    except OSError:
        return None


def execute(command: str, func, args) -> int:
    """Run a job's handler under the error policy; returns the exit code."""
    prog = f"relaxtorch {command}"
    try:
        func(args)
        sys.stdout.flush()
    except CLIError as exc:
        _say(prog, f"error: {exc}")
        return 2
    except RunFailed as exc:
        _say(prog, str(exc))
        return 1
    except KeyboardInterrupt:
        _say(prog, "interrupted")
        return 130
    except BrokenPipeError:
        # the reader closed the pipe: stop quietly, and keep Python's exit-time flush from raising again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        if os.environ.get("RELAXTORCH_TRACEBACK"):
            raise
        path = _save_traceback()
        where = f"; traceback in {path}" if path else ""
        _say(prog, f"internal error: {type(exc).__name__}: {exc}{where} (please report it)")
        return 1
    return 0
