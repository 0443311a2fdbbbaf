"""The sweep end to end on a tiny configuration: files, rows, skips, reproducibility."""
import csv
import json

import pytest

from relaxtorch.cli import main
from relaxtorch.jobs.tradeoff import load_config, parse, run_sweep

TINY = """
[sweep]
pairs = ["mlp/digits", "logreg/breast_cancer"]
algorithms = ["sgd", "swalp", "svrg", "halp"]
precisions = ["fp32", "bfp8"]
seeds = [0, 1]
[data]
max_train = 64
[train]
epochs = 2
batch_size = 16
[models.logreg]
batch_size = 8
lr = 0.05
momentum = 0.0
weight_decay = 0.05
"""
# mlp: sgd, swalp x 2 precisions; logreg: sgd, swalp, svrg x 2 + halp@bfp8 (halp@fp32 is svrg)
COMBINATIONS, SKIPS = 4 + 7, 2 * 2 + 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "tiny.toml").write_text(TINY)
    rc = main(["tradeoff", "--config", str(d / "tiny.toml"), "--out", str(d / "out"), "--no-progress"])
    return rc, d / "out"


def test_cli_writes_every_file_with_every_row(tiny_run, capsys):
    rc, out = tiny_run
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["runs"]) == COMBINATIONS * 2 and len(report["skipped"]) == SKIPS
    assert len(report["summary"]) == COMBINATIONS
    assert report["machine"]["torch"] and report["config"]["sweep"]["seeds"] == [0, 1]
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == COMBINATIONS * 2
    assert {(r["algorithm"], r["precision"]) for r in rows if r["model"] == "logreg"} == {
        ("sgd", "fp32"), ("sgd", "bfp8"), ("swalp", "fp32"), ("swalp", "bfp8"),
        ("svrg", "fp32"), ("svrg", "bfp8"), ("halp", "bfp8")}
    for run in report["runs"]:
        assert [h["epoch"] for h in run["history"]] == [0, 1, 2]
        assert 0 <= run["test_error"] <= 1 and run["memory_bytes"] > 0 and run["seconds"] > 0
        assert (run["suboptimality"] is None) == (run["model"] == "mlp")
    for name in ("pareto.png", "loss_curves.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_summary_is_mean_over_seeds_with_delta_to_fp32_sgd(tiny_run):
    report = json.loads((tiny_run[1] / "report.json").read_text())
    runs, summary = report["runs"], report["summary"]
    for s in summary:
        errs = [r["test_error"] for r in runs if all(r[k] == s[k] for k in ("model", "dataset", "algorithm",
                                                                           "precision"))]
        assert s["test_error"] == pytest.approx(sum(errs) / len(errs))
        base = next(b for b in summary if (b["model"], b["algorithm"], b["precision"]) == (s["model"], "sgd", "fp32"))
        assert s["delta_test_error"] == pytest.approx(s["test_error"] - base["test_error"])


def test_bits_and_memory_order_by_precision(tiny_run):
    report = json.loads((tiny_run[1] / "report.json").read_text())
    by = {(s["model"], s["algorithm"], s["precision"]): s for s in report["summary"]}
    assert by["mlp", "sgd", "fp32"]["weight_bits"] == 32 and by["mlp", "sgd", "bfp8"]["weight_bits"] == 8
    assert by["mlp", "sgd", "bfp8"]["memory_bytes"] < by["mlp", "sgd", "fp32"]["memory_bytes"] / 3.9
    # SWALP stores a float32 average on top of LP-SGD's state
    n = 64 * 128 + 128 + 128 * 10 + 10
    assert by["mlp", "swalp", "bfp8"]["memory_bytes"] == by["mlp", "sgd", "bfp8"]["memory_bytes"] + 4 * n


def _strip_times(report):
    rows = []
    for r in report["runs"]:
        r = {k: v for k, v in r.items() if k not in ("seconds", "train_seconds", "sort_seconds")}
        r["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]]
        rows.append(r)
    return rows


def _small(seed):
    return parse({"sweep": {"pairs": ["mlp/digits", "logreg/breast_cancer"], "algorithms": ["swalp", "halp"],
                            "precisions": ["fp8_e4m3"], "seeds": [seed]},
                  "data": {"max_train": 48}, "train": {"epochs": 2, "batch_size": 8, "weight_decay": 0.01}})


def test_same_seed_gives_identical_rows():
    a, b = run_sweep(_small(3), progress=False), run_sweep(_small(3), progress=False)
    assert len(a["runs"]) == 3 and _strip_times(a) == _strip_times(b)
    assert _strip_times(run_sweep(_small(4), progress=False)) != _strip_times(a)


def test_default_sweep_plans_every_algorithm_and_the_quick_flag_shrinks_it():
    from relaxtorch.jobs.tradeoff.config import quick
    from relaxtorch.jobs.tradeoff.plan import load_data, plan
    cfg = load_config()
    runs, skipped = plan(cfg, load_data(cfg))
    assert {r.algorithm for r in runs} == {"sgd", "swalp", "svrg", "halp"}
    assert {r.precision for r in runs} >= {"fp32", "bf16", "fp8_e4m3", "fixed8", "bfp8", "mxfp4"}
    q = quick(cfg)
    qruns, _ = plan(q, load_data(q))
    assert len(qruns) * len(cfg.sweep["seeds"]) == len(runs)
    assert all(r.hyper.epochs <= 2 for r in qruns) and q.data["max_train"] == 256


ORDERS_TOML = """
[sweep]
pairs = ["logreg/breast_cancer"]
algorithms = ["sgd"]
precisions = ["fp32"]
orders = ["rr", "grab", "pair"]
seeds = [0, 1]
[data]
max_train = 48
[train]
epochs = 2
batch_size = 8
lr = 0.05
momentum = 0.0
weight_decay = 0.05
"""


def test_an_order_axis_reports_each_orders_cost_next_to_its_loss(tmp_path, capsys):
    (tmp_path / "o.toml").write_text(ORDERS_TOML)
    rc = main(["tradeoff", "--config", str(tmp_path / "o.toml"), "--out", str(tmp_path / "out"), "--no-progress"])
    table = capsys.readouterr().out
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["order"] for r in report["runs"]] == ["rr", "rr", "grab", "grab", "pair", "pair"]
    by = {s["order"]: s for s in report["summary"]}
    assert set(by) == {"rr", "grab", "pair"} and all(len(s["seeds"]) == 2 for s in by.values())
    n, d = 48, 31  # examples; logistic regression on 30 features + bias
    assert by["rr"]["order_bytes"] == 8 * n and by["grab"]["order_bytes"] > 8 * n + 3 * 8 * d
    assert by["grab"]["sort_seconds"] > by["rr"]["sort_seconds"] >= 0
    assert by["rr"]["delta_test_error"] == 0.0
    with open(tmp_path / "out" / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["order"] for r in rows] == [r["order"] for r in report["runs"]]
    assert all(float(r["sort_seconds"]) >= 0 and int(r["order_bytes"]) > 0 for r in rows)
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert "order" in header and "sort s" in header and "order state" in header
    assert (tmp_path / "out" / "order_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a sketched order is one more value of the axis, reported under its name
    sketched = run_sweep(parse({"sweep": {"pairs": ["logreg/breast_cancer"], "algorithms": ["sgd"],
                                          "precisions": ["fp32"], "orders": ["grab:sketch=9"], "seeds": [1]},
                                "data": {"max_train": 48},
                                "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "momentum": 0.0,
                                          "weight_decay": 0.05}}), progress=False)
    (row,) = sketched["summary"]
    assert row["order"] == "grab:sketch=9" and 8 * n < row["order_bytes"] < by["grab"]["order_bytes"]
    # the same seed and order reproduce the run (a balancing order is deterministic too)
    again = run_sweep(parse({"sweep": {"pairs": ["logreg/breast_cancer"], "algorithms": ["sgd"],
                                       "precisions": ["fp32"], "orders": ["grab"], "seeds": [1]},
                             "data": {"max_train": 48},
                             "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "momentum": 0.0,
                                       "weight_decay": 0.05}}), progress=False)
    first = next(r for r in report["runs"] if (r["order"], r["seed"]) == ("grab", 1))
    assert again["runs"][0]["train_loss"] == first["train_loss"]
