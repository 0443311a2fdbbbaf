"""``relaxtorch hogwild``: every option's range and the problem's memory checked before anything is built;
--out checked before training; a Ctrl-C while a finished run's loss curve is evaluated keeps its model."""
import errno
import json

import pytest

from relaxtorch.cli import main
from relaxtorch.jobs.hogwild.options import estimate_bytes


@pytest.fixture
def nothing_built(monkeypatch):
    import relaxtorch.jobs.hogwild.cli as cli

    def refuse(opts):
        raise AssertionError("the problem was built")
    monkeypatch.setattr(cli, "build_problem", refuse)


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed: must be an integer in 0..2**63-1"),
    (["--seed", str(2 ** 63)], "--seed: must be an integer in 0..2**63-1"),
    (["--lr", "inf"], "--lr: must be a finite number in (0, 1e+06], got inf"),
    (["--lr", "nan"], "--lr: must be a finite number in (0, 1e+06], got nan"),
    (["--lr", "1e308"], "--lr: must be a finite number in (0, 1e+06]"),
    (["--lam", "inf"], "--lam: must be a finite number"),
    (["--lr-decay", "nan"], "--lr-decay: must be a finite number in (0, 1]"),
    (["--model-range", "inf"], "--model-range: must be a finite number"),
    (["--nnz", "nan"], "--nnz: must be a finite number"),
    (["--skew", "nan"], "--skew: must be a finite number in [0, 4]"),
    (["--max-df", "nan"], "--max-df: must be a finite number in (0, 1]"),
    (["--density", "inf"], "--density: must be a finite number in (0, 1]"),
    (["--timeout", "nan"], "--timeout: must be a finite number"),
    (["--examples", "1000000000000"], "--examples: must be an integer in 1..2,147,483,647"),
    (["--features", "10000000000"], "--features: must be an integer in 2..2,147,483,647"),
    (["--examples", "0"], "--examples: must be an integer in 1.."),
    (["--stale-every", "3"], "--stale-every: must be a power of two"),
])
def test_out_of_range_options_are_named(tmp_path, capsys, nothing_built, argv, message):
    assert main(["hogwild", "--out", str(tmp_path / "o"), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("relaxtorch hogwild: error: ") and message in err, err


def test_a_config_value_out_of_range_names_the_file_and_key(tmp_path, capsys, nothing_built):
    (tmp_path / "c.toml").write_text("[hogwild]\nseed = -3\n")
    assert main(["hogwild", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path / 'c.toml'}: [hogwild].seed: must be an integer in 0.." in capsys.readouterr().err


@pytest.mark.parametrize("argv, option", [
    (["--examples", "200000000", "--features", "2000"], "--examples 200000000"),
    (["--features", "2000000000"], "--features 2000000000"),
    (["--problem", "matrix-completion", "--rows", "2000000000", "--cols", "2000000000"], "--rows 2000000000"),
])
def test_a_problem_too_big_for_the_memory_is_refused_before_allocating(tmp_path, capsys, nothing_built, monkeypatch,
                                                                       argv, option):
    import relaxtorch.jobs.hogwild.options as options
    monkeypatch.setattr(options, "available_memory", lambda: 8 << 30)
    assert main(["hogwild", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err and "this machine has 8.0 GiB free" in err, err


def test_the_memory_estimate_covers_the_default_problem_and_grows_with_it():
    opts = dict(problem="rcv1-like", examples=100_000, features=20_000, nnz=50.0)
    small, _ = estimate_bytes(opts)
    assert 200 << 20 < small < 2 << 30  # 5e6 non-zeros: a few hundred MiB
    assert estimate_bytes({**opts, "examples": 1_000_000})[0] > 9 * small
    assert estimate_bytes({**opts, "problem": "digits"}) is None


@pytest.mark.parametrize("kind", ["file", "read-only", "full"])
def test_a_bad_out_is_found_before_training(tmp_path, capsys, nothing_built, monkeypatch, kind):
    out = tmp_path / "o"
    if kind == "file":
        out.write_text("x")
    else:
        import relaxtorch.jobs._output as output
        code = errno.EROFS if kind == "read-only" else errno.ENOSPC

        def fail(path, *a, **k):
            raise OSError(code, os_strerror(code), str(path))
        monkeypatch.setattr(output, "open", fail, raising=False)
    assert main(["hogwild", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    want = {"file": "exists and is not a folder", "read-only": "not writable (Read-only file system)",
            "full": "not writable (No space left on device)"}[kind]
    assert err.count("\n") == 1 and f"--out {out}: {want}" in err, err


def os_strerror(code):
    import os
    return os.strerror(code)


DIGITS = ["hogwild", "--problem", "digits", "--workers", "1", "--signature", "D32M32G32C32", "--epochs", "1",
          "--no-progress"]


def test_ctrl_c_while_the_loss_curve_is_evaluated_keeps_the_model(tmp_path, capsys, monkeypatch):
    from relaxtorch.parallel.problems import DenseLinear

    def interrupted(self, model):
        raise KeyboardInterrupt
    monkeypatch.setattr(DenseLinear, "objective", interrupted)
    out = tmp_path / "o"
    assert main([*DIGITS, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    model = out / "partial" / "model-D32M32G32C32-w1.pt"
    assert f"last consistent model saved to {model}" in err, err
    assert err.strip().splitlines()[-1] == "relaxtorch hogwild: interrupted"
    from relaxtorch.parallel.shared import load_checkpoint
    assert "finished" in str(load_checkpoint(model)["meta"])


def test_a_rerun_replaces_every_file_of_the_previous_one(tmp_path, capsys):
    out = tmp_path / "o"
    assert main([*DIGITS, "--out", str(out), "--signature", "D32M32G32C32,D8M8G32C8"]) == 0
    assert main([*DIGITS, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("model-*.pt")) == ["model-D32M32G32C32-w1.pt"]  # no stale D8 model
    assert [r["signature"] for r in json.loads((out / "hogwild.json").read_text())["runs"]] == ["D32M32G32C32"]


def test_a_full_disk_while_saving_names_the_file(tmp_path, capsys, monkeypatch):
    import relaxtorch.jobs.hogwild.report as report

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(report, "atomic_write", full)
    out = tmp_path / "o"
    assert main([*DIGITS, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: cannot write hogwild.png (No space left on device)" in err, err
