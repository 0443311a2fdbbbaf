"""The training loop on a 2-rank gloo world: against a single-process reference, the report, resume.

The ranks are a pool kept alive for the module (tests/comm/_world.py), and each test
runs ``run_job`` on them directly, so the launcher's process start-up is paid once
(the launcher itself is tested in test_launch.py).
"""
import csv
import json
import math

import pytest
import torch
from torch.nn import functional as F

from relaxtorch.comm import parse_link
from relaxtorch.data import load_dataset
from relaxtorch.jobs.distributed import BatchSchedule, RankContext, build_model, parse, run_job
from relaxtorch.jobs.distributed.checkpoint import load
from relaxtorch.jobs.distributed.report import FILES
from relaxtorch.jobs.distributed.train import simulated_seconds
from tests.comm._world import World

WORLD = 2
TIMING = ("sim_s", "wall_s", "sort_s")


@pytest.fixture(scope="module")
def world():
    w = World(WORLD, timeout=60)
    yield w
    w.close()


class _Stop(Exception):
    pass


def _job(rank, size, raw, out, resume=False, stop_after=None):
    """Run the job of the TOML dict ``raw``; with ``stop_after``, raise on every rank after that many steps."""
    cfg = parse(raw)
    calls = [0]

    def heartbeat(step):
        calls[0] += 1
        if stop_after is not None and calls[0] == stop_after:
            raise _Stop
    try:
        return run_job(cfg, out, RankContext(rank, size, torch.device("cpu")), resume=resume, progress=False,
                       heartbeat=heartbeat)
    except _Stop:
        return "stopped"


def _report(world, raw, out, **kw):
    results = world.run(_job, raw, str(out), **kw)
    return results[0]


def _reference(model, opt, ds, scheds, steps, history, losses, observe=False):
    """One process: the ranks' minibatch gradients averaged by hand, evaluated every 4 steps."""
    def evaluate(step):
        with torch.no_grad():
            out = model(ds.X_test)
            train_loss = float(F.cross_entropy(model(ds.X_train), ds.y_train))
        history.append((step, sum(losses) / len(losses) if losses else None, train_loss,
                        float(F.cross_entropy(out, ds.y_test)), float((out.argmax(1) == ds.y_test).double().mean())))
        losses.clear()
    evaluate(0)
    for t in range(steps):
        grads = []
        for s in scheds:
            idx = s.indices(t)
            if observe:  # a balancing order sees the step's per-example gradients first
                from relaxtorch.order import per_example_grads
                s.observe(t, per_example_grads(model, F.cross_entropy, ds.X_train[idx], ds.y_train[idx])[1])
            model.zero_grad()
            loss = F.cross_entropy(model(ds.X_train[idx]), ds.y_train[idx])
            loss.backward()
            losses.append(float(loss.detach()))
            grads.append([p.grad.clone() for p in model.parameters()])
        for p, *gs in zip(model.parameters(), *grads):
            p.grad = sum(gs) / WORLD
        opt.step()
        if (t + 1) % 4 == 0:
            evaluate(t + 1)


def test_allreduce_matches_single_process_sgd_on_the_averaged_gradient(world, tmp_path):
    steps, lr, momentum = 12, 0.1, 0.9
    raw = {"dist": {"steps": steps, "lr": lr, "momentum": momentum, "batch_size": 16, "eval_every": 4,
                    "checkpoint_every": 6, "seed": 3, "link": "500Mbps,1ms"}, "runs": [{"algorithm": "allreduce"}]}
    rep = _report(world, raw, tmp_path)
    run = rep["runs"][0]
    # the reference: one process, the two ranks' minibatch gradients averaged by hand
    ds = load_dataset("digits", seed=3)
    model = build_model("mlp", 64, 10, seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    scheds = [BatchSchedule(ds.y_train, WORLD, r, 16, seed=3) for r in range(WORLD)]
    history, losses = [], []
    # The ranks run one intra-op thread each (tests/comm/_world.py); so does the reference, so that
    # both take the same BLAS and reduction paths on whatever CPU this runs on, and the accuracy
    # (an argmax, which no tolerance can bound) is compared exactly. Two ranks' gradients sum to the
    # same bits in either order (a + b == b + a), and halving is exact.
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _reference(model, opt, ds, scheds, steps, history, losses)
    finally:
        torch.set_num_threads(saved_threads)
    got = [(h["step"], h["batch_loss"], h["train_loss"], h["test_loss"], h["test_acc"]) for h in run["history"]]
    assert [g[0] for g in got] == [h[0] for h in history] == [0, 4, 8, 12]
    for g, h in zip(got, history):
        assert g[4] == h[4]
        assert math.isclose(g[2], h[2], rel_tol=1e-5) and math.isclose(g[3], h[3], rel_tol=1e-5)
        assert g[1] is h[1] is None or math.isclose(g[1], h[1], rel_tol=1e-5)
    ck = load(tmp_path / "checkpoints" / "allreduce.pt")
    assert ck["done"] and ck["step"] == steps and len(ck["ranks"]) == WORLD
    for r in range(WORLD):
        for (name, p) in model.state_dict().items():
            torch.testing.assert_close(ck["ranks"][r]["model"][name], p, rtol=1e-5, atol=1e-6)
    # bytes: a ring all-reduce of P float32 sends 2 (n - 1) / n * 4P bytes per rank; the link model's time
    s = run["summary"]
    assert s["bytes_per_step"] == 2 * (WORLD - 1) / WORLD * 4 * s["params"] == 4 * 9610
    assert s["compression_ratio"] == 1.0 and s["vs_allreduce"] == 1.0 and s["acc_vs_allreduce_pp"] == 0.0
    link = parse_link("500Mbps,1ms")
    assert math.isclose(s["sim_comm_step_s"], link.seconds(s["bytes_per_step"], s["messages_per_step"]), rel_tol=1e-9)
    assert s["sim_step_s"] >= s["sim_comm_step_s"] + s["compute_step_s"] + s["compress_step_s"] - 1e-12
    # every rank sends the same, so the link adds exactly its time to the unlimited-link step
    assert math.isclose(s["sim_step_s"] - s["sim_unlimited_step_s"], s["sim_comm_step_s"], rel_tol=1e-9)
    assert s["link_slowdown"] == s["sim_step_s"] / s["sim_unlimited_step_s"] > 1
    assert s["slowdown"] == s["link_slowdown"]  # its own float32 all-reduce run is the baseline
    assert s["consensus"] == 0.0


def test_report_holds_every_run_with_its_files(world, tmp_path):
    raw = {"dist": {"steps": 8, "eval_every": 4, "checkpoint_every": 0, "batch_size": 8, "topology": "ring"},
           "runs": [{"algorithm": "allreduce"}, {"algorithm": "cocktail"}, {"algorithm": "sign-ef"},
                    {"algorithm": "dpsgd", "name": "dpsgd-label", "partition": "label", "label_skew": 1.0}]}
    rep = _report(world, raw, tmp_path)
    names = ["allreduce", "cocktail", "sign-ef", "dpsgd-label"]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert [r["name"] for r in on_disk["runs"]] == [r["name"] for r in rep["runs"]] == names
    with open(tmp_path / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == names and float(rows[0]["bytes_per_step"]) == 4 * 9610
    with open(tmp_path / "history.csv", newline="") as f:
        hist = list(csv.DictReader(f))
    assert [(h["run"], int(h["step"])) for h in hist] == [(n, s) for n in names for s in (0, 4, 8)]
    for name in FILES:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" if name.endswith(".png") else data
    assert not (tmp_path / "checkpoints").exists()
    by = {r["name"]: r for r in rep["runs"]}
    for name, r in by.items():
        s = r["summary"]
        assert s["steps"] == 8 and len(r["rank_stats"]) == WORLD and r["world"] == WORLD
        assert 0 < s["bytes_per_step"] and s["test_acc"] > 0.2 and s["sim_step_s"] >= s["sim_comm_step_s"]
        assert 0 < s["sim_unlimited_step_s"] <= s["sim_step_s"]
        cum = [h["bytes_per_worker"] for h in r["history"]]
        assert cum[0] == 0 and cum[-1] == pytest.approx(8 * s["bytes_per_step"])
        assert [h["sim_s"] for h in r["history"]] == sorted(h["sim_s"] for h in r["history"])
    assert by["cocktail"]["overlap"] and by["cocktail"]["summary"]["vs_allreduce"] > 10
    base = by["allreduce"]["summary"]["sim_unlimited_step_s"]
    assert by["cocktail"]["summary"]["slowdown"] == by["cocktail"]["summary"]["sim_step_s"] / base
    assert by["sign-ef"]["summary"]["compression_ratio"] > 10
    assert by["sign-ef"]["summary"]["consensus"] == 0.0  # data-parallel ranks hold one model
    d = by["dpsgd-label"]
    assert d["evaluated"] == "average" and by["allreduce"]["evaluated"] == "rank 0"
    assert d["summary"]["consensus"] > 0 and d["spec"]["partition"] == "label"


def test_simulated_time_takes_the_slowest_rank_and_overlap():
    # t[rank, step, (compute, compress, simulated comm, real comm, wall)]
    t = torch.tensor([[[1.0, 0.5, 2.0, 9, 9], [3.0, 0.0, 1.0, 9, 9]],
                      [[2.0, 0.0, 0.5, 9, 9], [1.0, 1.0, 4.0, 9, 9]]], dtype=torch.float64)
    assert simulated_seconds(t, overlap=False) == 3.5 + 6.0  # max(1.5 + 2, 2 + .5) + max(3 + 1, 1 + 1 + 4)
    # by hand: row 0 arrives at 0 + 2: clocks max(1, 2) + .5 = 2.5 and max(2, 2) + 0 = 2; last 2.5;
    # row 1 arrives at 2.5 + 4 = 6.5: clocks max(5.5, 6.5) + 0 = 6.5 and max(3, 6.5) + 1 = 7.5
    assert simulated_seconds(t, overlap=True) == 7.5
    assert simulated_seconds(t[:, :0], overlap=True) == simulated_seconds(t[:, :0], overlap=False) == 0.0


def test_simulated_time_of_an_overlapping_run_lets_ranks_take_turns_being_slow():
    """Ranks slow on alternate steps: a synchronous step waits for the slow one every step
    (2 per step), an overlapping run only for the slowest total (1.5 per step), never below
    any rank's own work; with one rank it is that rank's work plus what the link did not hide."""
    c = torch.tensor([[2.0, 1.0] * 4, [1.0, 2.0] * 4], dtype=torch.float64)
    t = torch.zeros(2, 8, 5, dtype=torch.float64)
    t[..., 0] = c
    assert simulated_seconds(t, overlap=False) == 16.0
    assert simulated_seconds(t, overlap=True) == 12.0 == float(c.sum(1).max())
    one = torch.zeros(1, 3, 5, dtype=torch.float64)
    one[0, :, 0], one[0, :, 1], one[0, :, 2] = torch.tensor([3.0, 3.0, 0.0]), 1.0, torch.tensor([0.0, 2.0, 5.0])
    # row 1's exchange (2 s) hides under 3 s of compute; the last (5 s, nothing to hide it) shows: 4 + 4 + 5 + 1
    assert simulated_seconds(one, overlap=True) == 14.0
    assert simulated_seconds(one, overlap=False) == 4 + 6 + 6


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _assert_same_tree(a, b, where="ck"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def test_resume_continues_bit_for_bit(world, tmp_path):
    raw = {"dist": {"steps": 10, "eval_every": 2, "checkpoint_every": 4, "batch_size": 8, "momentum": 0.5},
           "runs": [{"algorithm": "cocktail"}, {"algorithm": "sign-ef"}, {"algorithm": "detag", "momentum": 0.0}]}
    whole = _report(world, raw, tmp_path / "whole")
    # interrupted in the middle of the second run (after step 7; its last checkpoint is step 4)
    assert _report(world, raw, tmp_path / "cut", stop_after=10 + 7) == "stopped"
    assert load(tmp_path / "cut" / "checkpoints" / "cocktail.pt")["done"]
    assert load(tmp_path / "cut" / "checkpoints" / "sign-ef.pt")["step"] == 4
    assert not (tmp_path / "cut" / "checkpoints" / "detag.pt").exists()
    resumed = _report(world, raw, tmp_path / "cut", resume=True)
    for a, b in zip(whole["runs"], resumed["runs"]):
        assert a["name"] == b["name"] and _strip(a["history"]) == _strip(b["history"])
        assert [s["bytes_sent"] for s in a["rank_stats"]] == [s["bytes_sent"] for s in b["rank_stats"]]
        ca = load(tmp_path / "whole" / "checkpoints" / f"{a['name']}.pt")
        cb = load(tmp_path / "cut" / "checkpoints" / f"{a['name']}.pt")
        for ra, rb in zip(ca["ranks"], cb["ranks"]):
            _assert_same_tree(ra["model"], rb["model"], f"{a['name']}.model")
            _assert_same_tree(ra["optimizer"], rb["optimizer"], f"{a['name']}.optimizer")
    # a checkpoint of other settings is refused, on every rank, naming what differs
    raw["runs"][1]["lr"] = 0.2
    with pytest.raises(AssertionError, match=r"written for different settings \(lr\)"):
        _report(world, raw, tmp_path / "cut", resume=True)


def _overlapped_totals(rank, size, out):
    from relaxtorch.jobs.distributed.train import train_run
    cfg = parse({"dist": {"steps": 4, "eval_every": 100, "checkpoint_every": 0, "link": "10Mbps,10ms"},
                 "runs": [{"algorithm": "cocktail", "overlap": True}]})
    rec = train_run(cfg.runs[0], cfg, RankContext(rank, size, torch.device("cpu")), out, progress=False)
    if rank != 0:
        return None
    return rec["totals"]["simulated_comm_s"], [s["simulated_comm_s"] for s in rec["rank_stats"]]


def test_the_last_overlapped_exchange_is_in_the_simulated_time(world, tmp_path):
    """With overlap the final exchange completes in synchronize(), after the last step: its link
    time must be in the totals as it is in every rank's own counters (4 exchanges, not 3)."""
    totals, per_rank = world.run(_overlapped_totals, str(tmp_path))[0]
    assert totals > 0
    assert math.isclose(totals, sum(per_rank) / len(per_rank), rel_tol=1e-9), (totals, per_rank)


def test_timing_clock_is_cpu_time_only_when_ranks_share_cores(monkeypatch):
    import os
    import time

    from relaxtorch.jobs.distributed.train import timing_clock
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert timing_clock(cores) is time.perf_counter  # one core per rank
    assert timing_clock(cores + 1) is time.thread_time
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores + 1))
    assert timing_clock() is time.thread_time
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert timing_clock(cores // 2 + 1) is time.thread_time  # two threads per rank fill the cores


def test_a_balancing_order_matches_the_single_process_reference(world, tmp_path):
    """order = "pair" on breast_cancer (7 steps an epoch): the ranks' orders follow their per-example
    gradients, as the one-process loop with the same schedules observed by hand."""
    steps, lr = 20, 0.05
    raw = {"dist": {"steps": steps, "lr": lr, "batch_size": 32, "eval_every": 4, "checkpoint_every": 0,
                    "seed": 2, "data": "breast_cancer", "order": "pair"}, "runs": [{"algorithm": "allreduce"}]}
    run = _report(world, raw, tmp_path, timeout=240)["runs"][0]
    ds = load_dataset("breast_cancer", seed=2)
    model = build_model("mlp", ds.n_features, ds.n_classes, seed=2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    d = sum(p.numel() for p in model.parameters())
    scheds = [BatchSchedule(ds.y_train, WORLD, r, 32, seed=2, order="pair", grad_dim=d) for r in range(WORLD)]
    assert scheds[0].steps_per_epoch == 7
    history, losses = [], []
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _reference(model, opt, ds, scheds, steps, history, losses, observe=True)
    finally:
        torch.set_num_threads(saved_threads)
    # the balanced epoch differs from the first (random) one
    assert not torch.equal(scheds[0].indices(16), BatchSchedule(ds.y_train, WORLD, 0, 32, seed=2).indices(16))
    got = [(h["step"], h["train_loss"], h["test_acc"]) for h in run["history"]]
    assert [g[0] for g in got] == [h[0] for h in history]
    for g, h in zip(got, history):
        assert g[2] == h[4] and math.isclose(g[1], h[2], rel_tol=1e-5)
    s = run["summary"]
    assert s["order"] == "pair" and s["sort_step_s"] > 0 and s["order_bytes"] > 8 * d


def test_cdgrab_runs_through_the_job_and_resumes_bit_for_bit(world, tmp_path):
    raw = {"dist": {"steps": 20, "eval_every": 4, "checkpoint_every": 6, "batch_size": 32, "lr": 0.05,
                    "data": "breast_cancer", "order": "cdgrab"},
           "runs": [{"algorithm": "allreduce"}, {"algorithm": "allreduce", "name": "allreduce-rr", "order": "rr"}]}
    whole = _report(world, raw, tmp_path / "whole", timeout=240)
    assert _report(world, raw, tmp_path / "cut", stop_after=9, timeout=240) == "stopped"  # its last checkpoint: step 6
    resumed = _report(world, raw, tmp_path / "cut", resume=True, timeout=240)
    a, b = whole["runs"][0], resumed["runs"][0]
    assert _strip(a["history"]) == _strip(b["history"])
    ca, cb = (load(tmp_path / p / "checkpoints" / "allreduce.pt") for p in ("whole", "cut"))
    for ra, rb in zip(ca["ranks"], cb["ranks"]):
        _assert_same_tree(ra["model"], rb["model"], "model")
        _assert_same_tree(ra["order"]["state"], rb["order"]["state"], "order")
    # every rank ends with the same shared running sum (one all-gather per step keeps them equal)
    assert torch.equal(ca["ranks"][0]["order"]["state"]["buffers"]["s"], ca["ranks"][1]["order"]["state"]["buffers"]["s"])
    s, rr = a["summary"], whole["runs"][1]["summary"]
    assert s["order"] == "cdgrab" and s["order_bytes"] > 0 and s["sort_step_s"] > 0
    assert rr["order"] == "rr" and rr["sort_step_s"] == 0 and rr["order_bytes"] == 0
    assert s["bytes_per_step"] == rr["bytes_per_step"]  # the order's all-gather is not the algorithm's traffic
    from relaxtorch.jobs.distributed.report import format_summary
    table = format_summary(whole)
    assert "order" in table.splitlines()[0] and "cdgrab" in table and "sort ms/step" in table
