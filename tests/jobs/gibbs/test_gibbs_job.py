"""``relaxtorch gibbs``: a tiny graph end to end, config errors, Ctrl-C, and a DeepDive folder."""
import json
import os

import numpy as np
import pytest

from relaxtorch.cli import main
from relaxtorch.jobs.gibbs import ConfigError, load_config, marginal_error, parse
from relaxtorch.jobs.gibbs import runner as runner_module

TINY = """
graph = "ising:3x3,beta=0.3,h=0.2"
[sweep]
samplers = ["gibbs", "async_gibbs"]
threads = [1, 2]
seeds = [0]
epsilon = 0.05
[run]
sweeps = 4000
burn_in = 50
checkpoints = 6
"""


def _write(tmp_path, text, name="g.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(*argv):
    return main(["gibbs", *map(str, argv), "--no-progress"])


def write_deepdive(folder, variables, factors, weights):
    """A DeepDive/Numbskull binary folder written with numpy big-endian records (independently of the reader).

    variables: list of (is_evidence, initial, cardinality); factors: list of (function, [(vid, equal_to)],
    weight_id, feature); weights: list of (fixed, value)."""
    os.makedirs(folder, exist_ok=True)
    w = np.array([(i, f, v) for i, (f, v) in enumerate(weights)], dtype=[("id", ">i8"), ("fixed", "u1"), ("v", ">f8")])
    v = np.array([(i, e, x, 0 if c == 2 else 1, c) for i, (e, x, c) in enumerate(variables)],
                 dtype=[("id", ">i8"), ("ev", "u1"), ("init", ">i8"), ("type", ">i2"), ("card", ">i8")])
    blob = b""
    for fn, edges, wid, feat in factors:
        blob += np.array([fn], ">i2").tobytes() + np.array([len(edges)], ">i8").tobytes()
        blob += np.array(edges, ">i8").tobytes() + np.array([wid], ">i8").tobytes() + np.array([feat], ">f8").tobytes()
    nedges = sum(len(f[1]) for f in factors)
    (folder / "graph.meta").write_text(f"{len(weights)},{len(variables)},{len(factors)},{nedges}\n")
    (folder / "graph.weights").write_bytes(w.tobytes())
    (folder / "graph.variables").write_bytes(v.tobytes())
    (folder / "graph.factors").write_bytes(blob)
    return folder


def _small_deepdive(folder):
    # 5 boolean variables, variable 4 is evidence (clamped to 1); EQUAL chain, ISTRUE fields, an IMPLY_NATURAL
    variables = [(0, 0, 2), (0, 1, 2), (0, 0, 2), (0, 1, 2), (1, 1, 2)]
    factors = [(3, [(0, 1), (1, 1)], 0, 1.0), (3, [(1, 1), (2, 1)], 0, 1.0), (3, [(2, 1), (3, 1)], 0, 1.0),
               (4, [(0, 1)], 1, 1.0), (4, [(3, 1)], 1, -2.0), (0, [(4, 1), (2, 1)], 2, 1.0)]
    weights = [(1, 0.5), (1, 0.3), (1, 1.2)]
    return write_deepdive(folder, variables, factors, weights)


def test_default_config_parses():
    cfg = load_config()
    assert cfg.sweep["samplers"] and cfg.run["sweeps"] > 0


def test_tiny_graph_end_to_end(tmp_path, capsys):
    from relaxtorch.mcmc.factor import exact_marginals
    from relaxtorch.jobs.gibbs.graphs import build_graph, parse_spec

    out = tmp_path / "out"
    assert _run("--config", _write(tmp_path, TINY), "--out", out) == 0
    printed = capsys.readouterr().out
    for name in ("gibbs", "async_gibbs x1", "async_gibbs x2", "exact enumeration", "M updates/s"):
        assert name in printed, name
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is False and report["reference"]["method"] == "exact"
    assert [r["label"] for r in report["runs"]] == ["gibbs", "async_gibbs x1", "async_gibbs x2"]
    exact = exact_marginals(build_graph(parse_spec("ising:3x3,beta=0.3,h=0.2")))
    np.testing.assert_array_equal(np.load(out / "marginals" / "reference.npy"), exact)
    for r in report["runs"]:
        m = np.load(out / "marginals" / f"{r['sampler']}__t{r['threads']}__seed0.npy")
        assert m.shape == exact.shape
        np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
        # the reported error is the metric of the saved marginals, and it is small: 4000 sweeps of 9
        # weakly coupled spins give a per-variable standard error of about 0.01
        assert r["error"] == pytest.approx(marginal_error(m, exact), abs=1e-15)
        assert r["sweeps"] == 4000 and r["updates"] == 4000 * 9 and r["updates_per_s"] > 0
        assert len(r["curve"]) == 6 and [p["sweeps"] for p in r["curve"]][-1] == 4000
        if r["threads"] == 1:  # one thread: an exact sampler (two threads on 9 variables: HOGWILD! bias)
            assert r["error"] < 0.03, r
            assert r["time_to_epsilon"] is not None and r["curve"][-1]["error"] < r["curve"][0]["error"]
        else:
            assert r["staleness"] is not None
    assert (out / "marginal_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "report.csv").read_text().strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("sampler,threads,seed,status")


@pytest.mark.parametrize("text, where", [
    ('[sweep]\nsamplers = ["gibs"]\n', "[sweep].samplers"),
    ('graph = "nosuch:3x3"\n', "graph"),
    ('graph = "ising"\n', "graph"),
    ('graph = "ising:3x3,betta=0.3"\n', "graph"),
    ('graph = "deepdive:/nonexistent/folder"\n', "graph"),
    ('[run]\nsweeps = 0\n', "[run].sweeps"),
    ('[reference]\nmethod = "guess"\n', "[reference].method"),
    ('[samplers.gibbs]\nscan = "diagonal"\n', "[samplers.gibbs]"),
    ('[samplers.gibbs]\nscna = "random"\n', "[samplers.gibbs].scna"),
    ('[extra]\n', "[extra]"),
])
def test_config_errors_are_one_line_exit_2(tmp_path, capsys, text, where):
    cfg = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(info.value).startswith(f"{cfg}: {where}"), str(info.value)
    assert _run("--config", cfg, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and where in err[0], err


def test_malformed_deepdive_binary_is_one_line_exit_2(tmp_path, capsys):
    folder = _small_deepdive(tmp_path / "dd")
    data = (folder / "graph.factors").read_bytes()
    (folder / "graph.factors").write_bytes(data[:-5])  # truncated
    assert _run("--graph", f"deepdive:{folder}", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "graph.factors" in err[0], err
    assert not (tmp_path / "o" / "report.json").exists()


def test_deepdive_folder_runs_against_exact(tmp_path, capsys):
    from relaxtorch.mcmc.factor import exact_marginals
    from relaxtorch.mcmc.factor.deepdive import read_deepdive

    folder = _small_deepdive(tmp_path / "dd")
    cfg = _write(tmp_path, f'graph = "deepdive:{folder}"\n[sweep]\nsamplers = ["gibbs"]\n'
                           '[run]\nsweeps = 6000\ncheckpoints = 3\n')
    out = tmp_path / "out"
    assert _run("--config", cfg, "--out", out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["graph"]["variables"] == 5 and report["graph"]["free"] == 4 and report["graph"]["factors"] == 6
    exact = exact_marginals(read_deepdive(folder))
    m = np.load(out / "marginals" / "gibbs__t1__seed0.npy")
    np.testing.assert_array_equal(m[4], [0.0, 1.0])  # the evidence variable stays clamped
    assert marginal_error(m, exact, [True] * 4 + [False]) < 0.03


def test_ctrl_c_keeps_the_marginals_written_so_far(tmp_path, monkeypatch):
    calls = []
    real = runner_module.marginal_error

    def interrupted(*args, **kwargs):  # Ctrl-C during the second run, after its second checkpoint
        calls.append(1)
        if len(calls) == 6 + 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "marginal_error", interrupted)
    out = tmp_path / "out"
    assert _run("--config", _write(tmp_path, TINY), "--out", out) == 130
    partial = out / "partial"
    report = json.loads((partial / "report.json").read_text())
    assert report["partial"] is True and report["runs_finished"] == 1
    assert [r["status"] for r in report["runs"]] == ["ok", "interrupted"]
    assert len(report["runs"][1]["curve"]) == 2
    for name in ("reference", "gibbs__t1__seed0", "async_gibbs__t1__seed0"):
        m = np.load(partial / "marginals" / f"{name}.npy")
        np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
    assert not (out / "report.json").exists()  # nothing of the unfinished sweep outside partial/


def test_graph_spec_parsing():
    from relaxtorch.jobs.gibbs.graphs import GraphSpecError, describe_spec, parse_spec

    p = parse_spec("ising:64x32,beta=0.4,h=0.1,periodic=true")
    assert p == {"kind": "builder", "builder": "ising_grid", "args": [64, 32],
                 "kwargs": {"beta": 0.4, "h": 0.1, "periodic": True}}
    assert describe_spec(p) == "ising_grid:64x32,beta=0.4,h=0.1,periodic=True"
    assert parse_spec({"builder": "potts_all_pairs", "n": 4, "D": 3}) == {
        "kind": "builder", "builder": "potts_all_pairs", "args": [], "kwargs": {"n": 4, "D": 3}}
    assert parse_spec("deepdive:some/folder") == {"kind": "deepdive", "path": "some/folder"}
    for bad in ("ising", ":3x3", "ising:beta=1,4", "ising:beta=1,beta=2", "deepdive:", 3):
        with pytest.raises(GraphSpecError):
            parse_spec(bad)


def test_parse_fills_defaults_and_checks_threads():
    cfg = parse({"graph": "ising:2x2,beta=0.1,h=0.0", "sweep": {"samplers": ["gibbs"], "threads": 1}})
    assert cfg.sweep["threads"] == [1] and cfg.run["sweeps"] == 2000
    with pytest.raises(ConfigError, match=r"\[sweep\].threads"):
        parse({"sweep": {"threads": [0]}})


def test_example_config_is_the_default():
    from pathlib import Path
    example = Path(__file__).resolve().parents[3] / "examples" / "gibbs.toml"
    a, b = load_config(example).to_dict(), load_config().to_dict()
    a.pop("source"), b.pop("source")
    assert a == b


def test_the_numbskull_peer_folder_reads_as_the_ising_grid(tmp_path, capsys):
    """The folder the Numbskull benchmark samples (written by benchmarks/_numbskull_peer.py with
    Numbskull's loader conventions, numpy only) reads unchanged as ising_grid, and the job runs it."""
    import importlib.util
    from pathlib import Path

    from relaxtorch.mcmc.factor.builders import ising_grid
    from relaxtorch.mcmc.factor.deepdive import read_deepdive

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "_numbskull_peer.py"
    spec = importlib.util.spec_from_file_location("_numbskull_peer", script)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    meta = peer.write_folder(str(tmp_path / "ising"), 3, 4, 0.4, 0.1)
    assert meta == {"weights": 2, "variables": 12, "factors": 17 + 12, "edges": 2 * 17 + 12}
    got, want = read_deepdive(tmp_path / "ising"), ising_grid(3, 4, beta=0.4, h=0.1, periodic=False)
    for name in ("cardinality", "evidence", "weight", "function", "weight_id", "feature", "factor_ptr", "edge_var",
                 "edge_value"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    cfg = _write(tmp_path, f'graph = "deepdive:{tmp_path / "ising"}"\n[sweep]\nsamplers = ["gibbs"]\n'
                           '[run]\nsweeps = 3000\ncheckpoints = 2\n')
    assert _run("--config", cfg, "--out", tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reference"]["method"] == "exact" and report["runs"][0]["error"] < 0.03
