"""The job's TOML config and command-line options: defaults, overrides, and one-line errors naming the key."""
from pathlib import Path

import pytest

from relaxtorch.cli import main
from relaxtorch.jobs.distributed import ConfigError, load_config, override, parse
from relaxtorch.jobs.distributed.config import ALGORITHMS, DEFAULT_ALGORITHMS, OPTIONS, RunSpec

EXAMPLES = sorted((Path(__file__).parents[3] / "examples").glob("dist_*.toml"))
assert EXAMPLES, "no examples/dist_*.toml found: the path to examples/ is wrong"

BAD = {  # name: (config text, words the one-line message must contain)
    "unknown table": ("[train]\nsteps = 3\n", ["[train]", "unknown table"]),
    "unknown dist key": ("[dist]\nepochs = 3\n", ["[dist].epochs", "unknown key", "steps"]),
    "wrong type": ("[dist]\nsteps = \"ten\"\n", ["[dist].steps", "must be an integer"]),
    "float for int": ("[dist]\nbatch_size = 3.5\n", ["[dist].batch_size", "must be an integer"]),
    "bool for number": ("[dist]\nlr = true\n", ["[dist].lr", "must be a number"]),
    "zero steps": ("[dist]\nsteps = 0\n", ["[dist].steps", ">= 1"]),
    "skew out of range": ("[dist]\nlabel_skew = 1.5\n", ["[dist].label_skew", "[0, 1]"]),
    "bad momentum": ("[dist]\nmomentum = 1.0\n", ["[dist].momentum", "[0, 1)"]),
    "bad nproc": ("[dist]\nnproc = 0\n", ["[dist].nproc", "1..1024"]),
    "bad timeout": ("[dist]\ntimeout = 0\n", ["[dist].timeout", "> 0"]),
    "bad link": ("[dist]\nlink = \"500MB\"\n", ["[dist].link", "Invalid link", "unit"]),
    "unknown model": ("[dist]\nmodel = \"resnet\"\n", ["[dist].model", "unknown model 'resnet'", "mlp1m"]),
    "unknown partition": ("[dist]\npartition = \"dirichlet\"\n", ["[dist].partition", "iid, label"]),
    "unknown topology": ("[dist]\ntopology = \"star\"\n", ["[dist].topology", "unknown topology 'star'"]),
    "unknown order": ("[dist]\norder = \"gra\"\n", ["[dist].order", "unknown order 'gra'", "cdgrab"]),
    "balancing order with reshuffle": ("[[runs]]\nalgorithm = \"allreduce\"\norder = \"grab\"\nreshuffle = true\n",
                                       ["[[runs]][1].order", "'grab'", "reshuffle"]),
    "runs not an array": ("runs = 3\n", ["[[runs]]", "array of tables"]),
    "run without algorithm": ("[[runs]]\nname = \"x\"\n", ["[[runs]][1].algorithm", "missing"]),
    "unknown algorithm": ("[[runs]]\nalgorithm = \"adam\"\n", ["[[runs]][1].algorithm", "unknown algorithm 'adam'"]),
    "option of another algorithm": ("[[runs]]\nalgorithm = \"allreduce\"\n[[runs]]\nalgorithm = \"cocktail\"\n"
                                    "ratio = 0.1\n",
                                    ["[[runs]][2].ratio", "unknown key for algorithm 'cocktail'", "topk_ratio"]),
    "bad option value": ("[[runs]]\nalgorithm = \"topk-ef\"\nratio = 0\n", ["[[runs]][1].ratio", "(0, 1]"]),
    "bad option type": ("[[runs]]\nalgorithm = \"cocktail\"\noverlap = 1\n", ["[[runs]][1].overlap", "true or false"]),
    "bad run key": ("[[runs]]\nalgorithm = \"dpsgd\"\nsteps = -1\n", ["[[runs]][1].steps", ">= 1"]),
    "duplicate names": ("[[runs]]\nalgorithm = \"qsgd\"\n[[runs]]\nalgorithm = \"qsgd\"\nbits = 2\n",
                        ["[[runs]].name", "'qsgd' names two runs"]),
    "unsafe name": ("[[runs]]\nalgorithm = \"qsgd\"\nname = \"../x\"\n", ["[[runs]][1].name", "names files"]),
    "malformed TOML": ("[dist\nsteps = 3\n", ["invalid TOML", "line 1"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config_raises_naming_file_and_key(name, tmp_path):
    text, words = BAD[name]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("name", ["unknown dist key", "option of another algorithm", "malformed TOML"])
def test_bad_config_on_the_command_line_is_one_line_exit_2(name, tmp_path, capsys):
    text, words = BAD[name]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc = main(["dist", "--config", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("relaxtorch dist: error: ") and str(path) in err and words[0] in err
    assert not (tmp_path / "out").exists()  # nothing made before the config is known good


@pytest.mark.parametrize("argv, words", [
    (["--config", "/nonexistent/x.toml"], ["/nonexistent/x.toml", "no such config file"]),
    (["--steps", "0"], ["--steps", ">= 1"]),
    (["--nproc", "0"], ["--nproc", "1..1024"]),
    (["--algorithm", "allreduce,adam"], ["--algorithm", "unknown algorithm 'adam'"]),
    (["--algorithm", ","], ["--algorithm", "empty"]),
    (["--link", "fast"], ["--link", "Invalid link"]),
    (["--model", "vgg"], ["--model", "unknown model 'vgg'"]),
    (["--label-skew", "2"], ["--label-skew", "[0, 1]"]),
    (["--timeout", "-1"], ["--timeout", "> 0"]),
    (["--order", "gra"], ["--order", "unknown order 'gra'"]),
    (["--order", "cdgrab", "--reshuffle"], ["run 'allreduce'", "'cdgrab'", "reshuffle"]),
    (["--algorithm", "dpsgd", "--topology", "torus:3x3", "--nproc", "4"], ["run 'dpsgd'", "torus:3x3"]),
    (["--algorithm", "qsgd", "--config", "BITS1"], ["run 'qsgd'", "Invalid bits: 1"]),
    (["--resume"], ["--resume", "no checkpoints"]),
    (["--device", "cuda", "--nproc", "64"], ["--device cuda", "64 ranks need as many GPUs"]),
])
def test_bad_options_are_one_line_exit_2(argv, words, tmp_path, capsys):
    configs = {"BITS1": "[[runs]]\nalgorithm = \"qsgd\"\nbits = 1\n"}
    for i, a in enumerate(argv):
        if a in configs:
            (tmp_path / "c.toml").write_text(configs[a])
            argv = argv[:i] + [str(tmp_path / "c.toml")] + argv[i + 1:]
            if "--algorithm" in argv:
                j = argv.index("--algorithm")
                argv = argv[:j] + argv[j + 2:]
    rc = main(["dist", "--out", str(tmp_path / "out"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("relaxtorch dist: error: ")
    for w in words:
        assert w in err, (w, err)


def test_defaults_run_every_default_algorithm_on_digits():
    cfg = load_config(None)
    assert cfg.nproc == 4 and cfg.timeout > 0 and cfg.eval_every >= 1
    assert [r.algorithm for r in cfg.runs] == list(DEFAULT_ALGORITHMS)
    assert all(r.data == "digits" and r.model == "mlp" and r.options == {} for r in cfg.runs)
    assert parse({}).to_dict() == cfg.to_dict()


def test_run_tables_override_dist_table_and_keep_options():
    cfg = parse({"dist": {"steps": 50, "lr": 0.2, "nproc": 2, "link": "1Gbps,0.5ms"},
                 "runs": [{"algorithm": "allreduce"},
                          {"algorithm": "cocktail", "name": "c1", "bits": 2, "steps": 70, "overlap": False}]})
    a, c = cfg.runs
    assert (a.name, a.steps, a.lr, a.link, a.options) == ("allreduce", 50, 0.2, "1Gbps,0.5ms", {})
    assert (c.name, c.steps, c.lr, c.options) == ("c1", 70, 0.2, {"bits": 2, "overlap": False})
    assert cfg.nproc == 2 and isinstance(a.lr, float)


def test_command_line_overrides_every_run_and_replaces_algorithms():
    cfg = parse({"dist": {"lr": 0.3}, "runs": [{"algorithm": "qsgd", "steps": 70, "bits": 2},
                                               {"algorithm": "dpsgd", "steps": 80}]})
    o = override(cfg, steps=5, nproc=3, link="unlimited", timeout=7)
    assert [r.steps for r in o.runs] == [5, 5] and o.nproc == 3 and o.timeout == 7.0
    assert all(r.link == "unlimited" for r in o.runs) and o.runs[0].options == {"bits": 2}
    assert [r.steps for r in cfg.runs] == [70, 80]  # the input is not mutated
    o = override(cfg, algorithms=["moniqua", "detag", "moniqua"])
    assert [(r.name, r.algorithm, r.options) for r in o.runs] == [("moniqua", "moniqua", {}),
                                                                   ("detag", "detag", {})]
    # new runs take the [dist] table's settings, not another run's
    assert all(r.lr == 0.3 and r.steps == RunSpec().steps for r in o.runs)
    with pytest.raises(ConfigError, match=r"^--batch-size: must be >= 1, got 0$"):
        override(cfg, batch_size=0)


def test_every_algorithm_has_an_option_table():
    assert set(OPTIONS) == set(ALGORITHMS)
    for a in ALGORITHMS:
        assert parse({"runs": [{"algorithm": a}]}).runs[0] == RunSpec(algorithm=a, name=a)


def test_every_algorithm_takes_momentum():
    # each one wraps torch.optim.SGD(momentum=...): Moniqua too (its derived theta allows for it)
    from relaxtorch.jobs.distributed.algorithms import check_run
    for a in ALGORITHMS:
        assert check_run(parse({"dist": {"momentum": 0.9}, "runs": [{"algorithm": a}]}).runs[0], 4) is None


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path):
    from relaxtorch.jobs.distributed.algorithms import check_run
    cfg = load_config(path)
    assert cfg.runs
    for r in cfg.runs:
        assert check_run(r, cfg.nproc) is None


@pytest.mark.parametrize("argv, words", [
    (["--steps", "abc"], ["argument --steps: invalid int value: 'abc'"]),
    (["--device", "tpu"], ["argument --device: invalid choice: 'tpu'"]),
])
def test_argument_errors_are_one_line_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(["dist", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    for w in words:
        assert w in err
