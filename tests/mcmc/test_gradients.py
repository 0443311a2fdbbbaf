"""grad_estimator: against a hand-written float64 gradient of Bayesian logistic regression; unbiased
by exhaustive enumeration of every single-datum minibatch; the control variate is unbiased too, exact
at the centre for every minibatch, and of lower variance near it; positions as dicts; inputs not
mutated; bad arguments raise ValueError naming them."""
import pytest
import torch

from relaxtorch.mcmc import full_gradient, grad_estimator
from relaxtorch.mcmc.sgld import SGLDKernel

N, D = 40, 3


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = (torch.rand(N, generator=g, dtype=torch.float64) < torch.sigmoid(x @ w)).double()
    return x, y


def log_prior(theta):
    return -0.5 * (theta ** 2).sum() / 4.0


def log_lik(theta, batch):
    x, y = batch
    z = x @ theta
    return y * z - torch.nn.functional.softplus(z)


def exact_grad(theta, x, y, scale):
    """∇log prior + scale · Σ_b x_b (y_b - σ(x_b·θ)), written out by hand."""
    g = -theta / 4.0
    for xb, yb in zip(x, y):
        g = g + scale * xb * (yb - 1.0 / (1.0 + torch.exp(-(xb @ theta))))
    return g


def test_matches_hand_written_gradient(data):
    x, y = data
    theta = torch.tensor([0.3, -0.1, 0.7], dtype=torch.float64)
    est = grad_estimator(log_prior, log_lik, N)
    idx = torch.tensor([3, 7, 7, 21, 39])
    got = est(theta, (x[idx], y[idx]))
    torch.testing.assert_close(got, exact_grad(theta, x[idx], y[idx], N / 5), rtol=1e-12, atol=1e-12)
    assert not theta.requires_grad and theta.grad is None  # input untouched


def test_unbiased_over_every_single_datum_minibatch(data):
    x, y = data
    theta = torch.tensor([0.3, -0.1, 0.7], dtype=torch.float64)
    full = exact_grad(theta, x, y, 1.0)
    plain = grad_estimator(log_prior, log_lik, N)
    centre = torch.tensor([0.9, -1.5, 0.2], dtype=torch.float64)
    cgrad = full_gradient(log_lik, centre, [(x[:17], y[:17]), (x[17:], y[17:])])
    torch.testing.assert_close(cgrad, exact_grad(centre, x, y, 1.0) + centre / 4.0, rtol=1e-12, atol=1e-12)
    cv = grad_estimator(log_prior, log_lik, N, centre=centre, centre_grad=cgrad)
    for est in (plain, cv):
        mean = torch.stack([est(theta, (x[i:i + 1], y[i:i + 1])) for i in range(N)]).mean(0)
        torch.testing.assert_close(mean, full, rtol=1e-10, atol=1e-10)


def test_control_variate_exact_at_centre_and_lower_variance_near_it(data):
    x, y = data
    centre = torch.tensor([0.9, -1.5, 0.2], dtype=torch.float64)
    cgrad = full_gradient(log_lik, centre, [(x, y)])
    plain = grad_estimator(log_prior, log_lik, N)
    cv = grad_estimator(log_prior, log_lik, N, centre=centre, centre_grad=cgrad)
    assert cv.evals_per_datum == 2 and plain.evals_per_datum == 1
    full_at_c = exact_grad(centre, x, y, 1.0)
    for i in range(0, N, 7):
        torch.testing.assert_close(cv(centre, (x[i:i + 2], y[i:i + 2])), full_at_c, rtol=1e-10, atol=1e-10)
    near = centre + 0.05
    per_datum = lambda est: torch.stack([est(near, (x[i:i + 1], y[i:i + 1])) for i in range(N)])
    assert (per_datum(cv).var(0) * 20 < per_datum(plain).var(0)).all()


def test_dict_positions_and_flat_prior():
    def lik(theta, y):
        return -0.5 * (y - theta["mu"]) ** 2 * torch.exp(-theta["log_s2"]) - 0.5 * theta["log_s2"]

    est = grad_estimator(None, lik, 10)
    theta = {"mu": torch.tensor(0.5, dtype=torch.float64), "log_s2": torch.tensor(0.0, dtype=torch.float64)}
    y = torch.tensor([1.0, 2.0], dtype=torch.float64)
    g = est(theta, y)
    assert list(g) == ["mu", "log_s2"]
    torch.testing.assert_close(g["mu"], torch.tensor(5.0 * ((1.0 - 0.5) + (2.0 - 0.5)), dtype=torch.float64))
    torch.testing.assert_close(g["log_s2"], torch.tensor(5.0 * (0.5 * (0.25 + 2.25) - 1.0), dtype=torch.float64))


def test_kernel_counts_cost_of_control_variate(data):
    x, y = data
    centre = torch.zeros(D, dtype=torch.float64)
    cv = grad_estimator(log_prior, log_lik, N, centre=centre, centre_grad=full_gradient(log_lik, centre, [(x, y)]))
    kernel = SGLDKernel(cv)
    _, info = kernel.step(torch.Generator().manual_seed(0), kernel.init(centre), (x[:8], y[:8]), 0.01)
    assert (info.grad_evals, info.data_touched) == (16, 8)


@pytest.mark.parametrize("kwargs,arg", [
    (dict(data_size=0), "data_size"),
    (dict(data_size=2.5), "data_size"),
    (dict(data_size=5, centre=torch.zeros(3)), "centre_grad"),
    (dict(data_size=5, centre=torch.zeros(3), centre_grad=torch.zeros(2)), "centre_grad"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"Invalid {arg}"):
        grad_estimator(log_prior, log_lik, **kwargs)
