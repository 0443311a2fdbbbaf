"""``relaxtorch hogwild --replication shared,per-worker``: runs, report fields, one-line errors."""
import json

import pytest

from relaxtorch.cli import main


def test_replication_runs_table_and_json(tmp_path, capsys):
    rc = main(["hogwild", "--examples", "20000", "--features", "2000", "--nnz", "20", "--epochs", "2",
               "--signature", "D8M8G32C8", "--replication", "shared,per-worker", "--sync-every", "1000",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "per-worker/1000" in out and "s to seq loss" in out and "in sync" in out
    runs = json.loads((tmp_path / "hogwild.json").read_text())["runs"]
    got = {(r["signature"], r["workers"], r["replication"]) for r in runs}
    assert got == {(s, n, rp) for s in ("D32M32G32C32", "D8M8G32C8") for n, rp in
                   ((1, "shared"), (2, "shared"), (2, "per-worker"))}
    pw = [r for r in runs if r["replication"] == "per-worker"]
    assert all(r["sync_every"] == 1000 and r["sync"]["syncs"] >= 2 * 2 * 10 for r in pw)
    assert {r["sync"]["accumulator"] for r in pw} == {"float32", "FixedPoint(wl=16, fl=13)"}
    seq = next(r for r in runs if r["workers"] == 1 and r["signature"] == "D32M32G32C32")
    assert seq["time_to_seq_loss"] is not None and seq["time_to_seq_loss"] > 0  # its last snapshot
    assert len(list(tmp_path.glob("model-*-per-worker.pt"))) == 2


@pytest.mark.parametrize("argv, message", [
    (["--replication", "per-core"], "invalid --replication 'per-core': expected shared and/or per-worker"),
    (["--replication", ""], "invalid --replication ''"),
    (["--sync-every", "0"], "invalid --sync-every 0: must be an integer >= 1"),
    (["--problem", "digits-mlp", "--replication", "per-worker"], "invalid --replication per-worker for digits-mlp"),
])
def test_replication_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    assert main(["hogwild", "--out", str(tmp_path), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("relaxtorch hogwild: error: ") and message in err


@pytest.mark.parametrize("argv, message", [
    (["--sync-every", "x"], "argument --sync-every: invalid int value: 'x'"),
    (["--sync", "some"], "argument --sync: invalid choice: 'some'"),
    (["--merge", "max"], "argument --merge: invalid choice: 'max'"),
])
def test_replication_parse_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["hogwild", "--out", str(tmp_path), "--no-progress", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("relaxtorch hogwild: error: ") and message in err


def test_config_file_replication(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[hogwild]\nproblem = "digits"\nworkers = [2]\nsignature = ["D32M32G32C32"]\nepochs = 2\n'
                   'replication = ["shared", "per-worker"]\nsync-every = 64\nmerge = "average"\n')
    assert main(["hogwild", "--config", str(cfg), "--out", str(tmp_path), "--no-progress", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["workers"], r["replication"]) for r in runs] == [(1, "shared"), (2, "shared"), (2, "per-worker")]
    assert runs[2]["sync"]["merge"] == "average" and runs[2]["sync"]["scheme"] == "full"
