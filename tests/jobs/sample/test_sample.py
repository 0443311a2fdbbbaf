"""``relaxtorch sample``: config errors, a small sweep end to end, divergence, skips and Ctrl-C."""
import json
import math

import pytest
import torch

from relaxtorch.cli import main
from relaxtorch.jobs.sample import ConfigError, load_config, parse, run_sweep
from relaxtorch.jobs.sample import runner as runner_module

SMALL = """
[sweep]
problems = ["gaussian_2d", "linear_regression"]
samplers = ["sgld", "amagold", "sgld_lp_vc", "mh"]
precisions = ["fp32", "fixed8"]
[chain]
chains = 2
steps = 240
burn_in = 40
thin = 2
"""


def _write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("raw, where", [
    ({"chain": {"steps": "a"}}, "[chain].steps"),
    ({"chain": {"steps": 0}}, "[chain].steps"),
    ({"chain": {"burn_in": 5000}}, "[chain].burn_in"),
    ({"sweep": {"samplers": ["sgldx"]}}, "[sweep].samplers"),
    ({"sweep": {"precisions": ["fp7"]}}, "[sweep].precisions"),
    ({"sweep": {"seeds": [1, 1]}}, "[sweep].seeds"),
    ({"samplers": {"sgld": {"step_size": -1.0}}}, "[samplers.sgld].step_size"),
    ({"samplers": {"sgld": {"step_size": math.nan}}}, "[samplers.sgld].step_size"),
    ({"samplers": {"sghmc": {"friction": 1.5}}}, "[samplers.sghmc].friction"),
    ({"samplers": {"sgld": {"stepsize": 1.0}}}, "[samplers.sgld].stepsize"),
    ({"problems": {"synthetic_logistic": {"n": 5}}}, "[problems.synthetic_logistic].n"),
    ({"problems": {"nope": {}}}, "[problems.nope]"),
    ({"problems": {"gaussian_2d": {"samplers": {"tunamh": {"chi": 0.0}}}}}, "[problems.gaussian_2d.samplers.tunamh].chi"),
    ({"extra": {}}, "[extra]"),
])
def test_config_errors_name_the_file_and_the_key(raw, where):
    with pytest.raises(ConfigError) as info:
        parse(raw, "x.toml")
    assert str(info.value).startswith(f"x.toml: {where}"), str(info.value)


def test_cli_config_error_is_one_line_with_exit_2(tmp_path, capsys):
    bad = _write(tmp_path, "[chain]\nsteps = -3\n")
    assert main(["sample", "--config", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[chain].steps" in err[0] and str(bad) in err[0]
    broken = _write(tmp_path, "[chain\n", "broken.toml")
    assert main(["sample", "--config", str(broken), "--no-progress"]) == 2
    assert "broken.toml" in capsys.readouterr().err


def test_default_config_parses_and_every_sampler_has_settings():
    cfg = load_config()
    assert cfg.sweep["problems"] and cfg.sweep["samplers"]
    for p in cfg.sweep["problems"]:
        for s in cfg.sweep["samplers"]:
            assert cfg.settings(p, s)["step_size"] > 0


def test_small_sweep_end_to_end(tmp_path, capsys):
    from relaxtorch.mcmc.metrics import mean_error
    from relaxtorch.mcmc.problems import load_problem
    cfg = _write(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["sample", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "gaussian_2d" in printed and "skipped gaussian_2d/mh" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is False
    rows = {(r["problem"], r["sampler"], r["precision"]): r for r in report["runs"]}
    # mh has no bounds on these problems; the low-precision sampler runs at fixed8 only
    assert set(rows) == {(p, s, q) for p in ("gaussian_2d", "linear_regression")
                         for s, q in (("sgld", "fp32"), ("amagold", "fp32"), ("sgld_lp_vc", "fixed8"))}
    assert {(s["problem"], s["sampler"]) for s in report["skipped"]} == {("gaussian_2d", "mh"),
                                                                         ("linear_regression", "mh")}
    lp = rows[("linear_regression", "sgld_lp_vc", "fixed8")]
    assert lp["bits_per_number"] == 8 and rows[("linear_regression", "sgld", "fp32")]["bits_per_number"] == 32
    assert rows[("gaussian_2d", "sgld", "fp32")]["grad_evals_per_step"] == 32
    assert rows[("gaussian_2d", "amagold", "fp32")]["acceptance"] is not None
    assert rows[("gaussian_2d", "amagold", "fp32")]["data_touched_per_step"] > 32  # the amortised full-data energy
    for (p, s, q), r in rows.items():
        path = out / "samples" / f"{p}__{s}__{q}__seed0.pt"
        saved = torch.load(path, weights_only=True)  # tensors only: loads without running code
        theta = saved["theta"]
        assert theta.shape[:2] == (2, (240 - 40) // 2) and bool(torch.isfinite(theta).all())
        # the row's mean error is the library's, recomputed from the saved samples
        exact = load_problem(p)
        assert r["mean_error"] == pytest.approx(float(mean_error(theta, exact.mean, exact.cov)), rel=1e-9)
    # the low-precision samples lie on the fixed-point grid
    theta = torch.load(out / "samples" / "linear_regression__sgld_lp_vc__fixed8__seed0.pt", weights_only=True)["theta"]
    scaled = theta.double() * 2 ** 7
    assert bool((scaled == scaled.round()).all())
    for png in ("traces.png", "autocorrelation.png", "ess_per_second.png", "posterior.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_a_diverging_chain_is_reported_and_its_draws_stay_finite(tmp_path):
    cfg = parse({"sweep": {"problems": ["gaussian_2d"], "samplers": ["sgld"]},
                 "chain": {"chains": 1, "steps": 400, "burn_in": 0},
                 "samplers": {"sgld": {"step_size": 500.0}}})
    saved = []
    report, _ = run_sweep(cfg, progress=False, on_run=lambda rep, spec, samples: saved.append(samples))
    (row,) = report["runs"]
    assert row["status"] == "diverged" and "SGLD" in row["error"] and "step" in row["error"]
    assert row["steps_done"] < 400
    assert all(bool(torch.isfinite(v).all()) for v in saved[0].values())


def test_same_seed_same_samples(tmp_path):
    cfg = parse({"sweep": {"problems": ["gaussian_2d"], "samplers": ["sghmc"]},
                 "chain": {"chains": 1, "steps": 100, "burn_in": 0}})
    runs = []
    for _ in range(2):
        got = []
        run_sweep(cfg, progress=False, on_run=lambda rep, spec, samples: got.append(samples["theta"]))
        runs.append(got[0])
    assert torch.equal(runs[0], runs[1])


def test_ctrl_c_leaves_the_finished_runs_samples_readable(tmp_path, monkeypatch, capsys):
    real = runner_module.run_one
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "run_one", interrupted)
    cfg = _write(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["sample", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 130
    partial = out / "partial"
    report = json.loads((partial / "report.json").read_text())
    assert report["partial"] is True and report["runs_finished"] == 1
    (path,) = (partial / "samples").glob("*.pt")
    assert torch.load(path, weights_only=True)["theta"].shape[0] == 2
    assert not (out / "report.json").exists()  # nothing of the unfinished sweep outside partial/
