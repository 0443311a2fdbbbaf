"""``relaxtorch hogwild``: outputs, user errors (one line, exit 2), and Ctrl-C ending cleanly."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from relaxtorch.cli import main

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def test_small_run_writes_table_json_plot_models(tmp_path, capsys):
    rc = main(["hogwild", "--examples", "20000", "--features", "2000", "--nnz", "20", "--epochs", "2",
               "--workers", "2", "--signature", "D8M8G32C8", "--replication", "shared", "--out", str(tmp_path),
               "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| signature" in out and "D8M8G32C8" in out and "D32M32G32C32" in out and "vs 1 worker" in out
    report = json.loads((tmp_path / "hogwild.json").read_text())
    runs = {(r["signature"], r["workers"]) for r in report["runs"]}
    assert runs == {("D32M32G32C32", 1), ("D32M32G32C32", 2), ("D8M8G32C8", 1), ("D8M8G32C8", 2)}
    assert report["machine"]["cpu_count"] == os.cpu_count()
    assert (tmp_path / "hogwild.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(tmp_path.glob("model-*.pt"))) == 4


def test_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[hogwild]\nproblem = "digits"\nworkers = [1, 2]\nsignature = ["D32M32G32C32"]\nepochs = 2\n'
                   'replication = "shared"\n')
    assert main(["hogwild", "--config", str(cfg), "--out", str(tmp_path), "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problem"] == "digits-logistic" and len(report["runs"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--signature", "D8M7G32C8"], "Invalid signature: 'D8M7G32C8' (M7: model precision must be 8, 16 or 32 bits)"),
    (["--workers", "two"], "invalid --workers 'two'"),
    (["--problem", "mnist"], "unknown problem 'mnist'"),
    (["--problem", "libsvm:/nonexistent/x.svm"], "no such file: /nonexistent/x.svm"),
    (["--nnz", "0"], "--nnz: must be a finite number in (0, "),
])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    assert main(["hogwild", "--out", str(tmp_path), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("relaxtorch hogwild: error: ") and message in err


def test_libsvm_parse_error_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.svm"
    bad.write_text("1 1:0.5 3:1\n-1 2:0.25\n+1 4:zero\n")
    assert main(["hogwild", "--problem", f"libsvm:{bad}", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: token '4:zero': value 'zero' is not a finite number" in err


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find left-over processes")
def test_ctrl_c_stops_cleanly_and_saves_model(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
    cmd = [sys.executable, "-m", "relaxtorch.jobs.hogwild", "--examples", "100000", "--features",
           "5000", "--epochs", "400", "--workers", "2", "--signature", "D32M32G32C32", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        seen = b""
        os.set_blocking(proc.stderr.fileno(), False)
        while b"upd" not in seen:  # the progress bar of the first run is up: workers are running
            assert time.monotonic() < deadline and proc.poll() is None, seen
            seen += proc.stderr.read() or b""
            time.sleep(0.05)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends to the whole foreground group
        t0 = time.monotonic()
        proc.wait(timeout=15)
        assert time.monotonic() - t0 < 10
        os.set_blocking(proc.stderr.fileno(), True)
        seen += proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, seen
    assert b"interrupted; last consistent model saved to" in seen and b"relaxtorch hogwild: interrupted" in seen
    assert b"Traceback" not in seen
    assert (tmp_path / "partial" / "model-D32M32G32C32-w1.pt").exists()  # the interrupted job's files
    deadline = time.monotonic() + 10  # the fork server exits when it sees its parent gone
    while _alive_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive_in_group(proc.pid) == []  # no worker (or fork server) outlived the command


def _alive_in_group(pgid):
    """Live (not zombie) processes of a process group, from /proc."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(pid))
    return alive
