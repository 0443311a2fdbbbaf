"""The body of one worker process.

A worker attaches to the shared tensors, loads the compiled kernel (from numba's
on-disk cache: the parent compiled it before starting the workers), reports
ready, waits for the start signal, then runs its epochs over its shard of the
examples, checking for a stop request between chunks of a few milliseconds.

It never takes a lock and never blocks on the parent: all communication is the
shared control array (progress counters, status, stop flag) and a per-worker
error buffer.  Ctrl-C is left to the parent (workers ignore SIGINT); a worker
whose parent has died exits on its own (Linux: at once through
``PR_SET_PDEATHSIG``; elsewhere at its next chunk).
"""
from __future__ import annotations

import copy
import ctypes
import os
import signal
import sys
import time
import traceback

import numpy as np
import torch

from .._seeding import derive, generator
from . import _kernels as K

STARTING, READY, RUNNING, DONE, FAILED = 0, 1, 2, 3, 4
ERR_BYTES = 1024
_M32 = 0xFFFFFFFF


def seeds(seed: int, wid: int) -> tuple[int, int]:
    """The two 32-bit seeds of worker ``wid``'s counter-based random bits."""
    s = derive(seed, "worker rounding", wid)
    return s & _M32, (s >> 32) & _M32


def shard(n: int, wid: int, nworkers: int) -> tuple[int, int]:
    return wid * n // nworkers, (wid + 1) * n // nworkers


BLOCK = 256  # examples per block of the "blocks" order (streaming within a block)
ALIASES = {"shuffle": "rr"}  # the runner's older name for random reshuffling


def shard_order(lo: int, hi: int, mode: str, seed: int, wid: int, d: int | None = None):
    """The example order of worker ``wid``'s shard ``[lo, hi)`` (``relaxtorch.order``) and its state.

    "blocks": blocks of ``BLOCK`` consecutive examples in random order (random across the epoch,
    streaming within a block); "shuffle" (= "rr"): a fresh permutation each epoch; "sequential";
    any other name of ``relaxtorch.order.ORDERS`` (a balancing one needs ``d``, the length of
    the per-example gradients).  Epoch ``perm`` indexes the shard: the examples are ``lo + perm``.
    """
    from ..order import make
    name = ALIASES.get(mode, mode)
    order = make(name, hi - lo, d=d, **({"k": BLOCK} if name == "blocks" else {}))
    return order, order.init(generator(seed, "order", wid))


class _KernelRunner:
    """Runs one compiled kernel on chunks of example indices."""

    _ARGS = {"sparse": (("indptr", "indices", "values", "y"), ("w",)),
             "dense": (("X", "y"), ("w",)),
             "mc": (("rows", "cols", "vals"), ("L", "R"))}

    def __init__(self, spec, tensors, ctl, wid, nworkers, seed, prefetch=0):
        pre, model = self._ARGS[spec["kind"]]
        self.pre = tuple(tensors[n].numpy() for n in pre)
        self.model = tuple(tensors[n].numpy() for n in model)
        self.fn = getattr(K, spec["kernel"])
        self.fp, self.ip = spec["fp"].copy(), spec["ip"].copy()
        self.ip[K.I_SEED_LO], self.ip[K.I_SEED_HI] = seeds(seed, wid)
        self.ip[K.I_PF] = prefetch
        self.ctl, self.wid, self.nworkers = ctl, wid, nworkers
        self.writers = nworkers  # workers writing the model the kernel computes on (0: a private replica)
        self.post = ()  # trailing kernel arguments: a replica's dirty-block array for the sparse kernels

    def chunks(self, order: np.ndarray, size: int) -> list:
        return [order[c:c + size] for c in range(0, order.size, size)]

    def warmup(self) -> None:
        """Load (or compile) the kernel and map the shared pages; changes nothing.

        Touching one byte per page here moves the page faults of a freshly attached
        shared-memory array (one per 4 KiB, about a microsecond each) out of the run.
        """
        scratch = np.zeros(K.STRIDE * 2, np.int64)
        self.fn(*self.pre, np.zeros(0, np.int64), *self.model, scratch, 0, 1, self.fp, self.ip, *self.post)
        for a in self.pre + self.model:
            flat = a.reshape(-1).view(np.uint8)
            int(flat[::4096].sum())

    def run(self, order: np.ndarray, lr: float) -> None:
        self.fp[K.F_LR] = lr
        self.fn(*self.pre, order, *self.model, self.ctl, self.wid, self.writers, self.fp, self.ip, *self.post)


class _TorchRunner:
    """PyTorch-Hogwild step on shared parameters (float32) or shared fixed-point codes."""

    def __init__(self, spec, tensors, ctl, wid, nworkers, seed, prefetch=0):
        from .problems import FLOAT_FORMATS
        from .shared import code_range
        self.spec, self.ctl, self.wid, self.nworkers = spec, ctl, wid, nworkers
        self.X, self.y = tensors["X"], tensors["y"]
        self.vscale = float(spec["vscale"])
        self.formats = spec["formats"]
        self.fixed = any(f is not None for f in self.formats.values())
        self.module = copy.deepcopy(spec["module"])
        self.params = []  # (local parameter, shared tensor, format, code range)
        for name, p in self.module.named_parameters():
            shared = tensors[f"param:{name}"]
            fmt = self.formats[f"param:{name}"]
            if fmt is None:
                p.data = shared  # PyTorch Hogwild: the module computes on the shared storage itself
            self.params.append((p, shared, fmt, code_range(fmt) if fmt is not None else None))
        self.g_fmt = FLOAT_FORMATS.get(spec["gradient"])
        self.c_fmt = FLOAT_FORMATS.get(spec["communication"]) if not self.fixed else None
        lo, hi = seeds(seed, wid)
        self.gen = torch.Generator().manual_seed((hi << 32) | lo)
        self.bs = spec["batch_size"]
        self.mask = spec["stale_mask"]
        self.lam = spec["lam"]
        self.base = wid * K.STRIDE
        self.observer = None  # a balancing order's ``observe(batch, grads)`` (set by the worker loop)

    @property
    def grad_dim(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def warmup(self) -> None:
        pass

    def chunks(self, order: np.ndarray, size: int) -> list:
        """The epoch as near-equal mini-batches (no tiny last batch), a few per chunk."""
        batches = np.array_split(order, max(1, -(-order.size // self.bs)))
        per = max(1, size // self.bs)
        return [batches[b:b + per] for b in range(0, len(batches), per)]

    def _loss(self, out, yb):
        if self.spec["loss"] == "cross_entropy":
            return torch.nn.functional.cross_entropy(out, yb)
        return torch.nn.functional.mse_loss(out.reshape(yb.shape), yb)

    def run(self, batches: list, lr: float) -> None:
        ctl, base = self.ctl, self.base
        done = int(ctl[base + K.UPDATES])
        writes = nonzero = 0
        for batch in batches:
            idx = torch.from_numpy(batch)
            xb = self.X[idx].float()
            if self.vscale != 1.0:
                xb = xb * self.vscale
            yb = self.y[idx]
            sample = (done & self.mask) == 0
            before = self._others() if sample else 0
            with torch.no_grad():
                for p, shared, fmt, _ in self.params:
                    if fmt is not None:
                        p.copy_(shared.float() * fmt.eps)
                    p.grad = None
            if self.observer is not None:  # per-example gradients at the step's weights, for the order
                from ..order import example_grads
                self.observer(batch, example_grads(self.module, self._loss, xb, yb))
            self._loss(self.module(xb), yb).backward()
            with torch.no_grad():
                for p, shared, fmt, rng in self.params:
                    g = p.grad
                    if self.lam:
                        g = g + self.lam * p
                    if self.g_fmt is not None:
                        g = self._round(g, self.g_fmt, 0)
                    writes += g.numel()
                    if fmt is None:
                        delta = -lr * g
                        if self.c_fmt is not None:
                            delta = self._round(delta, self.c_fmt, 1)
                        shared.add_(delta)
                        nonzero += g.numel()
                    else:
                        u = g * (-lr / fmt.eps)
                        q = torch.floor(u + torch.rand(u.shape, generator=self.gen))
                        q = q.clamp(*self.qrange(fmt))
                        cur = shared.to(torch.float32)
                        q = torch.minimum(torch.maximum(q, rng[0] - cur), rng[1] - cur)
                        shared.add_(q.to(shared.dtype))
                        nonzero += int(torch.count_nonzero(q))
            done += 1
            ctl[base + K.UPDATES] = done
            if sample:
                self._record(self._others() - before)
        ctl[base + K.WRITES] += writes
        ctl[base + K.NONZERO] += nonzero
        ctl[base + K.SAMPLED] += writes

    def _round(self, x, fmt, mode):
        """Nearest (0) or stochastic (1) rounding to a float format, in plain torch ops.

        The same bits as ``relaxtorch.quantize`` (its portable reference): the compiled
        kernels behind ``quantize`` are multi-threaded, which only costs here, where
        each worker owns one core and the tensors are small.
        """
        from ..numbers import _grid
        from ..numbers import _reference as numref
        seeds = tuple(torch.randint(0, 2**32, (2,), generator=self.gen).tolist()) if mode else (0, 0)
        return numref.round_flat(x.float().contiguous(), _grid.element_grid(fmt), mode, seeds)

    def qrange(self, fmt):
        c = self.spec["communication"]
        return (-(2 ** (c - 1)), 2 ** (c - 1) - 1) if c < fmt.wl else (-(2 ** 31), 2 ** 31)

    def _others(self) -> int:
        return sum(int(self.ctl[v * K.STRIDE + K.UPDATES]) for v in range(self.nworkers) if v != self.wid)

    def _record(self, st: int) -> None:
        ctl, base = self.ctl, self.base
        ctl[base + K.STALE_SUM] += st
        ctl[base + K.STALE_MAX] = max(int(ctl[base + K.STALE_MAX]), st)
        ctl[base + K.STALE_N] += 1
        ctl[base + K.HIST + min(int(st).bit_length(), K.NBUCKETS - 1)] += 1


def bind(spec, tensors, ctl, wid, nworkers, seed, prefetch=0):
    """The runner of worker ``wid``; with ``spec["replica"]`` it trains a private replica."""
    cls = _TorchRunner if spec["kind"] == "torch" else _KernelRunner
    runner = cls(spec, tensors, ctl, wid, nworkers, seed, prefetch)
    if spec.get("replica"):
        from ._replica import Replicated
        runner = Replicated(runner, spec, tensors, ctl, wid, nworkers, seed)
    return runner


def _set_parent_death_signal() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    text = f"{type(exc).__name__}: {exc}".strip()
    return (text if not text.endswith(":") else text[:-1]) + where


def _fault(fault, wid, done):
    """Test hook: make worker ``fault['worker']`` fail after ``fault['after']`` updates."""
    if not fault or fault.get("worker") != wid or done < fault.get("after", 0):
        return
    action = fault.get("action", "raise")
    if action == "raise":
        raise RuntimeError(f"injected failure in worker {wid}")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hang":  # ignores the stop flag and SIGTERM: the parent must escalate to SIGKILL
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(0.1)
    if action == "exit":
        os._exit(3)


def worker_main(wid, nworkers, spec, tensors, ctl_t, err_t, run) -> None:
    """Entry point of worker ``wid`` of ``nworkers`` (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_parent_death_signal()
    torch.set_num_threads(1)  # one core per worker: no thread pools competing with the other workers
    ctl, err = ctl_t.numpy(), err_t.numpy()
    base, glob = wid * K.STRIDE, nworkers * K.STRIDE
    ppid = os.getppid()
    ctl[base + K.PID] = os.getpid()
    try:
        runner = bind(spec, tensors, ctl, wid, nworkers, run["seed"], run["prefetch"])
        runner.warmup()
        ctl[base + K.STATUS] = READY
        deadline = time.monotonic() + run["start_timeout"]
        while not ctl[glob + K.GO]:
            if ctl[glob + K.STOP] or os.getppid() != ppid:
                ctl[base + K.STATUS] = DONE
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no start signal within {run['start_timeout']:g} s")
            time.sleep(0.001)
        ctl[base + K.T_START] = time.monotonic_ns()
        cpu0 = time.thread_time_ns()
        ctl[base + K.STATUS] = RUNNING
        lo, hi = shard(run["n_items"], wid, nworkers)
        chunk, fault = spec["chunk"], run.get("fault")
        counters = ctl[: glob].reshape(nworkers, K.STRIDE)[:, K.UPDATES]
        per_epoch = run["updates_per_epoch"]
        sorter, sstate = shard_order(lo, hi, run["order"], run["seed"], wid, getattr(runner, "grad_dim", None))
        if sorter.needs_gradients:
            def observe(batch, grads, lo=lo):
                nonlocal sstate
                sstate = sorter.observe(sstate, torch.from_numpy(batch - lo), grads)
            runner.observer = observe
        for epoch in range(run["epochs"]):
            perm, sstate = sorter.epoch(sstate)
            order = lo + perm.numpy()
            for part in runner.chunks(order, chunk):
                # the step size follows the global progress (all workers' updates), so a worker
                # that was descheduled and runs late does not take early, large steps
                lr = run["lr"] * run["lr_decay"] ** min(int(counters.sum()) // per_epoch, run["epochs"] - 1)
                if ctl[glob + K.STOP]:
                    if hasattr(runner, "finish"):  # a replica pushes what it did before it stops
                        runner.finish()
                    ctl[base + K.CPU_NS] = time.thread_time_ns() - cpu0
                    ctl[base + K.T_END] = time.monotonic_ns()
                    ctl[base + K.STATUS] = DONE
                    return
                if os.getppid() != ppid:  # the parent died: nobody will read our results
                    os._exit(0)
                _fault(fault, wid, int(ctl[base + K.UPDATES]))
                runner.run(part, lr)
            if hasattr(runner, "end_epoch"):
                runner.end_epoch()
            ctl[base + K.EPOCH] = epoch + 1
        ctl[base + K.CPU_NS] = time.thread_time_ns() - cpu0
        ctl[base + K.T_END] = time.monotonic_ns()
        ctl[base + K.STATUS] = DONE
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, then the process ends
        msg = _describe(exc).encode("utf-8", "replace")[:ERR_BYTES - 1]
        err[wid, :len(msg)] = np.frombuffer(msg, np.uint8)
        err[wid, len(msg)] = 0
        ctl[base + K.STATUS] = FAILED
        sys.stderr.flush()
        os._exit(1)
