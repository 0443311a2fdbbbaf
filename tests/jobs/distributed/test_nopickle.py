"""Nothing a peer sends is unpickled: every algorithm of the job, checkpoints and resume included,
runs on 2 gloo ranks in which unpickling of any kind raises.

Each rank is a spawned process whose first act, once multiprocessing's bootstrap has
unpickled its arguments from this process (local plumbing, not a peer message), is to
install the guard: ``pickle.loads``/``load``/``Unpickler`` (and ``_pickle``'s),
multiprocessing's ``ForkingPickler.loads`` and torch.distributed's ``_unpickler`` (what
``gather_object``, ``broadcast_object_list`` and ``scatter_object_list`` unpickle with)
are replaced by a function that records the call and raises.  The guard is then active
from before ``init_process_group`` until the process ends; nothing is unpickled in the rank
after it (its result goes back through a queue, pickled by the rank and unpickled here).
Before the job each rank checks that the guard trips on an object collective.  Checkpoints
are still written with ``torch.save`` and read with ``torch.load(weights_only=True)``,
whose own restricted unpickler is not ``pickle``'s.
"""
import datetime
import multiprocessing as mp
import queue
import traceback

import torch

from relaxtorch.jobs.distributed import parse
from relaxtorch.jobs.distributed.checkpoint import load
from relaxtorch.jobs.distributed.config import ALGORITHMS

WORLD, STEPS = 2, 4
RAW = {"dist": {"nproc": WORLD, "steps": STEPS, "eval_every": 2, "checkpoint_every": 2, "batch_size": 8,
                "momentum": 0.5},
       "runs": [{"algorithm": a, **({"momentum": 0.0} if a == "moniqua" else {})} for a in ALGORITHMS]}
TIMING = ("sim_s", "wall_s")


class Unpickled(BaseException):
    """Raised by the guard (a BaseException, so that no ``except Exception`` hides it)."""


def _install_guard() -> list[str]:
    """Make every way of unpickling in this process record the call and raise; return the record."""
    import _pickle
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.distributed.distributed_c10d as c10d

    calls: list[str] = []

    def refuse(name):
        def refused(*args, **kwargs):
            calls.append(f"{name} called at\n{''.join(traceback.format_stack(limit=12))}")
            raise Unpickled(name)
        return refused

    def refusing_class(name):
        refused = refuse(name)

        class Refused:  # modules imported later may subclass it (torch._dynamo does); using it raises
            def __init__(self, *args, **kwargs):
                refused()

            def load(self, *args, **kwargs):
                refused()
        return Refused

    for mod in (pickle, _pickle):
        mod.loads, mod.load = refuse(f"{mod.__name__}.loads"), refuse(f"{mod.__name__}.load")
        mod.Unpickler = refusing_class(f"{mod.__name__}.Unpickler")
    ForkingPickler.loads = staticmethod(refuse("ForkingPickler.loads"))
    c10d._unpickler = refusing_class("torch.distributed _unpickler")
    return calls


class _Stop(Exception):
    pass


def _job(rank, out, *, resume=False, stop_after=None):
    from relaxtorch.jobs.distributed import RankContext, run_job
    calls = [0]

    def heartbeat(step):
        calls[0] += 1
        if calls[0] == stop_after:
            raise _Stop
    try:
        run_job(parse(RAW), out, RankContext(rank, WORLD, torch.device("cpu")), resume=resume, progress=False,
                heartbeat=heartbeat)
    except _Stop:
        return "stopped"
    return "done"


def _rank(rank, port, out, results):
    try:
        calls = _install_guard()
        import torch.distributed as dist

        from relaxtorch.comm.loopback import HOST, pin_gloo_to_loopback

        torch.set_num_threads(1)
        pin_gloo_to_loopback()
        timeout = datetime.timedelta(seconds=60)
        store = dist.TCPStore(HOST, port, WORLD, is_master=False, timeout=timeout)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD, timeout=timeout)
        # the guard holds: torch's object collectives unpickle on the receiving ranks, and here they cannot
        msg = [{"from": "rank 0"}]
        try:
            dist.broadcast_object_list(msg, src=0)
            tripped = False
        except Unpickled:
            tripped = True
        assert tripped == (rank != 0) and len(calls) == (rank != 0), calls
        calls.clear()
        ends = [_job(rank, f"{out}/whole")]
        # interrupted after step 3 of every run in turn (its checkpoint is step 2), resumed each time:
        # the resumed run finishes (2 steps), the next one is stopped after 3 steps
        for k in range(len(ALGORITHMS) + 1):
            ends.append(_job(rank, f"{out}/cut", resume=k > 0, stop_after=3 if k == 0 else 2 + 3))
        dist.destroy_process_group()
        results.put((rank, ends, calls, None))
    except BaseException:  # noqa: BLE001 - reported to the test
        results.put((rank, None, None, traceback.format_exc()))


def _run_ranks(out, timeout=240.0):
    from relaxtorch.comm.loopback import loopback_store
    ctx = mp.get_context("spawn")
    store = loopback_store(WORLD, 90.0)
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, store.port, str(out), results), daemon=True) for r in range(WORLD)]
    for p in procs:
        p.start()
    got = {}
    try:
        while len(got) < WORLD:
            try:
                rank, *value = results.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"ranks {sorted(set(range(WORLD)) - set(got))} gave no result "
                                     f"within {timeout:g} s") from None
            got[rank] = value
            assert value[2] is None, f"rank {rank} failed:\n{value[2]}"
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
    return [got[r] for r in range(WORLD)]


def _same(a, b, where):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def test_no_rank_unpickles_anything_in_a_whole_job_with_checkpoints_and_resume(tmp_path):
    results = _run_ranks(tmp_path)
    for rank, (ends, calls, _) in enumerate(results):
        assert calls == [], f"rank {rank} unpickled:\n" + "\n".join(calls)
        assert ends == ["done", "stopped"] + ["stopped"] * (len(ALGORITHMS) - 1) + ["done"], ends
    import json
    whole = json.loads((tmp_path / "whole" / "report.json").read_text())
    cut = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert [r["name"] for r in whole["runs"]] == [r["name"] for r in cut["runs"]] == list(ALGORITHMS)
    for a, b in zip(whole["runs"], cut["runs"]):  # the resumed job is the uninterrupted one
        strip = [[{k: v for k, v in h.items() if k not in TIMING} for h in r["history"]] for r in (a, b)]
        assert strip[0] == strip[1] and len(strip[0]) == STEPS // 2 + 1, a["name"]
        assert [s["bytes_sent"] for s in a["rank_stats"]] == [s["bytes_sent"] for s in b["rank_stats"]]
        assert a["rank_stats"][0]["steps"] == STEPS
        ca, cb = (load(tmp_path / d / "checkpoints" / f"{a['name']}.pt") for d in ("whole", "cut"))
        assert ca["done"] and cb["done"] and len(ca["ranks"]) == WORLD
        for r, (ra, rb) in enumerate(zip(ca["ranks"], cb["ranks"])):
            for part in ("model", "optimizer", "data"):
                _same(ra[part], rb[part], f"{a['name']}.rank{r}.{part}")
