"""The dist job on bad values and bad files: non-finite or huge settings, damaged checkpoints (rank 0 is
named as their reader, torch's advice never shown), a full disk, resume through OUT/partial, torchrun."""
import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from relaxtorch.cli import main
from relaxtorch.jobs.distributed import checkpoint as ck
from tests.jobs.distributed.test_launch import ENV, _free_loopback_port


@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "--lr: must be a finite number"),
    (["--lr", "1e300"], "--lr: must be a finite number in (0, 1e+06], got 1e+300"),
    (["--seed", str(2 ** 63)], "--seed: must be in 0..2**63-1"),
    (["--link", "1e400Mbps,1ms"], "--link: Invalid link: '1e400Mbps,1ms' (bandwidth '1e400mbps' is too large"),
    (["--link=-5Mbps"], "--link: Invalid link: '-5Mbps' (bandwidth '-5mbps' must be > 0)"),
    (["--link", "5Mbps,nanms"], "(latency 'nanms' is not a number)"),
    (["--link="], "--link: Invalid link: '' (empty"),
])
def test_bad_values_on_the_command_line(tmp_path, capsys, argv, message):
    assert main(["dist", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("toml, message", [
    ("[dist]\nweight_decay = 1e300\n", "[dist].weight_decay: must be a finite number in [0, 1e+06]"),
    ("[dist]\nlr = 1e7\n", "[dist].lr: must be a finite number in (0, 1e+06]"),
    ("[dist]\nthreads = 100000\n", "[dist].threads: must be in 0.."),
    ("[dist]\nseed = -1\n", "[dist].seed: must be in 0..2**63-1"),
    ('[[runs]]\nalgorithm = "allreduce"\nlink = "nanMbps"\n', "[[runs]][1].link: Invalid link: 'nanMbps' (bandwidth"),
])
def test_bad_values_in_the_config(tmp_path, capsys, toml, message):
    (tmp_path / "c.toml").write_text(toml)
    assert main(["dist", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def _good_checkpoint(path):
    ck.save_atomic({"version": ck.VERSION, "run": "allreduce", "ranks": [{"x": torch.zeros(2)}] * 2}, path)


class _Evil:
    def __reduce__(self):
        return (print, ("ran code",))


@pytest.mark.parametrize("make, reason", [
    (lambda p: (_good_checkpoint(p), p.write_bytes(p.read_bytes()[:300])), "truncated zip archive (EOF"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(bytes(range(256)) * 8), "not a torch.save zip archive"),
    (lambda p: torch.save({"version": 1, "x": _Evil()}, p), "holds objects other than tensors and plain values"),
    (lambda p: torch.save({"hello": 1}, p), "not a relaxtorch dist checkpoint (version 1)"),
])
def test_damaged_checkpoints_say_what_is_wrong_and_name_rank_0(tmp_path, make, reason):
    p = tmp_path / "allreduce.pt"
    make(p)
    why = ck._read(p, 2)
    assert isinstance(why, str) and why.startswith("checkpoint read by rank 0: ") and reason in why, why
    assert "weights_only" not in why and "Re-running" not in why
    assert ck.check(p, 2) == why


def test_only_rank_0_is_blamed_for_a_checkpoint_every_rank_reports():
    from relaxtorch.jobs.distributed.launch import _echo
    e = ck.CheckpointError("checkpoint read by rank 0: x.pt: empty file")
    assert not _echo(e, 0) and _echo(e, 1) and _echo(e, 3)
    assert not _echo(ValueError("a real error on rank 2"), 2)


def test_a_full_disk_names_the_file_not_a_serializer_error(tmp_path, monkeypatch):
    import relaxtorch._files as files
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: _Full(fd))
    with pytest.raises(OSError) as info:
        ck.save_atomic({"x": torch.zeros(1000)}, tmp_path / "c.pt")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "c.pt")
    from relaxtorch.jobs.distributed.launch import _message
    assert _message(info.value) == f"No space left on device: {tmp_path / 'c.pt'}"
    assert not list(tmp_path.iterdir())  # no temporary file left


class _Full:
    def __init__(self, fd):
        import os
        os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


ARGS = ["dist", "--nproc", "2", "--algorithm", "allreduce", "--steps", "4", "--eval-every", "2",
        "--checkpoint-every", "2", "--batch-size", "8", "--no-progress"]


def test_resume_reads_the_interrupted_jobs_checkpoints_from_partial(tmp_path, capsys):
    out = tmp_path / "o"
    assert main([*ARGS, "--out", str(out)]) == 0
    first = json.loads((out / "report.json").read_text())
    (out / "partial").mkdir()
    shutil.move(out / "checkpoints", out / "partial" / "checkpoints")  # what an interrupted job leaves
    (out / "partial" / "checkpoints" / "allreduce.pt").write_bytes(b"")
    assert main([*ARGS, "--out", str(out), "--resume"]) == 2  # checked before any rank starts
    assert "--resume: " in capsys.readouterr().err and (out / "partial").exists()
    shutil.rmtree(out / "partial")
    assert main([*ARGS, "--out", str(out)]) == 0
    first = json.loads((out / "report.json").read_text())
    (out / "partial").mkdir()
    shutil.move(out / "checkpoints", out / "partial" / "checkpoints")
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["runs"][0]["history"] == first["runs"][0]["history"]  # the finished run, from its checkpoint
    assert (out / "checkpoints" / "allreduce.pt").exists() and not (out / "partial").exists()


def test_torchrun_user_errors_print_relaxtorchs_line_first_and_no_rank_traceback(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    cmd = [str(torchrun), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_loopback_port()}",
           "--nproc-per-node", "2", "-m", "relaxtorch.jobs.distributed", "--algorithm", "bogus",
           "--out", str(tmp_path / "o"), "--no-progress"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("W") and ln.strip()]
    assert lines[0].startswith("relaxtorch dist: error: --algorithm: unknown algorithm 'bogus'"), r.stderr
    assert r.stderr.count("relaxtorch dist: error") == 1  # rank 0 alone speaks
    # torchrun's own summary follows (it always prints one after a non-zero exit), but no rank's traceback
    assert "relaxtorch/jobs" not in r.stderr and "error_file: <N/A>" in r.stderr
