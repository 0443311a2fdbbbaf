"""``hogwild()``: run N lock-free workers on one shared model and measure the run.

The parent process prepares the shared tensors, compiles the kernel once
(numba caches it on disk; the workers load it), starts the workers, releases
them together, and then only watches: it polls the shared counters for the
progress bar, copies the model now and then for the loss-vs-time curve, writes
periodic checkpoints, and checks every worker's status and exit code.

Every wait is bounded.  On a worker failure, a timeout or Ctrl-C it raises the
stop flag (workers stop within one chunk, a few milliseconds), gives them
``stop_grace`` seconds to exit, then sends SIGTERM and finally SIGKILL, so no
worker outlives the call.  The model is then quiescent; it is saved (if it is
finite, else the last finite snapshot) to the checkpoint, and the error names
the worker and the reason.  ``workers=1`` runs the same code path: the
sequential baseline.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from . import _kernels as K
from . import _replica as R
from . import _worker as W
from .problems import Problem
from .shared import code_range, save_checkpoint
from .signature import parse_signature

ORDERS = ("blocks", "shuffle", "sequential", "rr", "so", "flipflop", "grab", "pair", "recursive", "prob", "herding")
BALANCING = ("grab", "pair", "recursive", "prob", "herding")  # need per-example gradients: torch problems only


class WorkerError(RuntimeError):
    """A worker failed (raised, was killed, exited early) or the run timed out.

    ``worker`` (index, or None for a timeout), ``pid``, ``reason``, and ``result``:
    the partial :class:`RunResult` (its ``checkpoint`` holds the last consistent model).
    """

    def __init__(self, message: str, *, worker=None, pid=None, reason: str = "", result=None):
        super().__init__(message)
        self.worker, self.pid, self.reason, self.result = worker, pid, reason, result


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``result`` is the partial :class:`RunResult` (model saved if asked)."""

    def __init__(self, result):
        super().__init__("run interrupted")
        self.result = result


@dataclass
class RunResult:
    """What one run did and cost; ``to_dict()`` is JSON-ready."""

    problem: str
    signature: str
    workers: int
    epochs: int
    lr: float
    order: str
    updates: int
    examples: int
    seconds: float
    updates_per_s: float
    initial_loss: float
    final_loss: float
    curve: list = field(default_factory=list)  # (seconds, updates, loss)
    staleness: dict = field(default_factory=dict)
    writes: dict = field(default_factory=dict)
    model_format: str = "float32"
    data_format: str = "float32"
    model_bytes: int = 0
    saturated: float | None = None
    per_worker: list = field(default_factory=list)
    pids: list = field(default_factory=list)
    start_method: str = ""
    checkpoint: str | None = None
    failure: str | None = None
    interrupted: bool = False
    replication: str = "shared"
    sync_every: int | None = None
    sync: dict = field(default_factory=dict)  # per-worker: scheme, merge, syncs, blocks, seconds, view lag
    cpu_seconds: list = field(default_factory=list)  # CPU time of each worker's epochs
    spans: list = field(default_factory=list)  # (start, end) of each worker's epochs, seconds after the start signal

    def to_dict(self) -> dict:
        return asdict(self)

    def time_to_loss(self, target: float) -> float | None:
        """Wall-clock seconds until the loss curve first reaches ``target`` (linear
        interpolation between snapshots), or None if it never does.

        >>> RunResult("p", "D32M32G32C32", 1, 1, 0.1, "blocks", 4, 4, 2.0, 2.0, 1.0, 0.5,
        ...           curve=[(0.0, 0, 1.0), (1.0, 2, 0.7), (2.0, 4, 0.5)]).time_to_loss(0.6)
        1.5
        """
        prev = None
        for t, _, loss in self.curve:
            if loss <= target:
                if prev is None or prev[1] == loss:
                    return float(t)
                t0, l0 = prev
                return float(t0 + (t - t0) * (l0 - target) / (l0 - loss))
            prev = (t, loss)
        return None


def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"Invalid {name}: {value!r} (must be an int >= {lo})")


def _check_seconds(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be a positive number of seconds)")


def default_start_method() -> str:
    """forkserver on Linux (fast, safe: workers fork from a clean server), spawn elsewhere."""
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


@contextlib.contextmanager
def _sigint_deferred():
    """Ignore further Ctrl-C while the workers are being stopped (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _staleness(ctl: np.ndarray, n: int) -> dict:
    rows = ctl[: n * K.STRIDE].reshape(n, K.STRIDE)
    samples = int(rows[:, K.STALE_N].sum())
    hist = rows[:, K.HIST:K.HIST + K.NBUCKETS].sum(axis=0)
    out = {"samples": samples, "mean": float(rows[:, K.STALE_SUM].sum()) / samples if samples else 0.0,
           "max": int(rows[:, K.STALE_MAX].max()) if n else 0}
    cum = np.cumsum(hist)
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        b = int(np.searchsorted(cum, q * samples)) if samples else 0
        out[name] = 0 if b == 0 else 2**b - 1  # upper end of bucket b = [2**(b-1), 2**b)
    out["histogram"] = hist.tolist()
    return out


class _Run:
    def __init__(self, problem, prepared, n, run, method, progress, desc):
        self.problem, self.prepared, self.n, self.run = problem, prepared, n, run
        self.method = method
        self.ctl_t = torch.zeros((n + 1) * K.STRIDE, dtype=torch.int64).share_memory_()
        self.err_t = torch.zeros((n, W.ERR_BYTES), dtype=torch.uint8).share_memory_()
        self.ctl, self.err = self.ctl_t.numpy(), self.err_t.numpy()
        self.glob = n * K.STRIDE
        self.procs = []
        self.failure = None  # (worker, pid, reason)
        self.interrupted = False
        self.t_go = None
        self.t_end = None
        self.snaps = []  # (seconds, updates, raw model)
        self.progress, self.desc = progress, desc
        self.last_checkpoint = 0.0

    # -- process management --------------------------------------------------------
    def start(self):
        ctx = torch.multiprocessing.get_context(self.method)
        if self.method == "forkserver":
            ctx.set_forkserver_preload(["relaxtorch.parallel._preload"])
        for wid in range(self.n):
            p = ctx.Process(target=W.worker_main, name=f"hogwild-worker-{wid}", daemon=True,
                            args=(wid, self.n, self.prepared.spec, self.prepared.tensors, self.ctl_t,
                                  self.err_t, self.run))
            p.start()
            self.procs.append(p)

    def status(self, wid):
        return int(self.ctl[wid * K.STRIDE + K.STATUS])

    def check(self) -> bool:
        """Record the first failed worker; True when one failed."""
        for wid, p in enumerate(self.procs):
            st, code = self.status(wid), p.exitcode
            if st == W.FAILED:
                raw = bytes(self.err[wid]).split(b"\0", 1)[0].decode("utf-8", "replace")
                reason = raw or "failed without a message"
            elif code is not None and st != W.DONE:
                if code < 0:
                    try:
                        reason = f"killed by signal {signal.Signals(-code).name}"
                    except ValueError:
                        reason = f"killed by signal {-code}"
                else:
                    reason = f"exited with code {code} before finishing"
            else:
                continue
            self.failure = (wid, p.pid, reason)
            return True
        return False

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while not all(self.status(w) >= W.READY for w in range(self.n)):
            if self.check():
                return False
            if time.monotonic() > deadline:
                self.failure = (None, None, f"workers not ready within {timeout:g} s (start-up)")
                return False
            time.sleep(0.005)
        return True

    def go(self):
        self.snapshot(0.0, 0)
        self.t_go = time.monotonic_ns()
        self.ctl[self.glob + K.GO] = 1

    def updates(self) -> int:
        return int(self.ctl[: self.n * K.STRIDE].reshape(self.n, K.STRIDE)[:, K.UPDATES].sum())

    def elapsed(self) -> float:
        return (time.monotonic_ns() - self.t_go) / 1e9

    def snapshot(self, t, updates):
        self.snaps.append((t, updates, self.prepared.model_raw()))

    def monitor(self, timeout, curve_points, checkpoint, checkpoint_every):
        total_updates = self._expected_updates()
        marks = [total_updates * (k + 1) / (curve_points + 1) for k in range(curve_points)]
        from tqdm import tqdm
        bar = tqdm(total=total_updates, desc=self.desc, unit="upd", unit_scale=True, leave=False,
                   disable=not self.progress, mininterval=0.25, file=sys.stderr)
        shown = 0
        try:
            while True:
                time.sleep(0.005)
                if self.check():
                    return
                upd = self.updates()
                t = self.elapsed()
                if upd > shown:
                    bar.update(upd - shown)
                    shown = upd
                while marks and upd >= marks[0]:
                    marks.pop(0)
                    self.snapshot(t, upd)
                if all(self.status(w) == W.DONE for w in range(self.n)):
                    ends = [int(self.ctl[w * K.STRIDE + K.T_END]) for w in range(self.n)]
                    self.t_end = max(ends) if all(ends) else time.monotonic_ns()
                    return
                if timeout is not None and t > timeout:
                    self.failure = (None, None, f"timed out after {timeout:g} s")
                    return
                if checkpoint and checkpoint_every and t - self.last_checkpoint >= checkpoint_every:
                    self.last_checkpoint = t
                    self.save(checkpoint, self.prepared.model_float(), self.prepared.model_raw(), upd, "periodic")
        finally:
            bar.close()

    def _expected_updates(self) -> int:
        n_items, epochs = self.prepared.n_items, self.run["epochs"]
        if self.prepared.kind != "torch":
            return n_items * epochs
        bs = self.prepared.spec["batch_size"]
        return sum(math.ceil((hi - lo) / bs) for lo, hi in (W.shard(n_items, w, self.n) for w in range(self.n))) \
            * epochs

    def stop(self, grace):
        """Stop every worker: flag, then SIGTERM, then SIGKILL; every wait bounded."""
        if self.t_end is None and self.t_go is not None:
            self.t_end = time.monotonic_ns()
        self.ctl[self.glob + K.STOP] = 1
        deadline = time.monotonic() + grace
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for sig_name, wait in (("terminate", 1.0), ("kill", 2.0)):
            alive = [p for p in self.procs if p.is_alive()]
            if not alive:
                break
            for p in alive:
                getattr(p, sig_name)()
            deadline = time.monotonic() + wait
            for p in alive:
                p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.exitcode is not None:
                p.close()
        if self.failure is None:  # a worker may have died while we waited
            self.check_closed()

    def check_closed(self):
        for wid in range(self.n):
            if self.status(wid) == W.FAILED:
                raw = bytes(self.err[wid]).split(b"\0", 1)[0].decode("utf-8", "replace")
                self.failure = (wid, int(self.ctl[wid * K.STRIDE + K.PID]), raw or "failed")
                return

    def save(self, path, model, raw, updates, why):
        meta = {"signature": self.run["signature"], "problem": self.problem.name, "updates": int(updates),
                "workers": self.n, "why": why,
                "formats": {k: repr(v) if v is not None else "float32" for k, v in self.prepared.formats.items()}}
        fixed_raw = {k: v for k, v in raw.items() if self.prepared.formats.get(k) is not None}
        return save_checkpoint(path, self.problem.model_dict(model), raw=self.problem.model_dict(fixed_raw),
                               meta=meta)


def _decode(prepared, raw):
    from .shared import decode
    return {k: decode(v, prepared.formats[k]) if prepared.formats[k] is not None else v for k, v in raw.items()}


def hogwild(problem: Problem, *, workers: int = 2, signature="D32M32G32C32", epochs: int | None = None,
            lr: float | None = None, lr_decay: float = 0.8, order: str = "blocks", seed: int = 0,
            stale_every: int = 16, checkpoint=None, checkpoint_every: float | None = 30.0,
            curve_points: int = 20, progress: bool = False, start_method: str | None = None,
            timeout: float | None = None, start_timeout: float = 120.0, stop_grace: float = 3.0,
            prefetch: int | None = None, replication: str = "shared", sync_every: int = 4096,
            sync: str = "full", merge: str = "sum", _fault: dict | None = None) -> RunResult:
    """Train ``problem`` with ``workers`` lock-free processes on one shared model.

    ``signature``: DMGC precision (``"D8M8G32C8"`` is Buckwild! 8-bit; the default is
    float32 Hogwild!).  ``epochs`` passes over the data in total (each worker
    takes its shard); the step size is ``lr * lr_decay**e`` where ``e`` counts the
    epochs completed by all workers together.  ``order``:
    "blocks" (default), "shuffle" (= "rr"), "sequential", "so", "flipflop" — each worker's
    ``relaxtorch.order`` value over its shard (see ``_worker.shard_order``) — or a balancing order
    ("grab", "pair", "recursive", "prob", "herding") on a torch problem, observed with each
    mini-batch's per-example gradients (the compiled kernels do not expose them).
    Staleness (writes by other workers between a worker's read of the model and
    its write) is measured on every ``stale_every``-th update.  ``prefetch``: how many
    examples ahead the sparse kernels prefetch rows in random order (default 16 for
    "shuffle", 0 otherwise).  ``checkpoint``: path for the final model (and a
    periodic one every ``checkpoint_every`` seconds); ``curve_points`` model
    snapshots give the loss-vs-time curve.  ``start_method``: "forkserver" (Linux
    default), "spawn" or "fork".

    ``replication`` (DimmWitted): "shared" (one model all workers write, Hogwild!) or
    "per-worker" (each worker trains a private replica and pushes its changes into the
    central model every ``sync_every`` of its updates and at each epoch's end; ``sync``:
    "full" (default) pushes the whole model, "touched" only the cache lines it wrote (which costs the
    kernel a mark per non-zero; on the benchmark's problems a sync interval touches nearly every
    line, so "full" is the faster one); ``merge``:
    "sum" adds each worker's delta, "average" adds 1/workers of it; see ``_replica``).
    Raises :class:`WorkerError` when a worker fails or ``timeout``
    passes, :class:`RunInterrupted` on Ctrl-C; both carry the partial result.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"Invalid problem: expected a relaxtorch.parallel Problem, got {type(problem).__name__}")
    sig = parse_signature(signature)
    _check_int("workers", workers, 1)
    epochs = problem.default_epochs if epochs is None else epochs
    _check_int("epochs", epochs, 1)
    _check_int("curve_points", curve_points, 0)
    if order not in ORDERS:
        raise ValueError(f"Invalid order: {order!r} (must be one of {ORDERS})")
    if order in BALANCING and problem.kind != "torch":
        raise ValueError(f"Invalid order: {order!r} (a balancing order needs per-example gradients, which the "
                         f"compiled {problem.kind} kernels do not expose; use it on a torch problem)")
    if isinstance(lr_decay, bool) or not isinstance(lr_decay, (int, float)) or not 0 < lr_decay <= 1:
        raise ValueError(f"Invalid lr_decay: {lr_decay!r} (must be in (0, 1])")
    lr = problem.lr if lr is None else lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"Invalid lr: {lr!r} (must be a positive number)")
    for name, value in (("timeout", timeout), ("checkpoint_every", checkpoint_every)):
        _check_seconds(name, value, allow_none=True)
    _check_seconds("start_timeout", start_timeout)
    _check_seconds("stop_grace", stop_grace)
    method = start_method or default_start_method()
    if method not in ("forkserver", "spawn", "fork"):
        raise ValueError(f"Invalid start_method: {start_method!r} (must be 'forkserver', 'spawn' or 'fork')")
    if workers > problem.n_items:
        raise ValueError(f"Invalid workers: {workers} (more workers than the {problem.n_items} examples)")

    if prefetch is None:
        prefetch = 16 if order in ("shuffle", "rr", "so", "flipflop") else 0
    _check_int("prefetch", prefetch, 0)
    R.check(replication, sync_every, sync, merge, problem.kind)

    prepared = problem.prepare(sig, seed=seed, stale_every=stale_every)
    if replication == "per-worker":
        R.replicate(prepared, workers, sync_every, sync, merge)
    W.bind(prepared.spec, prepared.tensors, np.zeros(2 * K.STRIDE, np.int64), 0, 1, seed).warmup()
    run = dict(prefetch=int(prefetch), epochs=epochs, lr=float(lr),
               lr_decay=float(lr_decay), order=order, seed=int(seed), n_items=prepared.n_items,
               start_timeout=float(start_timeout), fault=_fault, signature=str(sig))
    desc = f"{sig} x{workers}" + (f" per-worker/{sync_every}" if replication != "shared" else "")
    state = _Run(problem, prepared, workers, run, method, progress, desc)
    run["updates_per_epoch"] = max(state._expected_updates() // epochs, 1)
    error = None
    try:
        state.start()
        if state.wait_ready(start_timeout):
            state.go()
            state.monitor(timeout, curve_points, checkpoint, checkpoint_every)
    except KeyboardInterrupt:
        state.interrupted = True
    except BaseException as exc:  # e.g. the module could not be pickled: stop what started, re-raise
        error = exc
    finally:
        with _sigint_deferred():
            state.stop(stop_grace)
    if error is not None:
        raise error
    result = _finish(problem, prepared, state, sig, epochs, lr, order, checkpoint)
    if state.failure is not None:
        wid, pid, reason = state.failure
        who = f"worker {wid} (pid {pid})" if wid is not None else "run"
        saved = f"; last consistent model saved to {result.checkpoint}" if result.checkpoint else ""
        raise WorkerError(f"{who} failed: {reason}{saved}", worker=wid, pid=pid, reason=reason, result=result)
    if state.interrupted:
        raise RunInterrupted(result)
    return result


def _finish(problem, prepared, state, sig, epochs, lr, order, checkpoint) -> RunResult:
    n = state.n
    ctl = state.ctl
    rows = ctl[: n * K.STRIDE].reshape(n, K.STRIDE)
    updates = int(rows[:, K.UPDATES].sum())
    seconds = (state.t_end - state.t_go) / 1e9 if state.t_go is not None and state.t_end is not None else 0.0
    raw = prepared.model_raw()
    model = _decode(prepared, raw)
    note = None
    if not all(np.isfinite(v).all() for v in model.values()):
        finite = [s for s in state.snaps if all(np.isfinite(v).all() for v in _decode(prepared, s[2]).values())]
        if finite:
            raw = finite[-1][2]
            model = _decode(prepared, raw)
            note = "final model not finite: kept the last finite snapshot"
    if state.t_go is not None and (not state.snaps or state.snaps[-1][1] != updates):
        state.snaps.append((seconds, updates, raw))
    saved = None
    if checkpoint:  # first: the loss evaluations below take long and a Ctrl-C there must not lose the model
        why = "interrupted" if state.interrupted else ("failed" if state.failure else "finished")
        with _sigint_deferred():
            saved = state.save(checkpoint, model, raw, updates, why if note is None else f"{why}; {note}")
    curve, initial, final = [], math.nan, math.nan
    try:
        for t, u, r in state.snaps:
            curve.append((float(t), int(u), float(problem.objective(problem.model_dict(_decode(prepared, r))))))
        initial = curve[0][2] if curve else float(problem.objective(problem.model_dict(model)))
        final = float(problem.objective(problem.model_dict(model)))
    except KeyboardInterrupt:  # the model is saved; the run ends as interrupted, with the curve so far
        state.interrupted = True
    saturated = None
    fixed = [(raw[k], f) for k, f in prepared.formats.items() if f is not None]
    if fixed:
        tot = sum(v.size for v, _ in fixed)
        sat = sum(int(np.count_nonzero((v == code_range(f)[0]) | (v == code_range(f)[1]))) for v, f in fixed)
        saturated = sat / max(tot, 1)
    writes_total = int(rows[:, K.WRITES].sum())
    fmt = next(iter(prepared.extra.get("replica_formats", prepared.formats).values()))
    staleness = _staleness(ctl, n)
    sync = {}
    if "replica:stats" in prepared.tensors:
        rs = prepared.spec["replica"]
        sync = {"scheme": rs["sync"], "merge": rs["merge"], "accumulator": repr(prepared.formats[
            prepared.model_names[0]]) if fmt is not None else "float32", **R.stats(prepared, n)}
        # a replica sees the other workers' updates only when it syncs: its staleness is the lag
        # of its view at a push, not the kernel's count of writes during one update
        staleness = {"samples": sync["syncs"], "mean": sync["lag_mean"], "max": sync["lag_max"],
                     "measured": "at sync (other workers' updates not yet seen)"}
    batch = prepared.spec.get("batch_size", 1)
    go = state.t_go or 0
    spans = [((int(a) - go) / 1e9 if a else None, (int(b) - go) / 1e9 if b else None)
             for a, b in zip(rows[:, K.T_START], rows[:, K.T_END])]
    return RunResult(
        problem=problem.name, signature=str(sig), workers=n, epochs=epochs, lr=float(lr), order=order,
        updates=updates, examples=updates * batch, seconds=seconds,
        updates_per_s=updates / seconds if seconds > 0 else 0.0, initial_loss=initial, final_loss=final,
        curve=curve, staleness=staleness,
        writes={"total": writes_total,
                "nonzero_fraction": int(rows[:, K.NONZERO].sum()) / max(int(rows[:, K.SAMPLED].sum()), 1)},
        model_format=repr(fmt) if fmt is not None else "float32", data_format=prepared.data_format,
        model_bytes=prepared.model_bits // 8, saturated=saturated, per_worker=rows[:, K.UPDATES].tolist(),
        pids=rows[:, K.PID].tolist(),
        start_method=state.method, checkpoint=saved,
        failure=None if state.failure is None else f"worker {state.failure[0]}: {state.failure[2]}",
        interrupted=state.interrupted, replication="per-worker" if sync else "shared",
        sync_every=prepared.spec["replica"]["sync_every"] if sync else None, sync=sync,
        cpu_seconds=(rows[:, K.CPU_NS] / 1e9).tolist(), spans=spans)
