"""The runner's models: sizes, seeded initialisation, no global RNG."""
import math

import pytest
import torch

from relaxtorch.jobs.distributed import build_model
from relaxtorch.jobs.distributed.models import n_parameters


@pytest.mark.parametrize("name, sizes", [("mlp", (64, 128, 10)), ("mlp1m", (64, 1024, 1024, 10))])
def test_parameter_count_and_initial_range(name, sizes):
    model = build_model(name, 64, 10, seed=0)
    expect = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    assert n_parameters(model) == expect
    if name == "mlp1m":
        assert expect >= 1_000_000
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [lin.in_features for lin in linears] == list(sizes[:-1])
    for lin in linears:
        bound = 1 / math.sqrt(lin.in_features)
        for p in (lin.weight, lin.bias):
            assert p.abs().max() <= bound
            # U(-b, b) has standard deviation b / sqrt(3); 5 standard errors on the sample's
            assert abs(float(p.detach().std()) - bound / math.sqrt(3)) < 5 * bound / math.sqrt(3) / math.sqrt(p.numel())


def test_same_seed_same_weights_without_the_global_rng():
    state = torch.random.get_rng_state()
    a = build_model("mlp", 64, 10, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(99)
    b = build_model("mlp", 64, 10, seed=3)
    c = build_model("mlp", 64, 10, seed=4)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    torch.random.set_rng_state(state)


def test_unknown_model():
    with pytest.raises(ValueError, match=r"Invalid name: 'cnn' \(choose from mlp, mlp1m\)"):
        build_model("cnn", 64, 10)
