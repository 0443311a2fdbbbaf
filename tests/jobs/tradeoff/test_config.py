"""Bad configurations fail before any training: one line on stderr naming the file and key, exit 2."""
import pytest

from relaxtorch.cli import main
from relaxtorch.jobs.tradeoff import ConfigError, load_config, parse
from relaxtorch.jobs.tradeoff.defaults import DEFAULT_TOML
from relaxtorch.jobs.tradeoff.plan import load_data, plan

BAD = {  # name: (config text, words the one-line message must contain)
    "unknown top key": ("[sweeps]\nseeds = [0]\n", ["[sweeps]", "unknown key"]),
    "unknown sweep key": ("[sweep]\nseed = [0]\n", ["[sweep].seed", "unknown key"]),
    "unknown train key": ("[train]\nlearning_rate = 0.1\n", ["[train].learning_rate", "unknown key"]),
    "wrong type": ("[train]\nepochs = \"ten\"\n", ["[train].epochs", "must be an integer"]),
    "float for int": ("[train]\nbatch_size = 3.5\n", ["[train].batch_size", "must be an integer"]),
    "bool for number": ("[train]\nlr = true\n", ["[train].lr", "must be a number"]),
    "out of range": ("[train]\nmomentum = 1.5\n", ["[train].momentum", "[0, 1)"]),
    "bad schedule": ("[train]\nlr_schedule = \"step\"\n", ["[train].lr_schedule", "constant, cosine"]),
    "not a list": ("[sweep]\nprecisions = \"fp32\"\n", ["[sweep].precisions", "list"]),
    "unknown precision": ("[sweep]\nprecisions = [\"fp32\", \"fp7\"]\n",
                          ["[sweep].precisions", "unknown precision 'fp7'", "bfp8"]),
    "unknown model": ("[sweep]\nmodels = [\"resnet\"]\n", ["[sweep].models", "unknown model 'resnet'"]),
    "unknown algorithm": ("[sweep]\nalgorithms = [\"adam\"]\n", ["[sweep].algorithms", "unknown algorithm 'adam'"]),
    "unknown order": ("[sweep]\norders = [\"rr\", \"gra\"]\n", ["[sweep].orders", "unknown order 'gra'", "grab"]),
    "orders not a list": ("[sweep]\norders = \"grab\"\n", ["[sweep].orders", "list"]),
    "sketch of a gradient-free order": ("[sweep]\norders = [\"rr:sketch=4\"]\n",
                                        ["[sweep].orders", "'rr' does not balance gradients"]),
    "bad sketch size": ("[sweep]\norders = [\"grab:sketch=0\"]\n", ["[sweep].orders", "sketch=K"]),
    "unknown order option": ("[sweep]\norders = [\"grab:dim=4\"]\n", ["[sweep].orders", "the only option"]),
    "unknown sketched order": ("[sweep]\norders = [\"grub:sketch=4\"]\n", ["[sweep].orders", "unknown order 'grub'"]),
    "unknown dataset": ("[sweep]\ndatasets = [\"mnist\"]\n", ["[sweep].datasets", "unknown dataset 'mnist'"]),
    "unknown override model": ("[models.vgg]\nlr = 0.1\n", ["[models.vgg]", "unknown model"]),
    "unknown override key": ("[algorithms.halp]\nmu = 0.1\n", ["[algorithms.halp].mu", "unknown key"]),
    "nested override": ("[models.mlp.algorithms.swalp]\nswa_every = \"hour\"\n",
                        ["[models.mlp.algorithms.swalp].swa_every", "epoch, step"]),
    "cnn without images": ("[sweep]\npairs = [\"cnn/breast_cancer\"]\n",
                           ["[sweep].pairs", "cnn", "breast_cancer", "image"]),
    "cnn crossed without images": ("[sweep]\nmodels = [\"cnn\"]\ndatasets = [\"breast_cancer\"]\n",
                                   ["[sweep].models", "'cnn'", "image"]),
    "halp alone on an mlp": ("[sweep]\nmodels = [\"mlp\"]\nalgorithms = [\"halp\"]\n",
                             ["[sweep].algorithms", "'halp'", "convex"]),
    "halp without L2": ("[sweep]\npairs = [\"logreg/breast_cancer\"]\nalgorithms = [\"halp\"]\n"
                        "precisions = [\"bfp8\"]\n[train]\nweight_decay = 0.0\n", ["weight_decay", "halp", "mu"]),
    "pairs and models": ("[sweep]\npairs = [\"mlp/digits\"]\nmodels = [\"mlp\"]\n", ["[sweep].pairs", "not both"]),
    "malformed TOML": ("[sweep\nseeds = [0]\n", ["invalid TOML", "line 1"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config_is_one_line_naming_file_and_key(name, tmp_path, capsys):
    text, words = BAD[name]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc = main(["tradeoff", "--config", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("relaxtorch tradeoff: error: ") and str(path) in err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, words", [
    (["--config", "/nonexistent/x.toml"], ["/nonexistent/x.toml", "no such config file"]),
    (["--seeds", "0,a"], ["--seeds", "0,a"]),
    (["--seeds", "1,1"], ["--seeds", "distinct"]),
])
def test_bad_command_line_is_one_line(argv, words, tmp_path, capsys):
    rc = main(["tradeoff", *argv, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    for w in words:
        assert w in err


def test_unwritable_out_is_one_line_before_any_training(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    rc = main(["tradeoff", "--quick", "--out", str(tmp_path / "file" / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--out" in err


def test_parse_raises_config_error_a_value_error():
    with pytest.raises(ValueError, match=r"\[sweep\]\.precisions: unknown precision 'fp7'"):
        parse({"sweep": {"precisions": ["fp7"]}})
    assert issubclass(ConfigError, ValueError)


def test_overrides_resolve_train_then_model_then_algorithm_then_both():
    cfg = parse({"train": {"lr": 1.0, "epochs": 3}, "models": {"mlp": {"lr": 2.0, "algorithms": {"swalp": {"lr": 4.0}}}},
                 "algorithms": {"swalp": {"lr": 3.0, "swa_start": 0.25}}})
    assert cfg.hyper("logreg", "sgd").lr == 1.0 and cfg.hyper("mlp", "sgd").lr == 2.0
    assert cfg.hyper("logreg", "swalp").lr == 3.0 and cfg.hyper("mlp", "swalp").lr == 4.0
    assert cfg.hyper("mlp", "swalp").swa_start == 0.25 and cfg.hyper("mlp", "sgd").epochs == 3


def test_every_key_has_a_default_and_the_examples_parse_and_plan():
    from pathlib import Path
    empty = parse({})
    assert empty.pairs() == [("mlp", "digits")] and empty.hyper("mlp", "sgd").epochs > 0
    examples = Path(__file__).resolve().parents[3] / "examples"
    assert (examples / "default.toml").read_text() == DEFAULT_TOML
    for name in ("default", "swalp_digits", "halp_logreg", "full_sweep", "tradeoff_orders"):
        cfg = load_config(examples / f"{name}.toml")
        runs, _ = plan(cfg, load_data(cfg))
        assert runs, name
