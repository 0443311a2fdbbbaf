"""Where a job's files go: ``--out`` checked before any work, written aside, swapped in at the end.

Every job (tradeoff, hogwild, dist) writes through one :class:`Staging`::

    with Staging(args.out, "tradeoff") as stage:   # CLIError now if --out cannot be used
        write files into stage.path ...
        stage.commit()                              # they become OUT's

* **Checked first** (:func:`check_out`): ``OUT`` can be created, is a folder, and a file
  can really be created, written and removed in it (root ignores permission bits, so
  ``os.access`` is not enough; a read-only mount or a full disk fails here).  A bad
  ``--out`` is a one-line error before any training.
* **Staged**: the job writes into a fresh hidden folder ``OUT/.relaxtorch-staging-PID-XXXX``.
  It lives inside ``OUT``, not beside it, so it is on OUT's filesystem even when OUT is
  a mount point, ``.`` or a symlink, and needs no write access to OUT's parent.
* **Swapped in** by :meth:`Staging.commit`: the previous run's outputs (the entries listed in
  ``OUT/.relaxtorch-JOB.json``, or, in a folder from before manifests, the names the
  job owns) move to a hidden ``.relaxtorch-old-*`` folder, the new ones are renamed in, the
  manifest is rewritten and the old folder removed; Ctrl-C waits until this is done.  Old and
  new outputs are never mixed, and files of the user's own in OUT are never touched.
* **Partial**: when the job ends with an exception (Ctrl-C, a failed run, a full disk), what it
  wrote becomes ``OUT/partial/`` (replacing an older one) and the rest of OUT stays the last
  complete run's; a line on stderr says so.  ``OUT/partial`` is removed by the next complete run.
  A job killed with SIGKILL leaves its staging folder behind (``dead_stagings``).
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path

from ._cli import CLIError, _say

PARTIAL = "partial"
MANIFEST = ".relaxtorch-{job}.json"  # one per job: two jobs sharing a folder each replace only their own
STAGING_PREFIX = ".relaxtorch-staging-"
OLD_PREFIX = ".relaxtorch-old-"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_out(out, option: str = "--out") -> Path:
    """``out`` as a folder this process can write (created if missing); CLIError naming ``option``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{option} {out}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CLIError(f"{option} {out}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise CLIError(f"{option} {out}: cannot create the folder ({_why(exc)})") from None
    probe = path / f".relaxtorch-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
            f.flush()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise CLIError(f"{option} {out}: not writable ({_why(exc)})") from None
    try:
        probe.unlink()
    except OSError as exc:
        raise CLIError(f"{option} {out}: cannot remove a file written there ({_why(exc)})") from None
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_stagings(out) -> list[Path]:
    """Staging folders in ``out`` whose process is gone (a job killed with SIGKILL), newest first."""
    found = []
    for p in Path(out).glob(f"{STAGING_PREFIX}*"):
        try:
            pid = int(p.name[len(STAGING_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if p.is_dir() and not _pid_alive(pid):
            found.append(p)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


@contextlib.contextmanager
def _sigint_deferred():
    """Ctrl-C waits until the block is done (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


class Staging:
    """A job's outputs, staged in ``OUT`` and swapped in at the end (see the module docstring).

    ``owns``: glob patterns of the names the job writes, replaced in a folder that has no
    manifest yet.  ``job``: the command's name, for the stderr line about partial files.
    """

    def __init__(self, out, job: str, owns: tuple[str, ...] = (), option: str = "--out"):
        self.out = check_out(out, option)
        self.job, self.owns, self.option = job, tuple(owns) + (PARTIAL,), option
        self.path = self.out / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.path.mkdir()
        except OSError as exc:
            raise CLIError(f"{option} {out}: cannot create a folder in it ({_why(exc)})") from None
        self.committed = False
        self.kept: Path | None = None

    @property
    def manifest(self) -> Path:
        """The list of the entries the last complete run of this job wrote."""
        return self.out / MANIFEST.format(job=self.job)

    @property
    def partial(self) -> Path:
        """Where the files go when the job does not finish."""
        return self.out / PARTIAL

    def final(self, path) -> Path:
        """Where ``path`` (inside the staging folder) is after :meth:`commit`."""
        return self.out / Path(path).relative_to(self.path)

    def if_unfinished(self, path) -> Path:
        """Where ``path`` (inside the staging folder) is when the job does not finish."""
        return self.partial / Path(path).relative_to(self.path)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, typ, exc, tb) -> None:
        if self.committed:
            return
        if typ is not None and any(self.path.iterdir()):
            self.keep_partial()
        else:
            shutil.rmtree(self.path, ignore_errors=True)

    def _previous(self) -> list[str]:
        """Names of the entries of OUT that belong to the previous run of this job."""
        try:
            listed = json.loads(self.manifest.read_text(encoding="utf-8"))["entries"]
            names = [n for n in listed if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")]
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        names += [p.name for p in self.out.iterdir()
                  if any(fnmatch.fnmatch(p.name, pat) for pat in self.owns)]
        return [n for n in dict.fromkeys(names) if os.path.lexists(self.out / n)
                and not n.startswith((STAGING_PREFIX, OLD_PREFIX, ".relaxtorch-"))]

    def commit(self) -> Path:
        """Replace the previous run's outputs in OUT by the staged ones; returns OUT."""
        new = sorted(p.name for p in self.path.iterdir())
        with _sigint_deferred():
            old = self.out / f"{OLD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            old.mkdir()
            for name in dict.fromkeys(self._previous() + [n for n in new if os.path.lexists(self.out / n)]):
                os.replace(self.out / name, old / name)
            for name in new:
                os.replace(self.path / name, self.out / name)
            from .._files import atomic_write
            atomic_write(self.manifest, json.dumps({"job": self.job, "entries": new}) + "\n")
            self.path.rmdir()
            self.committed = True
        shutil.rmtree(old, ignore_errors=True)
        for stale in dead_stagings(self.out):  # superseded by this complete run
            shutil.rmtree(stale, ignore_errors=True)
        return self.out

    def write_error(self, exc: OSError) -> CLIError | None:
        """The user error for a failed write of a file of this job (a full disk, a folder gone
        read-only), naming OUT, the file and the reason; None when ``exc`` is about another file."""
        name = getattr(exc, "filename", None)
        try:
            rel = Path(name).resolve().relative_to(self.path.resolve()) if name else None
        except (ValueError, OSError):
            return None
        if rel is None:
            return None
        return CLIError(f"{self.option} {self.out}: cannot write {rel} ({_why(exc)})")

    @contextlib.contextmanager
    def writing(self):
        """Inside: a failed write of one of this job's files becomes its user error (``write_error``)."""
        try:
            yield self
        except OSError as exc:
            error = self.write_error(exc)
            if error is None:
                raise
            raise error from None

    def keep_partial(self) -> Path:
        """The staged files become ``OUT/partial`` (replacing an older one); returns that path."""
        with _sigint_deferred():
            if os.path.lexists(self.partial):
                trash = self.out / f"{OLD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
                os.replace(self.partial, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(self.path, self.partial)
            self.kept = self.partial
        _say(f"relaxtorch {self.job}", f"the unfinished run's files are in {self.partial} "
                                       f"(the rest of {self.out} is the last complete run's)")
        sys.stderr.flush()
        return self.partial


