"""The one output mechanism of every job: --out checked first, staged, swapped in, partial on failure."""
import json
import os

import pytest

from relaxtorch.jobs._cli import CLIError
from relaxtorch.jobs._output import Staging, check_out, dead_stagings

MANIFEST = ".relaxtorch-job.json"


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "f").write_text("x") and d / "f", "exists and is not a folder"),
    (lambda d: (d / "f").write_text("x") and d / "f" / "sub", "cannot create the folder (Not a directory)"),
])
def test_check_out_names_the_option_and_why(tmp_path, make, message):
    with pytest.raises(CLIError, match=r"^--out .*: " + message.replace("(", r"\(").replace(")", r"\)")):
        check_out(make(tmp_path))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a folder nobody can write, even root")
def test_check_out_really_writes_a_file_root_ignores_permission_bits():
    with pytest.raises(CLIError, match=r"^--out /proc/self: not writable \("):
        check_out("/proc/self")


def test_check_out_creates_the_folder_and_leaves_nothing(tmp_path):
    out = check_out(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_commit_replaces_the_previous_run_and_keeps_the_users_files(tmp_path):
    out = tmp_path / "o"
    with Staging(out, "job", owns=("report.json", "*.png")) as stage:
        (stage.path / "report.json").write_text("1")
        (stage.path / "a.png").write_text("1")
        (stage.path / "b.png").write_text("1")
        stage.commit()
    (out / "notes.txt").write_text("mine")  # not the job's
    with Staging(out, "job", owns=("report.json", "*.png")) as stage:
        (stage.path / "report.json").write_text("2")
        (stage.path / "a.png").write_text("2")
        stage.commit()
    assert _files(out) == [MANIFEST, "a.png", "notes.txt", "report.json"]  # b.png of the old run is gone
    assert (out / "report.json").read_text() == "2" and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / MANIFEST).read_text())["entries"] == ["a.png", "report.json"]


def test_a_folder_without_a_manifest_loses_only_the_names_the_job_owns(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    for name in ("report.json", "old.png", "data.csv"):
        (out / name).write_text("old")
    with Staging(out, "job", owns=("report.json", "*.png")) as stage:
        (stage.path / "report.json").write_text("new")
        stage.commit()
    assert _files(out) == [MANIFEST, "data.csv", "report.json"]


def test_an_exception_keeps_the_new_files_in_partial_and_the_old_ones_in_place(tmp_path, capsys):
    out = tmp_path / "o"
    with Staging(out, "job", owns=("*.json",)) as stage:
        (stage.path / "report.json").write_text("complete")
        stage.commit()
    with pytest.raises(KeyboardInterrupt):
        with Staging(out, "job", owns=("*.json",)) as stage:
            (stage.path / "report.json").write_text("half")
            raise KeyboardInterrupt
    assert (out / "report.json").read_text() == "complete"
    assert (out / "partial" / "report.json").read_text() == "half"
    assert f"relaxtorch job: the unfinished run's files are in {out / 'partial'}" in capsys.readouterr().err
    assert not list(out.glob(".relaxtorch-s*")) and not list(out.glob(".relaxtorch-old*"))
    with Staging(out, "job", owns=("*.json",)) as stage:  # a complete run removes the stale partial
        (stage.path / "report.json").write_text("again")
        stage.commit()
    assert _files(out) == [MANIFEST, "report.json"]


def test_an_error_before_any_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with Staging(tmp_path / "o", "job"):
            raise ValueError("bad option")
    assert _files(tmp_path / "o") == []


def test_the_staging_folder_of_a_killed_job_is_found(tmp_path):
    dead = tmp_path / ".relaxtorch-staging-999999999-abcd"
    dead.mkdir()
    with Staging(tmp_path, "job") as stage:
        assert dead_stagings(tmp_path) == [dead]  # our own (alive) staging folder is not listed
        stage.commit()
    assert not dead.exists()


def test_two_jobs_in_one_folder_replace_only_their_own_files(tmp_path):
    for job, name in (("a", "a.json"), ("b", "b.json"), ("a", "a2.json")):
        with Staging(tmp_path, job) as stage:
            (stage.path / name).write_text(job)
            stage.commit()
    assert _files(tmp_path) == [".relaxtorch-a.json", ".relaxtorch-b.json", "a2.json", "b.json"]
