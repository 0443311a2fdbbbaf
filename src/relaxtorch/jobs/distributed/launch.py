"""Start a job's ranks: N local processes watched by this one, or one rank of a ``torchrun`` job.

``launch_local`` is the one-machine shortcut: it spawns ``cfg.nproc`` ranks
(``torch.multiprocessing`` spawn; gloo on CPU, NCCL on GPU) that meet through a
``TCPStore`` this process holds on 127.0.0.1 (a free port, no race for it), and
watches them.  Every collective is bounded by ``init_process_group(timeout=)``.
When a rank fails the launcher stops the others and raises
:class:`RankFailure` naming the rank that caused it, not a rank that merely
timed out waiting for it:

* a rank that raised a non-communication error, or exited without writing an
  error (killed, ``os._exit``), is the cause;
* otherwise a rank still alive after the others timed out is the cause (hung);
* a job where no rank progresses for ``2 * timeout + 60`` s is stopped too.

``run_torchrun`` is the body of ``torchrun --nproc-per-node N -m relaxtorch.jobs.distributed``:
it reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT from the environment.  On one machine
use the loopback rendezvous::

    torchrun --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:29500 -m relaxtorch.jobs.distributed

(on several, ``--nnodes K --rdzv-endpoint FIRST_NODE:29500``).  Unlike ``launch_local``,
torchrun (torch 2.13) listens on every interface whatever endpoint it is given, and its
c10d rendezvous keeps pickled state in that store: see ``__main__.py``.

Between the ranks only tensors travel (``wire.py`` for the checkpoints): nothing a rank
receives is unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..._files import atomic_write
from .config import DistConfig
from ...comm.loopback import HOST, loopback_store, pin_gloo_to_loopback

STARTUP_S = 300.0  # how long the ranks may take to start (imports on a busy machine)
SETTLE_S = 3.0  # after a first failure, how long the others get to fail too (and say why)
_COMM_MARKERS = ("gloo", "nccl", "connection reset", "connection closed", "connection refused", "broken pipe",
                 "timed out", "timeout", "socket", "tcpstore", "recv", "send operation")


class RankFailure(RuntimeError):
    """A rank of a job failed; ``str()`` is ``rank K failed: <reason>``."""

    def __init__(self, rank: int, reason: str, traceback_text: str | None = None):
        super().__init__(f"rank {rank} failed: {reason}")
        self.rank, self.reason, self.traceback = rank, reason, traceback_text


def is_comm_error(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a consequence of another rank's failure (a broken or timed-out collective)."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _COMM_MARKERS)


def resolve_device(name: str, local_rank: int, local_world: int) -> torch.device:
    """This rank's device: one GPU per local rank (NCCL) or the CPU (gloo); ``auto`` takes
    the GPUs when there is one for every local rank."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "cuda" or (name == "auto" and gpus >= local_world):
        if gpus < local_world:
            raise ValueError(f"Invalid device: 'cuda' ({local_world} local ranks need as many GPUs; "
                             f"torch sees {gpus})")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _threads(cfg: DistConfig, local_world: int) -> int:
    return cfg.threads or max(1, (os.cpu_count() or 1) // max(1, local_world))


def _echo(exc: BaseException, rank: int) -> bool:
    """Whether ``exc`` repeats another rank's failure: a checkpoint rank 0 read and found wrong
    is raised on every rank, and only rank 0 is to blame for it."""
    from .checkpoint import CheckpointError
    return isinstance(exc, CheckpointError) and rank != 0


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # a full disk: say so, with the file
        return f"{exc.strerror}: {exc.filename}"
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else ""


def _write_error(err_dir: str, rank: int, exc: BaseException | None, kind: str) -> None:
    info = {"rank": rank, "time": time.time(), "kind": kind,
            "type": type(exc).__name__ if exc is not None else None,
            "message": _message(exc) if exc is not None else "",
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) if exc else ""}
    atomic_write(os.path.join(err_dir, f"rank{rank}.json"), json.dumps(info))


def _child(rank, world, port, cfg, out, resume, progress, factory, err_dir, beats, steps):
    """One local rank (the target of a spawned process)."""
    code = 0
    try:
        beats[rank] = time.time()
        os.environ["LOCAL_WORLD_SIZE"] = str(world)  # as torchrun sets it: every rank is local here
        torch.set_num_threads(_threads(cfg, world))
        device = resolve_device(cfg.device, rank, world)
        pin_gloo_to_loopback()
        store = dist.TCPStore(HOST, port, world, is_master=False, timeout=timedelta(seconds=STARTUP_S))
        _startup_barrier(store, world)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank,
                                world_size=world, timeout=timedelta(seconds=cfg.timeout))
        beats[rank], steps[rank] = time.time(), 0

        def heartbeat(step: int) -> None:
            beats[rank] = time.time()
            steps[rank] = step

        from .train import RankContext, run_job
        run_job(cfg, out, RankContext(rank, world, device), resume=resume, progress=progress and rank == 0,
                factory=factory, heartbeat=heartbeat)
        dist.destroy_process_group()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C (or the launcher's) must not cut this short
        _write_error(err_dir, rank, None, "interrupted")
        code = 130
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the launcher
        _write_error(err_dir, rank, exc, "comm" if is_comm_error(exc) or _echo(exc, rank) else "error")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Every outcome leaves through os._exit: a broken process group can hang the interpreter's
    # shutdown, and even a clean one can abort in C++ destructors at exit ("terminate called
    # without an active exception", SIGABRT), which would fail a finished job.
    os._exit(code)


def _startup_barrier(store, world: int) -> None:
    """Wait (up to ``STARTUP_S``) until every rank has started, so that slow imports on a busy
    machine do not eat into the collectives' ``timeout``."""
    store.add("relaxtorch/ready", 1)
    deadline = time.monotonic() + STARTUP_S
    while store.add("relaxtorch/ready", 0) < world:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every rank started within {STARTUP_S:g} s")
        time.sleep(0.02)


def _read_errors(err_dir: str) -> dict[int, dict]:
    out = {}
    for p in Path(err_dir).glob("rank*.json"):
        try:
            info = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        out[info["rank"]] = info
    return out


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code} without reporting an error"


def _blame(procs, errors: dict, steps, beats, fail_time: dict) -> RankFailure:
    """The failure that caused the others (see the module docstring)."""
    now = time.time()
    primary = []
    for r, p in enumerate(procs):
        e = errors.get(r)
        if e is not None and e["kind"] == "error":
            primary.append((e["time"], r, f"{e['type']}: {e['message']}", e["traceback"]))
        elif e is None and p.exitcode not in (None, 0):
            primary.append((fail_time.get(r, now), r, _exit_reason(p.exitcode), None))
    if primary:
        _, r, reason, tb = min(primary)
        return RankFailure(r, reason, tb)
    alive = [r for r, p in enumerate(procs) if p.exitcode is None]
    if alive:
        r = min(alive, key=lambda r: (steps[r], beats[r], r))
        return RankFailure(r, f"{_stuck(steps[r])} (no progress for {now - beats[r]:.0f} s; "
                              "the other ranks timed out waiting for it)")
    comm = sorted((e["time"], r, e) for r, e in errors.items() if e["kind"] == "comm")
    if comm:
        _, r, e = comm[0]
        return RankFailure(r, f"{e['type']}: {e['message']}", e["traceback"])
    r = next(r for r, p in enumerate(procs) if p.exitcode not in (None, 0))
    return RankFailure(r, _exit_reason(procs[r].exitcode))


def _stuck(step: int) -> str:
    return "stopped responding before training" if step <= 0 else f"stopped responding after step {step}"


def _stop(procs, grace: float = 2.0) -> None:
    procs = [p for p in procs if p.pid is not None]  # started ones
    for p in procs:
        if p.exitcode is None:
            p.terminate()
    deadline = time.time() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.time()))
    for p in procs:
        if p.exitcode is None:
            p.kill()
            p.join(5)


def _watch(procs, err_dir: str, beats, steps, timeout: float) -> None:
    fail_time: dict[int, float] = {}
    first = None
    while True:
        now = time.time()
        codes = [p.exitcode for p in procs]
        if all(c == 0 for c in codes):
            return
        for r, c in enumerate(codes):
            if c not in (None, 0) and r not in fail_time:
                fail_time[r] = now
        if fail_time and first is None:
            first = now
        if first is not None and (all(c is not None for c in codes) or now - first > SETTLE_S):
            errors = _read_errors(err_dir)
            if any(e["kind"] == "interrupted" for e in errors.values()):
                raise KeyboardInterrupt
            raise _blame(procs, errors, steps, beats, fail_time)
        limit = 2 * timeout + 60 if min(steps) >= 0 else STARTUP_S + 10
        if first is None and now - max(beats) > limit:
            alive = [r for r, c in enumerate(codes) if c is None]
            r = min(alive, key=lambda r: (steps[r], beats[r], r))
            raise RankFailure(r, f"{_stuck(steps[r])} (no rank progressed for {now - max(beats):.0f} s)")
        time.sleep(0.05)


def launch_local(cfg: DistConfig, out, *, resume: bool = False, progress: bool = True, factory=None) -> dict:
    """Run the job on ``cfg.nproc`` local ranks; returns the report rank 0 wrote to ``out``.

    Raises :class:`RankFailure` when a rank fails, KeyboardInterrupt on Ctrl-C
    (the ranks are stopped either way; finished runs and checkpoints stay in ``out``, which
    ``relaxtorch dist`` makes a staging folder: see ``cli._prepare_out``).
    """
    import torch.multiprocessing as mp
    n = cfg.nproc
    ctx = mp.get_context("spawn")
    store = loopback_store(n + 1, cfg.timeout)
    err_dir = tempfile.mkdtemp(prefix="relaxtorch-dist-")
    beats = ctx.Array("d", [time.time()] * n, lock=False)
    steps = ctx.Array("q", [-1] * n, lock=False)  # -1: not started; then the steps done in the current run
    procs = [ctx.Process(target=_child, name=f"relaxtorch-dist-rank{r}", daemon=True,
                         args=(r, n, store.port, cfg, str(out), resume, progress, factory, err_dir, beats, steps))
             for r in range(n)]
    previous = signal.getsignal(signal.SIGTERM)
    in_main = _main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _sigterm)
    try:
        for p in procs:
            p.start()
        _watch(procs, err_dir, beats, steps, cfg.timeout)
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reached the ranks too: let them end cleanly; any still running after
        # a moment did not get it (a signal to this process only) and is asked the same way.
        _join_all(procs, 1.0)
        for p in procs:
            if p.exitcode is None and p.pid is not None:
                try:
                    os.kill(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        _join_all(procs, 3.0)
        raise
    finally:
        _stop(procs)
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(err_dir, ignore_errors=True)
        del store
    with open(Path(out) / "report.json", encoding="utf-8") as f:
        return json.load(f)


def _join_all(procs, seconds: float) -> None:
    deadline = time.time() + seconds
    for p in (p for p in procs if p.pid is not None):
        p.join(max(0.0, deadline - time.time()))


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def run_torchrun(cfg: DistConfig, out, *, resume: bool = False, progress: bool = True, factory=None) -> dict | None:
    """One rank of a ``torchrun`` job (environment ``env://`` rendezvous); rank 0 returns the report."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(_threads(cfg, local_world))
    device = resolve_device(cfg.device, local_rank, local_world)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://", rank=rank,
                            world_size=world, timeout=timedelta(seconds=cfg.timeout))
    try:
        from .train import RankContext, run_job
        return run_job(cfg, out, RankContext(rank, world, device), resume=resume, progress=progress and rank == 0,
                       factory=factory)
    finally:
        dist.destroy_process_group()
