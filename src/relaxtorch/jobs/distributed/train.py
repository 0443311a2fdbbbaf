"""The training loop every rank runs, inside an initialised ``torch.distributed`` process group.

``run_job(cfg, out)`` trains the job's runs one after another on the same
ranks; rank 0 returns the report and writes it to ``out`` after each run.  A
step on every rank::

    opt.zero_grad(); with opt.stats.timing("compute"): loss(minibatch).backward(); opt.step()

Every ``eval_every`` steps the ranks evaluate together: the consensus distance
(1/n) sum_i |x_i - x_bar|^2 of the ranks' parameters, the mean minibatch loss
since the last evaluation (``batch_loss``, each rank on its own data and model),
the bytes sent so far, and the loss on the whole training set (``train_loss``,
the objective) and the test loss and accuracy of rank 0's model (centralized
algorithms) or of the average model x_bar (decentralized ones).  The simulated wall-clock
follows every rank's clock through its measured compute and compression and the link
model's time for its messages (``simulated_seconds``): a synchronous algorithm waits, each
step, for the slowest rank's compute + compression + communication; an overlapping one
(CocktailSGD) lets each rank compute step t+1 while the exchange of step t is on the link,
and waits for that exchange (launched when the last rank had compressed step t) only before
compressing step t+1.  Compute and compression are measured on ``time.thread_time`` (CPU
seconds of the rank's thread) when the local ranks' torch threads outnumber the cores, so a
rank waiting for a core another rank holds is not charged for it; else on wall-clock
(``timing_clock``).  These bookkeeping collectives are not counted as the algorithm's traffic.  After the last step an overlapping
algorithm's exchange still in flight is applied (``opt.synchronize()``) before
the final evaluation.

With a balancing example order (``order = "grab"``, ``"pair"``, ``"cdgrab"``, ...) each rank
computes, before its step, the per-example gradients of its minibatch at the step's weights
(``relaxtorch.order.example_grads``) and feeds them to its order (CD-GraB: one all-gather
with the other ranks); that sorting is timed apart (``sort_s``, not in compute nor in the
simulated time) and the order's peak state bytes are reported.

Every ``checkpoint_every`` steps, and when a run ends, rank 0 writes every rank's
state (``checkpoint.py``); with ``resume`` a finished run is taken from its
checkpoint and an unfinished one continues from it, bit for bit.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F

from . import checkpoint as ckpt
from .algorithms import Context, build
from .config import DistConfig, RunSpec
from .data import BatchSchedule, state_tree
from .models import build_model, n_parameters
from .schedule import lr_at

# per-step measurements each rank keeps until the next collective flush
_STEP_FIELDS = ("compute_s", "compress_s", "simulated_comm_s", "comm_s", "wall_s")


def simulated_seconds(t: torch.Tensor, overlap: bool) -> float:
    """Simulated seconds of a window of steps all ranks start together, from per-rank measurements
    ``t[rank, step, field]`` (fields as ``_STEP_FIELDS``; c compute, z compress, s link time).

    Synchronous: every step ends when the slowest rank has computed, compressed and
    communicated, sum over steps of max over ranks of c + z + s.  Overlapping (the link time
    ``s`` a row records is the exchange launched in the row before, as CocktailSGD records it):
    rank i's clock runs ``T_i = max(T_i + c_i, L + max_j s_j) + z_i``, where ``L`` is the time
    the last rank finished compressing the row before (the exchange starts when every payload
    is ready).  Ranks thus wait for each other once per step, at the exchange, with a step of
    compute in between to absorb a slow rank.  Returns the last rank's clock.
    """
    c, z, s = (t[..., i].tolist() for i in range(3))  # ranks x steps
    ranks = len(c)
    if not ranks or not c[0]:
        return 0.0
    steps = len(c[0])
    if not overlap:
        return float(sum(max(c[i][k] + z[i][k] + s[i][k] for i in range(ranks)) for k in range(steps)))
    clock, last = [0.0] * ranks, 0.0
    for k in range(steps):
        arrived = last + max(s[i][k] for i in range(ranks))
        clock = [max(clock[i] + c[i][k], arrived) + z[i][k] for i in range(ranks)]
        last = max(clock)
    return last


def timing_clock(local_world: int | None = None):
    """The clock for compute and compression: ``time.thread_time`` when the local ranks' torch
    threads outnumber the usable cores (``LOCAL_WORLD_SIZE``, as torchrun and the local launcher
    set it), else ``time.perf_counter``.  The same rule for every algorithm of a job."""
    local = local_world or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return time.thread_time if local * torch.get_num_threads() > cores else time.perf_counter


@dataclasses.dataclass
class RankContext:
    """Where this rank runs: its place in the group and its device."""

    rank: int
    world: int
    device: torch.device


@functools.lru_cache(maxsize=4)
def _dataset(name: str, seed: int):
    from ...data import load_dataset
    return load_dataset(name, seed=seed)


def _load_data(spec: RunSpec, seed: int, device):
    ds = _dataset(spec.data, seed)
    return ds, [t.to(device) for t in (ds.X_train, ds.y_train, ds.X_test, ds.y_test)]


def _stats_state(stats) -> dict:
    return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}


class _Run:
    """One run on one rank: model, algorithm, data schedule and the bookkeeping of the report."""

    def __init__(self, spec: RunSpec, cfg: DistConfig, rc: RankContext, factory):
        from ...comm.link import parse_link
        self.spec, self.cfg, self.rc = spec, cfg, rc
        self.ds, (self.X, self.y, self.X_test, self.y_test) = _load_data(spec, cfg.seed, rc.device)
        self.model = build_model(spec.model, self.ds.n_features, self.ds.n_classes, seed=cfg.seed).to(rc.device)
        self.schedule = BatchSchedule(self.ds.y_train, rc.world, rc.rank, spec.batch_size, scheme=spec.partition,
                                      skew=spec.label_skew, reshuffle=spec.reshuffle, seed=cfg.seed,
                                      order=spec.order, grad_dim=n_parameters(self.model))
        self.sort_s = 0.0  # this rank's seconds of sorting (per-example gradients, observe)
        self.order_bytes = 0
        self.link = parse_link(spec.link)
        ctx = Context(rank=rc.rank, world=rc.world, seed=cfg.seed, link=self.link, device=rc.device)
        self.opt = (factory or build)(spec, self.model, ctx)
        self.overlap = bool(getattr(self.opt, "overlap", False))
        self.clock = timing_clock(int(os.environ.get("LOCAL_WORLD_SIZE", rc.world)))
        self.opt.stats.clock = self.clock
        self.step = 0
        self.window = [0.0, 0]  # training-loss sum and count since the last evaluation
        self.pending: list[tuple] = []
        self.history: list[dict] = []
        self.totals = {"sim_s": 0.0, "sim_unlimited_s": 0.0, "wall_s": 0.0, "compute_s": 0.0, "compress_s": 0.0,
                       "simulated_comm_s": 0.0, "comm_s": 0.0}
        self._scratch = None

    # ------------------------------------------------------------------ one step

    def train_step(self) -> None:
        stats = self.opt.stats
        before = [getattr(stats, f) for f in _STEP_FIELDS[:-1]]
        idx = self.schedule.indices(self.step)
        if self.schedule.needs_gradients:
            self.observe(idx)
        t0 = time.perf_counter()
        self.set_lr()
        self.opt.zero_grad()
        with stats.timing("compute"):
            loss = F.cross_entropy(self.model(self.X[idx]), self.y[idx])
            loss.backward()
        self.opt.step()
        wall = time.perf_counter() - t0
        self.pending.append(tuple(getattr(stats, f) - b for f, b in zip(_STEP_FIELDS[:-1], before)) + (wall,))
        self.window[0] += float(loss.detach())
        self.window[1] += 1
        self.step += 1

    def observe(self, idx) -> None:
        """Feed the balancing order this step's per-example gradients (timed as sorting)."""
        from ...order import example_grads
        t0 = time.perf_counter()
        grads = example_grads(self.model, F.cross_entropy, self.X[idx], self.y[idx])
        self.schedule.observe(self.step, grads)
        self.order_bytes = max(self.order_bytes, self.schedule.order.state_bytes(self.schedule.state))
        self.sort_s += time.perf_counter() - t0

    def lr(self) -> float:
        """The step size of the current step (the run's schedule; a function of the step alone)."""
        sp = self.spec
        return lr_at(sp.lr_schedule, sp.lr, self.step, sp.steps, lr_final=sp.lr_final, lr_step=sp.lr_step,
                     lr_gamma=sp.lr_gamma)

    def set_lr(self) -> None:
        lr = self.lr()
        for group in self.opt.param_groups:  # the wrapped optimizer's groups, shared down the stack
            group["lr"] = lr

    def synchronize(self) -> None:
        """Apply the exchange still in flight (overlapping algorithms) and count it: nothing
        overlaps the last exchange, so it enters the times as a step of its own without compute."""
        stats = self.opt.stats
        before = [getattr(stats, f) for f in _STEP_FIELDS[:-1]]
        t0 = time.perf_counter()
        self.opt.synchronize()
        wall = time.perf_counter() - t0
        self.pending.append(tuple(getattr(stats, f) - b for f, b in zip(_STEP_FIELDS[:-1], before)) + (wall,))

    # ------------------------------------------------------------------ collectives

    def flush(self) -> None:
        """Gather the per-step times of all ranks; rank 0 adds them to the totals."""
        mine = torch.tensor(self.pending, dtype=torch.float64).reshape(-1, len(_STEP_FIELDS)).to(self.rc.device)
        parts = [torch.empty_like(mine) for _ in range(self.rc.world)]
        dist.all_gather(parts, mine)
        self.pending = []
        if self.rc.rank != 0 or mine.numel() == 0:
            return
        t = torch.stack([p.cpu() for p in parts])  # ranks x steps x fields
        self.totals["sim_s"] += simulated_seconds(t, self.overlap)
        unlimited = t.clone()
        unlimited[..., 2] = 0.0  # the same steps on an unlimited link: the link model never sleeps
        self.totals["sim_unlimited_s"] += simulated_seconds(unlimited, self.overlap)
        self.totals["wall_s"] += float(t[..., -1].max(0).values.sum())
        for i, name in enumerate(_STEP_FIELDS[:-1]):
            self.totals[name] += float(t[..., i].sum(1).mean())

    def evaluate(self) -> None:
        """Collective: append a history row (rank 0)."""
        self.flush()
        dev = self.rc.device
        vec = torch.nn.utils.parameters_to_vector(self.model.parameters()).detach()
        avg = vec.clone()
        dist.all_reduce(avg)
        avg /= self.rc.world
        stats = self.opt.stats
        sums = torch.tensor([float(((vec - avg).double() ** 2).sum()), self.window[0], self.window[1],
                             stats.bytes_sent, stats.messages_sent, stats.float32_bytes, self.sort_s],
                            dtype=torch.float64,
                            device=dev)
        dist.all_reduce(sums)
        sums = sums.tolist()
        self.window = [0.0, 0]
        if self.rc.rank != 0:
            return
        model = self.model
        if self.spec.decentralized:
            if self._scratch is None:
                self._scratch = copy.deepcopy(self.model)
            torch.nn.utils.vector_to_parameters(avg, self._scratch.parameters())
            model = self._scratch
        with torch.no_grad():
            out = model(self.X_test)
            test_loss = float(F.cross_entropy(out, self.y_test))
            test_acc = float((out.argmax(1) == self.y_test).double().mean())
            train_loss = float(F.cross_entropy(model(self.X), self.y))
        n = self.rc.world
        self.history.append({
            "step": self.step, "epoch": self.step / self.schedule.steps_per_epoch, "lr": self.lr(),
            "train_loss": train_loss,
            "batch_loss": sums[1] / sums[2] if sums[2] else None, "test_loss": test_loss, "test_acc": test_acc,
            "consensus": sums[0] / n, "bytes_per_worker": sums[3] / n, "messages_per_worker": sums[4] / n,
            "float32_bytes_per_worker": sums[5] / n, "sort_s": sums[6] / n, "sim_s": self.totals["sim_s"], "wall_s": self.totals["wall_s"]})

    # ------------------------------------------------------------------ checkpoints

    def _header(self, done: bool, record=None) -> dict:
        return {"run": self.spec.name, "spec": self.spec.to_dict(), "world": self.rc.world, "seed": self.cfg.seed,
                "step": self.step, "done": done, "record": record,
                "shared": {"history": self.history, "totals": self.totals}}

    def save(self, path: Path, done: bool = False, record=None) -> None:
        self.flush()
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "stats": _stats_state(self.opt.stats), "window": list(self.window),
                 "data": {"seed": self.cfg.seed, "rank": self.rc.rank, "step": self.step}}
        if self.schedule.needs_gradients:  # a balancing order's state: it is not a function of the step
            state["order"] = {"state": state_tree(self.schedule.state), "sort_s": self.sort_s,
                              "bytes": self.order_bytes}
        ckpt.gather_and_save(path, state, self._header(done, record))

    def restore(self, header: dict, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        for k, v in state["stats"].items():
            setattr(self.opt.stats, k, v)
        self.window = list(state["window"])
        self.step = header["step"]
        if "order" in state:
            self.schedule.restore(state["order"]["state"], self.step)
            self.sort_s, self.order_bytes = state["order"]["sort_s"], state["order"]["bytes"]
        self.history = list(header["shared"]["history"])
        self.totals = dict(header["shared"]["totals"])

    def final_stats(self) -> list[dict] | None:
        """Collective: every rank's ``opt.stats`` as a dict, on rank 0 (others None).  The counters
        travel as an int64 and a float64 tensor in the stats dataclass's field order."""
        stats = self.opt.stats
        fields = dataclasses.fields(stats)
        ints = [f.name for f in fields if type(f.default) is int]
        floats = [f.name for f in fields if type(f.default) is float]
        if len(ints) + len(floats) != len(fields):
            raise TypeError(f"{type(stats).__name__}: every field must default to an int or a float")
        mine = [torch.tensor([getattr(stats, k) for k in names], dtype=dtype, device=self.rc.device)
                for names, dtype in ((ints, torch.int64), (floats, torch.float64))]
        got = []
        for t in mine:
            parts = [torch.empty_like(t) for _ in range(self.rc.world)]
            dist.all_gather(parts, t)
            got.append([p.cpu().tolist() for p in parts])
        if self.rc.rank != 0:
            return None
        return [dataclasses.replace(stats, **dict(zip(ints, i)), **dict(zip(floats, f))).as_dict()
                for i, f in zip(*got)]

    def record(self, rank_stats: list[dict]) -> dict:
        """Rank 0's account of the finished run (what the report is made of)."""
        return {"name": self.spec.name, "algorithm": self.spec.algorithm, "spec": self.spec.to_dict(),
                "world": self.rc.world, "params": n_parameters(self.model), "overlap": self.overlap,
                "clock": "thread CPU" if self.clock is time.thread_time else "wall",
                "evaluated": "average" if self.spec.decentralized else "rank 0",
                "steps_per_epoch": self.schedule.steps_per_epoch, "link": str(self.link),
                "order": self.spec.order, "order_bytes": self.order_bytes,
                "history": self.history, "totals": self.totals, "rank_stats": rank_stats}


def _check_resumable(header: dict, spec: RunSpec, cfg: DistConfig, world: int, path) -> None:
    if header["spec"] != spec.to_dict() or header["seed"] != cfg.seed or header["world"] != world:
        diff = [k for k, v in spec.to_dict().items() if header["spec"].get(k) != v]
        what = ", ".join(diff) or ("seed" if header["seed"] != cfg.seed else "world size")
        raise ValueError(f"checkpoint {path} was written for different settings ({what}); "
                         "run without --resume to start over")


def train_run(spec: RunSpec, cfg: DistConfig, rc: RankContext, out: Path, *, resume: bool = False,
              progress: bool = True, factory=None, heartbeat=None) -> dict | None:
    """Collective: train one run; rank 0 returns its record (others None)."""
    path = Path(out) / "checkpoints" / f"{spec.name}.pt"
    run = _Run(spec, cfg, rc, factory)
    if resume:
        header, state = ckpt.load_and_scatter(path)
        if header is not None:
            _check_resumable(header, spec, cfg, rc.world, path)
            if header["done"]:
                return header["record"] if rc.rank == 0 else None
            run.restore(header, state)
    if run.step == 0:
        run.evaluate()
    bar = None
    if rc.rank == 0 and progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=spec.steps, initial=run.step, desc=spec.name, unit="step", dynamic_ncols=True)
    try:
        while run.step < spec.steps:
            run.train_step()
            if heartbeat is not None:
                heartbeat(run.step)
            if bar is not None:
                bar.update(1)
            if run.step == spec.steps and hasattr(run.opt, "synchronize"):
                run.synchronize()
            if run.step % cfg.eval_every == 0 or run.step == spec.steps:
                run.evaluate()
                if bar is not None and run.history:
                    h = run.history[-1]
                    bar.set_postfix(loss=f"{h['train_loss']:.3g}", acc=f"{100 * h['test_acc']:.1f}%", refresh=False)
            if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0 and run.step < spec.steps:
                run.save(path)
    finally:
        if bar is not None:
            bar.close()
    rank_stats = run.final_stats()
    record = run.record(rank_stats) if rc.rank == 0 else None
    if cfg.checkpoint_every:
        run.save(path, done=True, record=record)
    return record


def run_job(cfg: DistConfig, out, rc: RankContext, *, resume: bool = False, progress: bool = True,
            factory=None, heartbeat=None) -> dict | None:
    """Collective: train every run of ``cfg``; rank 0 writes the report after each and returns it."""
    from . import report
    out = Path(out)
    t0 = time.perf_counter()
    records = []
    rep = None
    for i, spec in enumerate(cfg.runs):
        rec = train_run(spec, cfg, rc, out, resume=resume, progress=progress, factory=factory, heartbeat=heartbeat)
        if rc.rank == 0:
            records.append(rec)
            rep = report.build_report(cfg, records, seconds=time.perf_counter() - t0)
            rep["partial"] = i < len(cfg.runs) - 1  # until the last run: an interrupted job's report says so
            report.write_report(rep, out, plots=i == len(cfg.runs) - 1)  # tables after each run, plots at the end
    return rep
