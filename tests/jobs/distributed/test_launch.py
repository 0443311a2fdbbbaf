"""The launcher: local ranks end to end, a failing or hanging rank named within the timeout,
Ctrl-C ending cleanly, and ``torchrun -m relaxtorch.jobs.distributed``.  Each test starts fresh processes."""
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relaxtorch.cli import main
from relaxtorch.jobs.distributed import RankFailure, launch_local, parse
from relaxtorch.jobs.distributed.launch import SETTLE_S
from tests.jobs.distributed import _faults

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


def _cfg(timeout, algorithms=("allreduce",), steps=6):
    return parse({"dist": {"nproc": 2, "steps": steps, "eval_every": 3, "checkpoint_every": 0, "batch_size": 8,
                           "timeout": timeout}, "runs": [{"algorithm": a} for a in algorithms]})


def test_cli_runs_local_ranks_and_prints_the_table(tmp_path, capsys):
    before = set(mp.active_children())  # other test modules may keep a pool of ranks alive
    rc = main(["dist", "--nproc", "2", "--algorithm", "allreduce,qsgd", "--steps", "4", "--eval-every", "2",
               "--batch-size", "8", "--out", str(tmp_path), "--no-progress", "--timeout", "30"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| run" in out and "| allreduce" in out and "| qsgd" in out and "2 ranks, link 500Mbps,1ms" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["allreduce", "qsgd"]
    assert report["config"]["nproc"] == 2 and all(r["world"] == 2 for r in report["runs"])
    assert (tmp_path / "checkpoints" / "qsgd.pt").exists()
    assert set(mp.active_children()) <= before  # no rank of this job is left behind


@pytest.mark.parametrize("factory, timeout, reason", [
    (_faults.raising, 30, "ValueError: injected fault"),
    (_faults.hanging, 6, f"stopped responding after step {_faults.FAULT_STEP - 1}"),
], ids=["raises", "hangs"])
def test_a_failing_rank_is_named_within_the_timeout(factory, timeout, reason, tmp_path, monkeypatch):
    log = tmp_path / "fault_time"
    monkeypatch.setenv("RELAXTORCH_TEST_FAULT_LOG", str(log))
    before = set(mp.active_children())
    with pytest.raises(RankFailure) as info:
        launch_local(_cfg(timeout), tmp_path / "out", progress=False, factory=factory)
    reacted = time.time() - float(log.read_text())
    msg = str(info.value)
    assert info.value.rank == _faults.FAULT_RANK and msg.startswith(f"rank {_faults.FAULT_RANK} failed: "), msg
    assert reason in msg and "\n" not in msg
    # a dead rank is noticed at once; a hung one when the others' collectives time out
    assert reacted < (timeout if factory is _faults.hanging else 0) + SETTLE_S + 10, reacted
    if factory is _faults.raising:
        assert "injected fault" in info.value.traceback and "Traceback" in info.value.traceback
    assert set(mp.active_children()) <= before  # every rank stopped


class _Proc:
    def __init__(self, exitcode):
        self.exitcode = exitcode


def _err(kind, t, type_="RuntimeError", message="Connection reset by peer"):
    return {"kind": kind, "time": t, "type": type_, "message": message, "traceback": "tb"}


@pytest.mark.parametrize("codes, errors, steps, expect", [
    # a rank that died without a word (os._exit, a signal) caused the others' connection errors
    ([1, 7, 1], {0: _err("comm", 1.0), 2: _err("comm", 1.1)}, [5, 5, 5],
     (1, "exited with code 7 without reporting an error")),
    ([1, -9], {0: _err("comm", 1.0)}, [5, 5], (1, "killed by signal SIGKILL")),
    # an error of its own beats an earlier communication error of another rank
    ([1, 1], {0: _err("comm", 1.0), 1: _err("error", 2.0, "ValueError", "bad")}, [3, 3], (1, "ValueError: bad")),
    # two ranks with errors of their own: the first one
    ([1, 1], {0: _err("error", 2.0, "KeyError", "'x'"), 1: _err("error", 1.5, "ValueError", "v")}, [3, 3],
     (1, "ValueError: v")),
    # the others timed out while this one is still alive: it hung (the fewest steps)
    ([1, None, None], {0: _err("comm", 1.0, message="Timed out")}, [9, 4, 9], (1, "stopped responding after step 4")),
    # only communication errors: the first one
    ([1, 1], {0: _err("comm", 2.0), 1: _err("comm", 1.0, message="Timed out waiting")}, [3, 3],
     (1, "RuntimeError: Timed out waiting")),
])
def test_blame_names_the_rank_that_caused_the_failure(codes, errors, steps, expect):
    from relaxtorch.jobs.distributed.launch import _blame
    failure = _blame([_Proc(c) for c in codes], errors, steps, [0.0] * len(codes), {})
    assert (failure.rank, failure.reason.split(" (")[0]) == expect
    assert str(failure) == f"rank {expect[0]} failed: {failure.reason}"


@pytest.mark.parametrize("exc, comm", [
    (RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:2990: Connection reset by peer"), True),
    (RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 3000ms for recv operation"), True),
    (RuntimeError("CUDA out of memory"), False), (ValueError("Connection reset"), False), (KeyError("x"), False),
])
def test_communication_errors_are_told_apart(exc, comm):
    from relaxtorch.jobs.distributed.launch import is_comm_error
    assert is_comm_error(exc) is comm


def test_cli_turns_a_rank_failure_into_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    import relaxtorch.jobs.distributed.launch as launch

    def fail(*args, **kwargs):
        raise RankFailure(3, "ValueError: boom", "Traceback (most recent call last):\nValueError: boom\n")
    monkeypatch.setattr(launch, "launch_local", fail)
    rc = main(["dist", "--nproc", "4", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    tb = tmp_path / "partial" / "rank3-error.txt"  # the failed job's files are in OUT/partial
    lines = err.splitlines()
    assert rc == 1 and lines[-1] == f"relaxtorch dist: rank 3 failed: ValueError: boom (traceback: {tb})"
    assert lines[0].startswith("relaxtorch dist: the unfinished run's files are in") and len(lines) == 2
    assert "ValueError: boom" in tb.read_text()


def _session_pids(sid: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(d))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find left-over processes")
def test_ctrl_c_ends_every_rank_cleanly(tmp_path):
    cmd = [sys.executable, "-m", "relaxtorch.jobs.distributed", "--nproc", "2", "--algorithm", "allreduce", "--steps",
           "1000000", "--eval-every", "100000", "--checkpoint-every", "2", "--out", str(tmp_path), "--no-progress"]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".relaxtorch-staging-*/checkpoints/allreduce.pt")):  # staged until the end
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process of the group
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == "relaxtorch dist: interrupted" and "Traceback" not in err, err
    assert f"the unfinished run's files are in {tmp_path / 'partial'}" in err
    assert (tmp_path / "partial" / "checkpoints" / "allreduce.pt").exists()  # what --resume continues from
    assert not list(tmp_path.glob(".relaxtorch-staging-*"))
    time.sleep(0.5)
    assert _session_pids(p.pid) == []


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_runs_the_same_job(tmp_path):
    """The documented one-machine form: the c10d rendezvous on a loopback endpoint (``--standalone``
    would pick its port for us, but it is no more private: torchrun binds every interface either way)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    cmd = [str(torchrun), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_loopback_port()}",
           "--nproc-per-node", "2", "-m", "relaxtorch.jobs.distributed", "--algorithm",
           "allreduce", "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--out", str(tmp_path),
           "--no-progress", "--timeout", "60"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("| allreduce") == 1  # rank 0 alone prints the table
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["nproc"] == 2 and report["runs"][0]["world"] == 2
    assert [h["step"] for h in report["runs"][0]["history"]] == [0, 2, 4]
