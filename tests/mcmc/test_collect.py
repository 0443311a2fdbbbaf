"""SampleCollector: burn-in and thinning keep exactly the reference indices; the memory bound holds after
every add, and the 'thin' policy keeps an equally spaced subsequence of the chain (the reference
indices at the doubled thinning); 'error' raises; stored draws are copies; chains stack as ArviZ's
(chains, draws, *event).  posterior_predictive against an explicit loop over the draws."""
import pytest
import torch

from relaxtorch.mcmc import SampleCollector, posterior_predictive, stack_chains


def chain(n, shape=(3,)):
    return [torch.full(shape, float(i)) for i in range(n)]


@pytest.mark.parametrize("burn_in,thin,n", [(0, 1, 10), (5, 1, 10), (3, 4, 50), (10, 7, 10), (0, 3, 2)])
def test_burn_in_and_thinning_counts(burn_in, thin, n):
    c = SampleCollector(burn_in=burn_in, thin=thin)
    stored = [c.add(x) for x in chain(n)]
    expected = [i for i in range(n) if i >= burn_in and (i - burn_in) % thin == 0]
    assert [i for i, s in enumerate(stored) if s] == expected
    assert c.seen == n and c.draws == len(expected)
    if expected:
        got = c.samples()
        assert got.shape == (1, len(expected), 3)
        assert got[0, :, 0].tolist() == [float(i) for i in expected]


@pytest.mark.parametrize("max_draws,n", [(4, 100), (5, 37), (1, 20), (8, 8)])
def test_memory_bound_thins_further(max_draws, n):
    per = 3 * 4  # three float32
    c = SampleCollector(burn_in=2, thin=1, max_bytes=per * max_draws)
    for x in chain(n):
        c.add(x)
        assert c.nbytes <= per * max_draws
    kept = c.samples()[0, :, 0].tolist()
    # the kept draws are the after-burn-in indices 0, thin, 2 thin, ... for the final thinning
    assert kept == [float(2 + k) for k in range(0, n - 2, c.thin)]
    assert c.thin & (c.thin - 1) == 0  # doubled from 1
    assert len(kept) <= max_draws and (c.thin == 1 or len(kept) > max_draws // 2)


def test_error_policy_and_bad_arguments():
    c = SampleCollector(max_bytes=2 * 12, on_full="error")
    c.add(torch.zeros(3))
    c.add(torch.zeros(3))
    with pytest.raises(MemoryError, match="full"):
        c.add(torch.zeros(3))
    with pytest.raises(MemoryError, match="max_bytes"):
        SampleCollector(max_bytes=8).add(torch.zeros(3))
    for kwargs, arg in [(dict(burn_in=-1), "burn_in"), (dict(thin=0), "thin"), (dict(max_bytes=0), "max_bytes"),
                        (dict(on_full="reservoir"), "on_full")]:
        with pytest.raises(ValueError, match=f"Invalid {arg}"):
            SampleCollector(**kwargs)


def test_stored_draws_are_copies_and_dicts_stack():
    c = SampleCollector(device="cpu")
    pos = {"w": torch.zeros(2, 2), "b": torch.zeros(())}
    for i in range(3):
        pos["w"].fill_(i)  # the chain reuses its buffer
        pos["b"].fill_(-i)
        c.add(pos)
    s = c.samples()
    assert s["w"].shape == (1, 3, 2, 2) and s["b"].shape == (1, 3)
    assert s["w"][0, :, 0, 0].tolist() == [0.0, 1.0, 2.0] and s["b"][0].tolist() == [0.0, -1.0, -2.0]
    other = SampleCollector()
    for i in range(5):
        other.add({"w": torch.ones(2, 2) * i, "b": torch.tensor(float(i))})
    both = stack_chains([c, other])
    assert both["w"].shape == (2, 3, 2, 2) and both["b"][1].tolist() == [0.0, 1.0, 2.0]


def test_posterior_predictive_against_a_loop():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    samples = {k: torch.randn(2, 6, *v.shape, generator=g, dtype=torch.float64) for k, v in model.named_parameters()}
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    ref = torch.zeros(7, 3, dtype=torch.float64)
    for c in range(2):
        for d in range(6):
            w1, b1, w2, b2 = (samples[k][c, d] for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
            ref += torch.softmax(torch.tanh(x @ w1.T + b1) @ w2.T + b2, -1) / 12
    got = posterior_predictive(model, samples, x)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.sum(-1), torch.ones(7, dtype=torch.float64))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # model unchanged
    flat = {k: v.reshape(12, *v.shape[2:]) for k, v in samples.items()}  # (draws, *shape) works too
    torch.testing.assert_close(posterior_predictive(model, flat, x), ref, rtol=1e-12, atol=1e-12)
    sig = posterior_predictive(model, samples, x, link="sigmoid")
    assert sig.shape == (7, 3) and ((sig > 0) & (sig < 1)).all()
    with pytest.raises(ValueError, match="Invalid samples"):
        posterior_predictive(model, {"nope": torch.zeros(1)}, x)
    with pytest.raises(ValueError, match="Invalid link"):
        posterior_predictive(model, samples, x, link="exp")
