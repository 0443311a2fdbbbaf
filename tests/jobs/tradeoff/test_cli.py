"""``relaxtorch tradeoff`` on bad input and faults: one line and exit 2 before any run, partial reports."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from relaxtorch.cli import main
from relaxtorch.jobs.tradeoff import load_config, plan
from relaxtorch.jobs.tradeoff.plan import load_data

BASE = '[sweep]\npairs=["logreg/breast_cancer"]\nalgorithms=["sgd"]\nprecisions=["fp32"]\nseeds=[0]\n' \
       '[data]\nmax_train=64\n[train]\nepochs=1\n'
SRC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "src")


@pytest.fixture
def no_sweep(monkeypatch):
    """Fail the test if a run starts: every error here must come before any work."""
    import relaxtorch.jobs.tradeoff as tradeoff

    def refuse(*a, **k):
        raise AssertionError("the sweep started")
    monkeypatch.setattr(tradeoff, "run_sweep", refuse)


def _run(tmp_path, toml, *argv):
    (tmp_path / "c.toml").write_text(toml)
    return main(["tradeoff", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o"), "--no-progress",
                 *argv])


@pytest.mark.parametrize("extra, key", [
    ("lr = nan", "[train].lr"), ("lr = inf", "[train].lr"), ("lr = 1e308", "[train].lr"), ("lr = -inf", "[train].lr"),
    ("weight_decay = nan", "[train].weight_decay"), ("weight_decay = inf", "[train].weight_decay"),
    ("weight_decay = 1e300", "[train].weight_decay"), ("lr_final = nan", "[train].lr_final"),
    ("swa_lr = nan", "[train].swa_lr"), ("swa_lr = 1e308", "[train].swa_lr"), ("momentum = nan", "[train].momentum"),
    ("swa_start = nan", "[train].swa_start"),
])
def test_non_finite_or_huge_hyper_parameters_are_refused_naming_the_key(tmp_path, capsys, no_sweep, extra, key):
    assert _run(tmp_path, BASE + extra + "\n") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"c.toml: {key}: must be a finite number" in err, err


def test_the_bound_of_the_step_size_is_in_the_message(tmp_path, capsys, no_sweep):
    assert _run(tmp_path, BASE.replace("[train]\n", "[models.logreg]\nlr = 2e6\n[train]\n")) == 2
    assert "[models.logreg].lr: must be a finite number in (0, 1e+06], got 2000000.0" in capsys.readouterr().err


@pytest.mark.parametrize("where, toml, argv, message", [
    ("--seeds", BASE, ["--seeds", "1180591620717411303424"], "--seeds: must be in 0..2**63-1"),
    ("--seeds", BASE, ["--seeds", str(2 ** 63)], "--seeds: must be in 0..2**63-1"),
    ("seeds", BASE.replace("seeds=[0]", "seeds=[0, 99999999999999999999]"), [],
     "[sweep].seeds: must be in 0..2**63-1"),
    ("split_seed", BASE.replace("max_train=64", "max_train=64\nsplit_seed=-5"), [], "[data].split_seed: must be in"),
    ("threads", BASE.replace("seeds=[0]", "seeds=[0]\nthreads=100000"), [], "[sweep].threads: must be in 1.."),
])
def test_seeds_and_threads_are_bounded_naming_the_option(tmp_path, capsys, no_sweep, where, toml, argv, message):
    assert _run(tmp_path, toml, *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_the_largest_seed_torch_takes_runs(tmp_path):
    assert _run(tmp_path, BASE, "--seeds", str(2 ** 63 - 1)) == 0


def test_an_empty_config_is_the_default_sweep_without_what_cannot_run(tmp_path):
    """Every key has a default: the default algorithms include svrg and halp, which need a convex
    model; on the default MLP they are dropped with the reason, not an error."""
    (tmp_path / "empty.toml").write_text("")
    cfg = load_config(tmp_path / "empty.toml")
    runs, skipped = plan(cfg, load_data(cfg))
    assert {r.algorithm for r in runs} == {"sgd", "swalp"} and {r.model for r in runs} == {"mlp"}
    assert {s["reason"] for s in skipped if s["algorithm"] == "svrg"} == {
        "svrg needs a convex model (logreg), not 'mlp'"}


def test_an_algorithm_the_file_names_that_runs_nowhere_is_still_an_error(tmp_path, capsys):
    toml = BASE.replace('pairs=["logreg/breast_cancer"]', 'pairs=["mlp/digits"]').replace('["sgd"]', '["sgd", "svrg"]')
    assert _run(tmp_path, toml) == 2
    assert "[sweep].algorithms: 'svrg' would run nowhere" in capsys.readouterr().err


@pytest.mark.parametrize("make, message", [
    (lambda o: o.write_text("a file"), "exists and is not a folder"),
    (lambda o: None, "not writable"),
])
def test_a_bad_out_is_found_before_any_run(tmp_path, capsys, no_sweep, monkeypatch, make, message):
    out = tmp_path / "o"
    make(out)
    if message == "not writable":  # what a read-only mount does (root ignores permission bits)
        import relaxtorch.jobs._output as output
        real = open

        def read_only(path, *a, **k):
            if ".relaxtorch-probe-" in str(path):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real(path, *a, **k)
        monkeypatch.setattr(output, "open", read_only, raising=False)
    assert _run(tmp_path, BASE) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {out}: {message}" in err, err


def test_a_full_disk_says_so_and_leaves_the_previous_report_whole(tmp_path, capsys, monkeypatch):
    assert _run(tmp_path, BASE) == 0
    out = tmp_path / "o"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import relaxtorch.jobs.tradeoff.report as report
    real = report.atomic_write

    def full(path, data):
        if str(path).endswith("pareto.png"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)
    monkeypatch.setattr(report, "atomic_write", full)
    capsys.readouterr()
    assert _run(tmp_path, BASE) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: cannot write pareto.png (No space left on device)" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "partial"} == before  # nothing mixed
    assert json.loads((out / "partial" / "report.json").read_text())["runs_finished"] == 1


def test_ctrl_c_keeps_the_finished_runs_in_a_partial_report(tmp_path):
    toml = BASE.replace("seeds=[0]", f"seeds={list(range(60))}").replace("epochs=1", "epochs=3")
    (tmp_path / "c.toml").write_text(toml)
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text('{"old": true}')  # a previous run's report stays as it was
    env = {**os.environ, "PYTHONPATH": os.path.abspath(SRC)}
    p = subprocess.Popen([sys.executable, "-m", "relaxtorch.jobs.tradeoff", "--config", str(tmp_path / "c.toml"),
                          "--out", str(out), "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob(".relaxtorch-staging-*/report.json")):  # the first run has finished
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == "relaxtorch tradeoff: interrupted"
    assert f"the unfinished run's files are in {out / 'partial'}" in err
    partial = json.loads((out / "partial" / "report.json").read_text())
    assert partial["partial"] is True and partial["runs_planned"] == 60
    assert 1 <= partial["runs_finished"] == len(partial["runs"]) < 60
    rows = (out / "partial" / "report.csv").read_text().count("\n") - 1  # written just before report.json
    assert rows in (partial["runs_finished"], partial["runs_finished"] + 1)
    assert json.loads((out / "report.json").read_text()) == {"old": True}


def test_a_complete_report_is_not_partial(tmp_path):
    assert _run(tmp_path, BASE) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["partial"] is False and report["runs_finished"] == report["runs_planned"] == 1
