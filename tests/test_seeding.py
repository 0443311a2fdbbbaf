"""relaxtorch._seeding: derived seeds and generator-initialised modules."""
import math

import pytest
import torch

from relaxtorch._seeding import build_module, derive, generator, init_default_, numpy_rng


def test_derive_is_a_function_of_its_inputs_only():
    assert derive(7, "order", 3) == derive(7, "order", 3)
    assert derive(7, 1) != derive(7, "1") != derive(7) != derive(8)
    seeds = {derive(s, "k", i) for s in range(100) for i in range(100)}
    assert len(seeds) == 10_000 and all(0 <= s < 2**63 for s in seeds)  # no collisions, 63 bits
    assert derive(0, 1, 2) != derive(0, 2, 1)  # order matters


def test_derive_rejects_other_keys():
    with pytest.raises(TypeError, match="key"):
        derive(0, 1.5)
    with pytest.raises(TypeError, match="key"):
        derive(0, True)


def test_generators_are_reproducible_streams():
    a = torch.rand(5, generator=generator(3, "x"))
    assert torch.equal(a, torch.rand(5, generator=generator(3, "x")))
    assert not torch.equal(a, torch.rand(5, generator=generator(3, "y")))
    assert (numpy_rng(3, "x").random(4) == numpy_rng(3, "x").random(4)).all()


def test_build_module_draws_pytorch_default_init_from_the_generator_only():
    before = torch.random.get_rng_state()
    fan_in, out = 400, 300
    m = build_module(lambda: torch.nn.Sequential(torch.nn.Linear(fan_in, out), torch.nn.BatchNorm1d(out)),
                     generator(0, "model"))
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG was neither read nor seeded
    w = m[0].weight.detach().double()
    bound = 1 / math.sqrt(fan_in)
    assert w.abs().max() <= bound
    # U(-b, b): mean 0, variance b^2/3; n = 120000 draws, tolerances of 5 standard errors
    n = w.numel()
    assert abs(w.mean()) < 5 * bound / math.sqrt(3 * n)
    var_se = math.sqrt((bound**4 / 5 - bound**4 / 9) / n)
    assert abs(w.var() - bound**2 / 3) < 5 * var_se
    assert torch.equal(m[1].weight, torch.ones(out)) and torch.equal(m[1].running_var, torch.ones(out))
    again = build_module(lambda: torch.nn.Sequential(torch.nn.Linear(fan_in, out), torch.nn.BatchNorm1d(out)),
                         generator(0, "model"))
    assert torch.equal(again[0].weight, m[0].weight)


def test_init_default_refuses_layers_it_does_not_know():
    with pytest.raises(TypeError, match="Embedding"):
        init_default_(torch.nn.Embedding(4, 2), generator(0))
