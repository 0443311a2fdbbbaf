"""CocktailSGD (Wang et al., "CocktailSGD: Fine-tuning Foundation Models over 500Mbps
Networks", ICML 2023), after the paper and its reference code (DS3Lab/CocktailSGD).

Every rank steps its own optimizer on its own gradient; then the ranks synchronise the
*change of the model since the last synchronisation*, ``delta = x_local - anchor``, where
``anchor`` is the global model every rank agrees on.  The flat parameter vector is cut
into N chunks; rank j is the "server" of chunk j.  Per step and chunk:

1. worker: a random subset of the chunk's coordinates (``random_ratio``; the same on every
   rank, from the shared seed and the step; drawn without replacement across steps, so
   no coordinate is visited twice within ``1/random_ratio`` steps, as the reference code's
   ``random_wo_replacement``), then top-K within the subset (``topk_ratio``),
   then bucketed quantization (``bits``, ``bucket``) of the survivors; the payload goes to
   the chunk's server.  Worker-side error feedback is the local model itself: what was not
   sent stays in ``x_local - anchor`` and is part of the next delta;
2. server: average the N decompressed deltas of its chunk, add its own residual, compress
   the sum again (top-K + quantization on the same subset), keep the new residual
   (server-side error feedback), send the payload to every rank;
3. every rank adds the decompressed update ``u`` to the anchor, and to its local model
   after removing what it sent itself: ``x_local += u - sent``.

Both phases are point-to-point (isend/irecv), as in the reference code; each phase's
messages go to different peers at once, so the link model counts one latency per phase.  With
``overlap=True`` the update of step t is applied in step t+1 (one step stale), so the
exchange of step t overlaps step t+1's compute: in a background thread, on a process group
of its own, where the rank has a spare core (``exchange_thread=True``), or on the main
thread, just before step t+1 compresses (``exchange_thread=False``: no thread competing for
the cores when ranks share them; the link still carries the exchange while step t+1
computes).  Both give the same values, on every run (the thread works on snapshots).  Each stage switches
off: ``random_ratio=1.0``, ``topk_ratio=1.0``, ``bits=None`` (or 32); with all three off and
``overlap=False`` a step is exact model averaging after the local steps.
"""
from __future__ import annotations

import os
import threading
import time

import torch
import torch.distributed as dist

from .._wrapped import WrappedOptimizer
from . import _kernels
from .allreduce import ring_allreduce_bytes
from .compressors import QSGD, _invalid
from .data_parallel import broadcast_parameters
from .link import LinkModel
from .._seeding import derive, generator
from .sparsify import Compose, RandomK, TopK
from .stats import CommStats


def _ratio(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise _invalid(name, value, "a fraction in (0, 1]; 1.0 switches the stage off")
    return float(value)


def spare_core(world: int) -> bool:
    """Whether each local rank has a core for its compute and one for an exchange thread:
    usable cores >= 2 x local ranks (``LOCAL_WORLD_SIZE``, as torchrun sets it; else ``world``).

    >>> spare_core(10**6)  # a million local ranks never have a spare core each
    False
    """
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores >= 2 * local


class CocktailSGD(WrappedOptimizer):
    """Local steps of ``optimizer``, then compressed synchronisation of the model delta (see module doc).

    ``seed`` is shared by all ranks (random subsets) and also seeds each rank's stochastic
    rounding (mixed with the rank).  Parameters are broadcast from rank 0 at construction.
    ``stats`` counts bytes and time; with ``overlap=True`` ``comm_s`` is the time ``step``
    waited for the background exchange (the communication not hidden by compute).
    ``state_dict`` holds the local parameters too (they differ between ranks by the
    worker residual), so ``load_state_dict`` restores a rank exactly; save one per rank.
    With ``overlap=True`` the constructor calls ``dist.new_group`` (every rank of the
    default group must construct it, as torch requires); call ``synchronize()`` before
    evaluating, checkpointing the model or shutting the process group down.
    ``exchange_thread`` (with ``overlap``): run the exchange in a background thread (True) or
    inline before the next step compresses (False); None picks the thread only where each
    rank has a spare core (:func:`spare_core`).  It changes where the work runs, never the
    values.  The exchange's server and decoding work counts as ``compress_s`` when it runs
    inline, or when ``stats.clock`` measures CPU seconds (then a thread's too, in its own
    CPU seconds); a thread's wall-clock overlaps the main thread's and is not added.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, random_ratio: float = 0.1, topk_ratio: float = 0.2,
                 bits: int | None = 4, bucket: int = 128, overlap: bool = True, group=None,
                 link: LinkModel | None = None, seed: int = 0, exchange_thread: bool | None = None):
        super().__init__(optimizer)
        self.random_ratio = _ratio("random_ratio", random_ratio)
        self.topk_ratio = _ratio("topk_ratio", topk_ratio)
        if bits == 32:
            bits = None
        quantizer = QSGD(4 if bits is None else bits, bucket)  # validates bits and bucket
        quantizer = quantizer if bits is not None else None
        if not isinstance(overlap, bool):
            raise _invalid("overlap", overlap, "a bool")
        if exchange_thread is not None and not isinstance(exchange_thread, bool):
            raise _invalid("exchange_thread", exchange_thread, "a bool, or None to use a thread where there is a "
                                                               "spare core")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _invalid("seed", seed, "an int, the same on every rank")
        if link is not None and not isinstance(link, LinkModel):
            raise _invalid("link", link, "a LinkModel (see parse_link) or None")
        params = self._params()
        if not params or len({(p.dtype, p.device) for p in params}) != 1:
            raise _invalid("optimizer", optimizer, "its parameters must share one dtype and device")
        self.bits, self.bucket, self.overlap, self.seed, self.link = bits, bucket, overlap, seed, link
        self.group = group
        self.stats = CommStats()
        self._sampler = RandomK(self.random_ratio, seed=seed, cycle=True) if self.random_ratio < 1 else None
        self._inner = Compose(*([TopK(self.topk_ratio)] if self.topk_ratio < 1 else []),
                              *([quantizer] if quantizer is not None else []))
        self._world, self._rank = dist.get_world_size(group), dist.get_rank(group)
        self.exchange_thread = overlap and (spare_core(self._world) if exchange_thread is None else exchange_thread)
        self._chunk_samplers = [RandomK(self.random_ratio, seed=derive(seed, "chunk", j), cycle=True)
                                for j in range(self._world)] if self._sampler else []
        self._peers = [dist.get_global_rank(group, r) if group is not None else r for r in range(self._world)]
        self._comm_group = group
        if overlap:  # the exchange gets a communicator of its own (a thread may run it; ranks may differ there)
            self._comm_group = dist.new_group(ranks=self._peers, backend=dist.get_backend(group))
        broadcast_parameters(params, group=group)
        n = sum(p.numel() for p in params)
        base, extra = divmod(n, self._world)
        sizes = [base + (1 if j < extra else 0) for j in range(self._world)]
        self._bounds = [(sum(sizes[:j]), sum(sizes[:j + 1])) for j in range(self._world)]
        with torch.no_grad():
            self._anchor = self._flat()
        self._offsets = torch.tensor([0] + [p.numel() for p in params], device=self._anchor.device).cumsum(0)
        self._offsets_list = self._offsets.tolist()
        _kernels.warm()  # compile (or load) the compressors' kernels now, not in the first step
        self._server_error = self._anchor.new_zeros(sizes[self._rank])
        self._gen_worker = generator(seed, "worker rounding", self._rank)
        self._gen_server = generator(seed, "server rounding", self._rank)
        self._step = 0
        self._pending = None  # the exchange in flight: {"thread", "pos", "sent", "update", "error", ...}

    # -- description ------------------------------------------------------------------------------
    @property
    def compressor(self) -> Compose:
        """The worker-side stack, e.g. ``Compose(RandomK(0.1), TopK(0.2), QSGD(4, 128))``."""
        return Compose(*([self._sampler] if self._sampler else []), *self._inner.stages)

    def __repr__(self) -> str:
        return (f"CocktailSGD({self.optimizer!r}, compressor={self.compressor!r}, overlap={self.overlap}, "
                f"exchange_thread={self.exchange_thread})")

    @property
    def anchor(self) -> torch.Tensor:
        """The global model (flat), the same on every rank."""
        return self._anchor

    def anchor_tensors(self) -> list[torch.Tensor]:
        """The global model shaped like the parameters (copies)."""
        out, off = [], 0
        for p in self._params():
            out.append(self._anchor[off:off + p.numel()].view_as(p).clone())
            off += p.numel()
        return out

    # -- the step ---------------------------------------------------------------------------------
    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._params()])

    @torch.no_grad()
    def _add_to_params(self, values: torch.Tensor, pos: torch.Tensor | None, cuts: list[int] | None = None) -> None:
        """Add ``values`` at the sorted flat positions ``pos`` (None: every position) to the parameters
        (``cuts``: where each parameter's positions start in ``pos``, found if None)."""
        if pos is None:
            off = 0
            for p in self._params():
                p.add_(values[off:off + p.numel()].view_as(p))
                off += p.numel()
            return
        if cuts is None:
            cuts = torch.searchsorted(pos, self._offsets).tolist()
        for i, p in enumerate(self._params()):
            a, b = cuts[i], cuts[i + 1]
            if a == b:
                continue
            local = pos[a:b] - self._offsets_list[i]
            if p.is_contiguous():
                p.view(-1).index_add_(0, local, values[a:b])
            else:
                p.add_(torch.zeros(p.numel(), dtype=p.dtype, device=p.device).index_add_(0, local, values[a:b])
                       .view(p.shape))

    def _subset(self, j: int, step: int) -> torch.Tensor | None:
        """Positions of chunk j synchronised at ``step`` (None: the whole chunk)."""
        if self._sampler is None:
            return None
        lo, hi = self._bounds[j]
        return self._chunk_samplers[j].indices(hi - lo, step).to(self._anchor.device)

    @torch.no_grad()
    def step(self, closure=None):
        """Local optimizer step, then synchronise the model delta (applied now, or next step if overlapping)."""
        loss = self._evaluate(closure)
        self.optimizer.step()
        job = self._launch(self._finish_pending(defer=True))
        if self.overlap:
            if self.exchange_thread:
                job["thread"] = threading.Thread(target=self._run_exchange, args=(job,), daemon=True,
                                                 name=f"cocktail-exchange-{self._step}")
                job["thread"].start()
            self._pending = job  # inline: exchanged by the next _finish_pending
        else:
            self._run_exchange(job, timed=True)
            self._pending = job
            self._finish_pending()
        self._step += 1
        self.stats.steps += 1
        return loss

    def _compiled(self) -> bool:
        """Whether the gather and the update take the compiled kernels (CPU float32, contiguous)."""
        return _kernels.cpu_f32(self._anchor) and all(p.is_contiguous() for p in self._params())

    def _delta_at(self, pos: torch.Tensor, cuts: list[int], applying: dict | None = None) -> torch.Tensor:
        """Parameters minus anchor at the sorted flat positions ``pos`` (``cuts``: where each
        parameter's positions start), without flattening the model; ``applying``: a finished
        exchange whose update is applied first, in the same pass (compiled path only)."""
        if self._compiled():
            out = torch.empty(pos.numel(), dtype=self._anchor.dtype)
            o, a, pn = out.numpy(), self._anchor.numpy(), pos.numpy()
            if applying is not None:
                apos, u, sent = applying["pos"].numpy(), applying["update"].numpy(), applying["sent"].numpy()
                acuts = applying.get("cuts") or torch.searchsorted(applying["pos"], self._offsets).tolist()
            for i, p in enumerate(self._params()):
                lo, hi = cuts[i], cuts[i + 1]
                param = p.detach().view(-1).numpy()
                if applying is not None:
                    alo, ahi = acuts[i], acuts[i + 1]
                    _kernels.apply_and_gather(param, self._offsets_list[i], a, apos[alo:ahi], u[alo:ahi],
                                              sent[alo:ahi], pn[lo:hi], o[lo:hi])
                elif lo < hi:
                    _kernels.gather_delta(param, self._offsets_list[i], a, pn[lo:hi], o[lo:hi])
            return out
        assert applying is None
        parts = []
        for i, p in enumerate(self._params()):
            a, b = cuts[i], cuts[i + 1]
            if a < b:
                parts.append(p.detach().reshape(-1)[pos[a:b] - self._offsets_list[i]])
        return (torch.cat(parts) if len(parts) != 1 else parts[0]).sub_(self._anchor[pos])

    def _launch(self, applying: dict | None = None) -> dict:
        """Apply ``applying`` (a finished exchange whose update ``_finish_pending`` deferred), then
        compress this rank's delta for every chunk's server (main thread).

        Only the random subset's coordinates are touched: ``pos`` (sorted flat positions,
        None when the whole model is synchronised), ``cuts`` (where each parameter's positions
        start in ``pos``) and ``sent`` (what this rank's payloads decode to, aligned with ``pos``)."""
        clock = self.stats.clock
        t0 = clock()
        subsets = [self._subset(j, self._step) for j in range(self._world)]
        if applying is not None and subsets[0] is None:
            self._apply(applying)
            applying = None
        if subsets[0] is None:
            pos = cuts = None
            delta = self._flat().sub_(self._anchor)
            sizes = [hi - lo for lo, hi in self._bounds]
        else:
            pos = torch.cat([idx + lo for idx, (lo, _) in zip(subsets, self._bounds)])
            cuts = torch.searchsorted(pos, self._offsets).tolist()
            delta = self._delta_at(pos, cuts, applying)  # the update in the same pass (cache lines read once)
            sizes = [idx.numel() for idx in subsets]
        payloads, sent = [], []
        for values in delta.split(sizes):
            p, decoded = self._inner.compress_and_decode(values, generator=self._gen_worker, step=self._step)
            payloads.append(p)
            sent.append(decoded)
        self.stats.compress_s += clock() - t0
        return {"subsets": subsets, "payloads": payloads, "sent": torch.cat(sent), "pos": pos, "cuts": cuts,
                "update": None, "error": None, "step": self._step}

    def _segment(self, job: dict, j: int) -> slice:
        """Where chunk j's values lie in ``job["sent"]`` and ``job["update"]``."""
        sizes = [hi - lo for lo, hi in self._bounds] if job["subsets"][0] is None else \
            [idx.numel() for idx in job["subsets"]]
        a = sum(sizes[:j])
        return slice(a, a + sizes[j])

    def _p2p(self, sends: dict[int, torch.Tensor], recvs: dict[int, torch.Tensor]) -> None:
        ops = [dist.P2POp(dist.isend, buf, self._peers[r], group=self._comm_group) for r, buf in sends.items()]
        ops += [dist.P2POp(dist.irecv, buf, self._peers[r], group=self._comm_group) for r, buf in recvs.items()]
        if ops:
            for work in dist.batch_isend_irecv(ops):
                work.wait()

    def _run_exchange(self, job: dict, timed: bool = False) -> None:
        try:
            self._exchange(job, timed)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            job["error"] = exc

    def _exchange(self, job: dict, timed: bool) -> None:
        """Phase 1 (deltas to servers), server aggregation with error feedback, phase 2 (updates to all)."""
        me, world, payloads = self._rank, self._world, job["payloads"]
        wall, clock = time.perf_counter, self.stats.clock  # waiting for peers in wall seconds, work in clock's
        t0, c0 = wall(), clock()
        mine = payloads[me]
        recv = {r: torch.empty(mine.nbytes, dtype=torch.uint8, device=self._anchor.device)
                for r in range(world) if r != me}
        self._p2p({r: payloads[r].to_bytes() for r in range(world) if r != me}, recv)
        t1, c1 = wall(), clock()
        agg = None
        for r in range(world):  # in rank order (the same sum on every run); this rank's own, already decoded
            d = job["sent"][self._segment(job, me)] if r == me else self._inner.decompress(mine.from_bytes(recv[r]))
            agg = d.clone() if agg is None else agg.add_(d)
        agg /= world
        idx = job["subsets"][me]
        fast = idx is not None and _kernels.cpu_f32(agg)
        if fast:  # the same float32 adds and copies as the indexing below, without its overhead
            _kernels.add_gathered(agg.numpy(), self._server_error.numpy(), idx.numpy())
        else:
            agg += self._server_error if idx is None else self._server_error[idx]
        q, decoded = self._inner.compress_and_decode(agg, generator=self._gen_server, step=job["step"])
        residual = agg.sub_(decoded)
        if idx is None:
            self._server_error.copy_(residual)
        elif fast:
            _kernels.scatter(self._server_error.numpy(), idx.numpy(), residual.numpy())
        else:
            self._server_error[idx] = residual
        t2, c2 = wall(), clock()
        recv = {r: torch.empty(payloads[r].nbytes, dtype=torch.uint8, device=self._anchor.device)
                for r in range(world) if r != me}
        qbuf = q.to_bytes()
        self._p2p({r: qbuf for r in range(world) if r != me}, recv)
        t3, c3 = wall(), clock()
        job["update"] = torch.cat([decoded if j == me else self._inner.decompress(payloads[j].from_bytes(recv[j]))
                                   for j in range(world)])  # aligned with job["pos"]
        job["work_s"] = (c2 - c1) + (clock() - c3)  # server and decoding work, in the clock of this thread
        if timed:
            self.stats.comm_s += (t1 - t0) + (t3 - t2)
            self.stats.compress_s += job["work_s"]
        sent_bytes = sum(payloads[r].nbytes for r in range(world) if r != me) + (world - 1) * q.nbytes
        f32, _ = ring_allreduce_bytes(self._anchor.numel(), 4, world, me)
        job["bytes"] = (sent_bytes, 2 * (world - 1), f32)

    @torch.no_grad()
    def _finish_pending(self, defer: bool = False) -> dict | None:
        """Wait for the exchange in flight (if any) and apply its update; with ``defer`` (and the
        compiled path), return the job instead for ``_launch`` to apply while it gathers."""
        job, self._pending = self._pending, None
        if job is None:
            return None
        if job.get("thread") is not None:
            t0 = time.perf_counter()
            job["thread"].join()
            self.stats.comm_s += time.perf_counter() - t0
            if self.stats.clock is not time.perf_counter and "work_s" in job:
                self.stats.compress_s += job["work_s"]  # CPU seconds count wherever they were spent
        elif job["update"] is None and job["error"] is None:  # overlapped without a thread: exchange it now
            self._run_exchange(job, timed=True)
        if job["error"] is not None:
            raise RuntimeError(f"CocktailSGD: the exchange of step {job['step']} failed on rank "
                               f"{dist.get_rank()}: {job['error']!r}") from job["error"]
        nbytes, messages, f32 = job["bytes"]
        # two rounds (to the servers, then from them), each of concurrent messages to different peers
        self.stats.record_send(nbytes, self.link, messages=messages, float32_bytes=f32, rounds=2 if messages else 0)
        if defer and job["pos"] is not None and self._compiled():
            return job
        self._apply(job)
        return None

    @torch.no_grad()
    def _apply(self, job: dict) -> None:
        """Add the update to the anchor and, minus what this rank sent, to the parameters."""
        clock = self.stats.clock
        t0 = clock()
        pos, update = job["pos"], job["update"]
        if pos is not None and self._compiled():
            cuts = job.get("cuts") or torch.searchsorted(pos, self._offsets).tolist()
            a, pn, u, sent = self._anchor.numpy(), pos.numpy(), update.numpy(), job["sent"].numpy()
            for i, p in enumerate(self._params()):
                lo, hi = cuts[i], cuts[i + 1]
                if lo < hi:
                    _kernels.apply_update(p.detach().view(-1).numpy(), self._offsets_list[i], a, pn[lo:hi],
                                          u[lo:hi], sent[lo:hi])
        else:
            if pos is None:
                self._anchor += update
            else:
                self._anchor.index_add_(0, pos, update)
            self._add_to_params(update.sub_(job["sent"]), pos, job.get("cuts"))
        self.stats.compress_s += clock() - t0  # applying the update is the decoding side

    def synchronize(self) -> None:
        """Apply the exchange still in flight (call before evaluating or saving the model)."""
        self._finish_pending()

    # -- checkpoints --------------------------------------------------------------------------------
    _state_key = "cocktail"

    def _extra_state(self) -> dict:
        """Local parameters, anchor, server residual, generators, step and the update still in
        flight (waited for, not applied): the ``"cocktail"`` entry of ``state_dict()``."""
        job = self._pending
        if job is not None and job.get("thread") is not None:
            job["thread"].join()
            job["thread"] = None
        elif job is not None and job["update"] is None and job["error"] is None:  # inline: exchange it now
            self._run_exchange(job, timed=True)
        if job is not None and job["error"] is not None:
            self._finish_pending()  # raises
        pending = None
        if job is not None:
            pending = {"update": job["update"].clone(), "sent": job["sent"].clone(), "bytes": job["bytes"],
                       "step": job["step"], "pos": None if job["pos"] is None else job["pos"].clone()}
        return {"params": self._flat().clone(), "anchor": self._anchor.clone(),
                "server_error": self._server_error.clone(), "step": self._step,
                "gen_worker": self._gen_worker.get_state(), "gen_server": self._gen_server.get_state(),
                "pending": pending}

    def load_state_dict(self, state_dict: dict) -> None:
        if self._pending is not None and self._pending.get("thread") is not None:
            self._pending["thread"].join()  # before anything it reads or writes is replaced
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def _load_extra_state(self, extra: dict) -> None:
        if extra["params"].numel() != self._anchor.numel():
            raise _invalid("state_dict", f"{extra['params'].numel()} parameters",
                           f"this model has {self._anchor.numel()}")
        off = 0
        for p in self._params():
            p.copy_(extra["params"][off:off + p.numel()].view_as(p))
            off += p.numel()
        self._anchor.copy_(extra["anchor"])
        self._server_error.copy_(extra["server_error"])
        self._step = extra["step"]
        self._gen_worker.set_state(extra["gen_worker"])
        self._gen_server.set_state(extra["gen_server"])
        pending = extra["pending"]
        device = self._anchor.device  # checkpoints are loaded on the CPU
        self._pending = None if pending is None else {
            "update": pending["update"].to(device, copy=True), "sent": pending["sent"].to(device, copy=True),
            "bytes": tuple(pending["bytes"]), "step": pending["step"], "error": None, "thread": None,
            "pos": None if pending["pos"] is None else pending["pos"].to(device, copy=True)}

    def add_param_group(self, param_group: dict) -> None:
        raise RuntimeError("CocktailSGD: parameters are fixed at construction (the flat anchor and chunks)")

    def __del__(self):
        job = getattr(self, "_pending", None)
        if job is not None and job.get("thread") is not None:
            job["thread"].join(timeout=60)
