"""The repository's shape: the library never imports a job; no folder that tools skip."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "relaxtorch"
JOB_SIDE = {PKG / "cli.py"} | set((PKG / "jobs").rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", sorted(set(PKG.rglob("*.py")) - JOB_SIDE), ids=lambda p: str(p.relative_to(PKG)))
def test_library_never_imports_a_job(path):
    bad = sorted(n for n in _imports(path) if n.startswith(("relaxtorch.jobs", "relaxtorch.cli")))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_import_resolution_is_right():
    # the checker itself: jobs/tradeoff/cli.py's `from .._cli import CLIError` is relaxtorch.jobs._cli
    assert "relaxtorch.jobs._cli" in _imports(PKG / "jobs" / "tradeoff" / "cli.py")
    assert "relaxtorch._files" in _imports(PKG / "jobs" / "tradeoff" / "config.py")


def test_no_folder_that_tools_skip():
    skipped = [p for top in ("src", "tests", "benchmarks", "examples") for p in (ROOT / top).rglob("*")
               if p.is_dir() and p.name in ("dist", "build")]
    assert not skipped, f"pytest, linters and packaging tools skip these folders: {skipped}"


def test_guard_finds_an_uncollected_file():
    from tests.conftest import TESTS, missing_test_files
    everything = {p.resolve() for p in TESTS.rglob("test_*.py")}
    assert missing_test_files(everything) == []
    left_out = Path(__file__).resolve()
    assert missing_test_files(everything - {left_out}) == [left_out]


def test_subpackages_are_attributes_of_the_package():
    import subprocess
    import sys
    code = "import relaxtorch as rt; rt.comm.DataParallel; rt.parallel.hogwild; rt.data.load_dataset; rt.optim.SWALP"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # a fresh interpreter: no prior imports


def test_cached_kernels_use_the_read_only_safe_njit():
    """``@njit(cache=True)`` from numba itself fails to import on a read-only install (probe F23):
    every module that caches kernels takes relaxtorch._numba.njit."""
    import re
    cached = re.compile(r"^\s*@njit\([^)]*cache=True", re.M)
    bad = [str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")
           if cached.search(p.read_text(encoding="utf-8")) and "relaxtorch._numba.njit" not in _imports(p)]
    assert not bad, f"these modules cache kernels with numba's own njit: {bad}"
