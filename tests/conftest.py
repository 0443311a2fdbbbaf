"""Suite-wide checks: every ``tests/**/test_*.py`` file must be collected.

pytest silently skips folders it is configured (or defaults) to ignore, ``dist`` and
``build`` among them; a sixth of this suite once never ran that way.  When the whole
suite is collected, a test file that produced no collection report fails the run.
"""
from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
_collected: set[str] = set()  # node ids of collected modules, relative to the rootdir


def pytest_collectreport(report):
    if report.nodeid.endswith(".py"):  # a module, collected or skipped as a whole (importorskip)
        _collected.add(report.nodeid)


def _whole_suite(config) -> bool:
    """True when the run asked for all of tests/ (or the repository), unfiltered by -k or -m."""
    if config.getoption("keyword") or config.getoption("markexpr") or config.getoption("deselect"):
        return False
    roots = [Path(str(a).split("::", 1)[0]).resolve() for a in config.args] or [Path.cwd().resolve()]
    return any(r == TESTS or r in TESTS.parents for r in roots)


def missing_test_files(collected: set[Path]) -> list[Path]:
    """The test files under tests/ that pytest did not collect."""
    return sorted(p for p in TESTS.rglob("test_*.py") if p.resolve() not in collected)


def pytest_collection_finish(session):
    if not _whole_suite(session.config):
        return
    root = session.config.rootpath
    missing = missing_test_files({(root / p).resolve() for p in _collected})
    if missing:
        names = ", ".join(str(p.relative_to(TESTS.parent)) for p in missing)
        raise pytest.UsageError(f"test files not collected (an ignored folder name such as dist/ or build/?): "
                                f"{names}")


def pytest_configure(config):
    """``RELAXTORCH_TEST_THREADS=n``: run the suite with n threads in torch and numba.

    Opt-in, to find results that depend on the thread count (reduction order, BLAS
    blocking).  The variable is also exported as OMP/MKL/NUMBA_NUM_THREADS so that the
    processes a test starts (gloo worlds, Hogwild! workers, the CLIs) inherit it.
    """
    import os

    n = os.environ.get("RELAXTORCH_TEST_THREADS")
    if not n:
        return
    n = int(n)
    if n < 1:
        raise pytest.UsageError(f"Invalid RELAXTORCH_TEST_THREADS: {n!r} (must be >= 1)")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
