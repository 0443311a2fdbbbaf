"""Learning-rate schedules of the distributed runs: closed forms, validation, and what decay buys
decentralized runs (their ranks come together as the step shrinks)."""
import math

import pytest
import torch

from relaxtorch.jobs.distributed import ConfigError, RankContext, parse, run_job
from relaxtorch.jobs.distributed.schedule import SCHEDULES, lr_at
from tests.comm._world import World


def test_closed_forms():
    assert all(lr_at("constant", 0.3, t, 100) == 0.3 for t in (0, 50, 100))
    assert [lr_at("step", 1.0, t, 90, lr_gamma=0.5) for t in (0, 29, 30, 60, 89)] == [1, 1, 0.5, 0.25, 0.25]
    assert lr_at("step", 1.0, 10, 90, lr_step=5, lr_gamma=0.1) == pytest.approx(1e-2)
    assert lr_at("cosine", 1.0, 0, 100, lr_final=0.1) == 1.0
    assert lr_at("cosine", 1.0, 50, 100, lr_final=0.1) == pytest.approx(0.55)
    assert lr_at("cosine", 1.0, 100, 100, lr_final=0.1) == pytest.approx(0.1)
    assert lr_at("inverse_sqrt", 1.0, 30, 100) == pytest.approx(1 / math.sqrt(4))  # tau = steps / 10
    with pytest.raises(ValueError, match="schedule"):
        lr_at("linear", 1.0, 0, 10)


@pytest.mark.parametrize("key, value, words", [
    ("lr_schedule", "linear", "unknown schedule"), ("lr_gamma", 1.5, "lr_gamma"), ("lr_gamma", 0.0, "lr_gamma"),
    ("lr_final", -1.0, "lr_final"), ("lr_step", -2, "lr_step")])
def test_bad_schedules_are_one_line_errors(key, value, words):
    with pytest.raises(ConfigError, match=words):
        parse({"dist": {key: value}})


def _job(rank, size, raw, out):
    return run_job(parse(raw), out, RankContext(rank, size, torch.device("cpu")), progress=False)


def test_decay_reaches_the_param_groups_and_brings_moniqua_ranks_together(tmp_path):
    runs = [{"algorithm": "moniqua", "name": "constant"},
            {"algorithm": "moniqua", "name": "cosine", "lr_schedule": "cosine", "lr_final": 0.0}]
    raw = {"dist": {"nproc": 2, "steps": 60, "eval_every": 20, "checkpoint_every": 0, "batch_size": 16,
                    "lr": 0.2, "partition": "label", "label_skew": 1.0, "topology": "ring"}, "runs": runs}
    w = World(2, timeout=120)
    try:
        report = w.run(_job, raw, str(tmp_path))[0]
    finally:
        w.close()
    by = {r["name"]: r for r in report["runs"]}
    lrs = [h["lr"] for h in by["cosine"]["history"]]
    assert lrs[0] == pytest.approx(0.2) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lrs == sorted(lrs, reverse=True)
    assert all(h["lr"] == 0.2 for h in by["constant"]["history"])
    # on label-skewed shards each rank's gradient pulls its model away from the others' by ~ lr * |g|:
    # with the step decayed to 0 the gossip's contraction is all that is left, so the ranks meet
    const, cos = by["constant"]["history"][-1]["consensus"], by["cosine"]["history"][-1]["consensus"]
    assert cos < 0.1 * const, (cos, const)
