"""Launch an N-rank torch.distributed world (gloo on 127.0.0.1) for tests, never hanging.

Two ways, both running a picklable *module-level* function ``fn(rank, world_size, *args)``
on every rank and returning the per-rank results as a list (rank order):

- ``run_world(fn, n, *args, timeout=60)``: start a world, run once, tear it down;
- ``World(n)``: a pool of ranks kept alive between runs; ``world.run(fn, *args)``;
  ``world.close()``;
- ``shared_world(n)``: one ``World(n)`` per size for the whole test session (closed at
  exit), so test modules pay the process start-up (seconds) once.

Every wait is bounded: the process group has ``timeout`` (so a collective waiting on a
dead peer fails), collecting results has a deadline, and ``close`` joins with a timeout,
then terminates, then kills.  A rank that raises, dies or hangs makes ``run`` raise an
``AssertionError`` naming it, with its traceback; the pool then restarts on the next run.
Ranks use ``spawn`` (safe with threads), one intra-op thread each, the free port found by
binding a socket to port 0, and results travel pickled by value.
"""
from __future__ import annotations

import atexit
import datetime
import multiprocessing as mp
import os
import pickle
import queue
import time
import traceback

DEFAULT_TIMEOUT = 60.0


def _rank_main(rank: int, size: int, port: int, timeout: float, tasks, results) -> None:
    import torch
    import torch.distributed as dist

    from relaxtorch.comm.loopback import HOST, pin_gloo_to_loopback

    torch.set_num_threads(1)
    try:
        pin_gloo_to_loopback()
        store = dist.TCPStore(HOST, port, size, is_master=False, timeout=datetime.timedelta(seconds=timeout))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=size,
                                timeout=datetime.timedelta(seconds=timeout))
    except Exception:  # noqa: BLE001 - reported to the parent
        results.put((rank, -1, False, traceback.format_exc()))
        return
    results.put((rank, -1, True, None))
    try:
        while True:
            task = tasks.get()
            if task is None:
                break
            run_id, fn, args, kwargs = task
            try:
                value = fn(rank, size, *args, **kwargs)
                results.put((rank, run_id, True, pickle.dumps(value)))
            except BaseException:  # noqa: BLE001 - reported to the parent
                results.put((rank, run_id, False, traceback.format_exc()))
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass
        results.close()
        results.join_thread()  # results are flushed; skip the slow interpreter teardown
        os._exit(0)


class World:
    """``size`` gloo ranks on 127.0.0.1, started on the first ``run`` and kept until ``close``."""

    def __init__(self, size: int, *, timeout: float = DEFAULT_TIMEOUT):
        if size < 1:
            raise ValueError(f"Invalid size: {size!r} (need at least one rank)")
        self.size = size
        self.timeout = float(timeout)
        self._procs: list = []
        self._tasks: list = []
        self._results = None
        self._store = None
        self._run_id = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def _start(self) -> None:
        from relaxtorch.comm.loopback import loopback_store

        ctx = mp.get_context("spawn")
        self._store = loopback_store(self.size, self.timeout + 30.0)  # 127.0.0.1 only; lives with the world
        port = self._store.port
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(self.size)]
        self._procs = [ctx.Process(target=_rank_main, daemon=True,
                                   args=(r, self.size, port, self.timeout, self._tasks[r], self._results))
                       for r in range(self.size)]
        for p in self._procs:
            p.start()
        try:
            self._collect(-1, self.timeout + 30.0, "start")
        except BaseException:
            self.close()
            raise

    def close(self, *, graceful: bool = True) -> None:
        """Ask every rank to stop; terminate (then kill) any that does not within a few seconds."""
        for q in self._tasks:
            try:
                q.put(None)
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + (5.0 if graceful else 0.5)
        for p in self._procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self._procs:
            if p.is_alive():
                p.terminate()
                p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join(5.0)
        for q in [*self._tasks, self._results]:
            if q is not None:
                q.close()
                q.cancel_join_thread()
        self._procs, self._tasks, self._results = [], [], None
        self._store = None

    def __enter__(self) -> "World":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running --------------------------------------------------------------------------------
    def run(self, fn, *args, timeout: float | None = None, **kwargs) -> list:
        """Run ``fn(rank, size, *args, **kwargs)`` on every rank; return the results by rank."""
        if not self._procs:
            self._start()
        self._run_id += 1
        for q in self._tasks:
            q.put((self._run_id, fn, args, kwargs))
        try:
            return self._collect(self._run_id, self.timeout if timeout is None else timeout, fn.__name__)
        except BaseException:
            self.close(graceful=False)  # the ranks may be stuck in a collective: start afresh next time
            raise

    def _collect(self, run_id: int, timeout: float, what: str) -> list:
        deadline = time.monotonic() + timeout
        got: dict[int, object] = {}
        errors: dict[int, str] = {}
        while len(got) + len(errors) < self.size:
            try:
                rank, rid, ok, value = self._results.get(timeout=0.2)
            except queue.Empty:
                dead = [r for r, p in enumerate(self._procs)
                        if not p.is_alive() and r not in got and r not in errors]
                if dead:
                    codes = {r: self._procs[r].exitcode for r in dead}
                    raise AssertionError(f"{what}: rank(s) {dead} died (exit codes {codes}); "
                                         f"errors from others: {errors or 'none'}")
                if time.monotonic() > deadline:
                    missing = sorted(set(range(self.size)) - set(got) - set(errors))
                    if errors:
                        break
                    raise AssertionError(f"{what}: rank(s) {missing} did not finish within {timeout:g} s")
                continue
            if rid != run_id:
                continue  # a late answer from an earlier, failed run
            if ok:
                got[rank] = value if run_id < 0 else pickle.loads(value)
            else:
                errors[rank] = value
                if len(errors) == 1:  # the others may now wait on this rank until the gloo timeout
                    deadline = min(deadline, time.monotonic() + 3.0)
        if errors:
            missing = sorted(set(range(self.size)) - set(got) - set(errors))
            stuck = f" (rank(s) {missing} still waiting, stopped)" if missing else ""
            detail = "".join(f"\n--- rank {r} ---\n{tb}" for r, tb in sorted(errors.items()))
            raise AssertionError(f"{what} failed on rank(s) {sorted(errors)}{stuck}:{detail}")
        return [got[r] for r in range(self.size)]


def run_world(fn, size: int, *args, timeout: float = DEFAULT_TIMEOUT, **kwargs) -> list:
    """Start a ``size``-rank world, run ``fn(rank, size, *args, **kwargs)`` once, tear it down."""
    with World(size, timeout=timeout) as world:
        return world.run(fn, *args, **kwargs)


_SHARED: dict[int, World] = {}


def shared_world(size: int) -> World:
    """The session's ``World(size)`` (created on first use, closed when the interpreter exits)."""
    if size not in _SHARED:
        if not _SHARED:
            atexit.register(_close_shared)
        _SHARED[size] = World(size)
    return _SHARED[size]


def _close_shared() -> None:
    for world in _SHARED.values():
        world.close()
    _SHARED.clear()
