"""The embedded problems: closed-form posteriors checked by another route, gradients against
finite differences (float64), seeded deterministic data, validated sizes, the reference run."""
import math

import pytest
import torch

from relaxtorch.mcmc.problems import (PROBLEMS, Problem, digits_mlp, gaussian_2d, laplace, linear_regression,
                                      load_problem, logistic_regression, mlp_logits, mlp_module,
                                      reference_posterior, robust_regression, synthetic_logistic)

SMALL = {  # every problem, at a size the tests can afford
    "gaussian_2d": dict(n=200),
    "linear_regression": {},
    "logistic_regression": {},
    "synthetic_logistic": dict(n=100_000, d=4, n_test=100),
    "robust_regression": dict(n=500, d=3, n_test=50),
    "digits_mlp": dict(hidden=6),
}


def _flat_theta(p: Problem, seed: int):
    g = torch.Generator().manual_seed(seed)
    if isinstance(p.init, dict):
        return {k: 0.3 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in p.init.items()}
    return 0.3 * torch.randn(p.dim, generator=g, dtype=torch.float64)


def test_every_problem_is_listed():
    assert set(SMALL) == set(PROBLEMS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_contract(name):
    p = load_problem(name, **SMALL[name])
    assert isinstance(p, Problem) and p.name == name
    assert all(t.shape[0] == p.data_size for t in p.data)
    theta = _flat_theta(p, 0)
    pw = p.pointwise(theta, p.data)
    assert pw.shape == (p.data_size,) and pw.dtype == torch.float64
    assert torch.allclose(p.log_likelihood(theta, p.data), pw.sum(), rtol=1e-12)
    idx = torch.tensor([0, 3, 5])
    assert torch.allclose(p.log_likelihood(theta, p.batch(idx)), pw[idx].sum(), rtol=1e-12)
    assert torch.allclose(p.log_density(theta), p.log_prior(theta) + pw.sum(), rtol=1e-12)
    assert torch.isfinite(p.log_density(p.init))
    assert p.log_density(p.init).dtype == torch.float32  # computed in θ's dtype
    if p.mean is not None:
        assert p.mean.shape == (p.dim,) and p.cov.shape == (p.dim, p.dim) and p.mean.dtype == torch.float64
        assert torch.equal(p.cov, p.cov.T) and torch.linalg.eigvalsh(p.cov).min() > 0
    if p.predict is not None:
        out = p.predict(theta, p.test[0])
        assert out.shape[0] == p.test[0].shape[0]
        if p.task == "classification":
            assert torch.allclose(out.sum(-1), torch.ones((), dtype=out.dtype))
    with pytest.raises(Exception):
        p.name = "x"  # frozen


def _log_posterior_by_optimisation(p: Problem):
    """The posterior mean and covariance of a Gaussian posterior by another route: maximise the
    log density numerically (scipy's BFGS on autograd gradients, float64), invert the Hessian."""
    from scipy import optimize
    f = lambda v: -p.log_density(torch.tensor(v, dtype=torch.float64)).item()  # noqa: E731

    def grad(v):
        t = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        return torch.autograd.grad(-p.log_density(t), t)[0].numpy()
    res = optimize.minimize(f, torch.zeros(p.dim, dtype=torch.float64).numpy(), jac=grad, method="BFGS",
                            options=dict(gtol=1e-10, maxiter=10_000))
    mode = torch.tensor(res.x, dtype=torch.float64)
    hess = torch.autograd.functional.hessian(lambda t: -p.log_density(t), mode)
    return mode, torch.linalg.inv(hess)


@pytest.mark.parametrize("problem", [linear_regression, lambda: gaussian_2d(n=300, rho=-0.8)], ids=["linreg", "gauss"])
def test_closed_form_posterior_by_another_route(problem):
    p = problem()
    mode, cov = _log_posterior_by_optimisation(p)
    sd = p.cov.diagonal().sqrt()
    assert ((mode - p.mean).abs() / sd).max() < 1e-5  # BFGS's tolerance, in posterior sds
    torch.testing.assert_close(cov, p.cov, rtol=1e-6, atol=1e-9 * p.cov.abs().max().item())


def test_gaussian_log_density_is_the_multivariate_normal():
    """log_density(θ) − log N(θ; μ, Σ) is one constant over θ (the evidence)."""
    p = gaussian_2d(n=500, rho=0.9)
    mvn = torch.distributions.MultivariateNormal(p.mean, p.cov)
    thetas = p.mean + 3 * torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    diff = torch.stack([p.log_density(t) - mvn.log_prob(t) for t in thetas])
    assert (diff - diff[0]).abs().max() < 1e-8 * diff[0].abs()
    assert abs(p.cov[0, 1] / (p.cov[0, 0] * p.cov[1, 1]).sqrt() - 0.9) < 0.01  # the correlation asked for


def _finite_difference(f, theta, h=1e-6):
    flat, unflat = _flatten(theta)
    out = torch.empty_like(flat)
    for i in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[i] = h
        out[i] = (f(unflat(flat + e)) - f(unflat(flat - e))) / (2 * h)
    return out


def _flatten(theta):
    if not isinstance(theta, dict):
        return theta.clone(), lambda v: v
    keys = sorted(theta)
    shapes = [theta[k].shape for k in keys]
    flat = torch.cat([theta[k].reshape(-1) for k in keys])

    def unflat(v):
        out, i = {}, 0
        for k, s in zip(keys, shapes):
            n = math.prod(s)
            out[k] = v[i:i + n].reshape(s)
            i += n
        return out
    return flat, unflat


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradients_match_finite_differences(name):
    p = load_problem(name, **SMALL[name])
    theta = _flat_theta(p, 1)
    batch = p.batch(torch.arange(min(p.data_size, 64)))
    for f in (lambda t: p.log_likelihood(t, batch), p.log_prior):
        flat, unflat = _flatten(theta)
        flat = flat.requires_grad_()
        (g,) = torch.autograd.grad(f(unflat(flat)), flat)
        fd = _finite_difference(lambda t: f(t).item(), theta)
        torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_data_are_seeded_and_deterministic(name):
    a, b = load_problem(name, **SMALL[name]), load_problem(name, **SMALL[name])
    c = load_problem(name, **SMALL[name], seed=1)
    for x, y in zip(a.data + (a.test or ()), b.data + (b.test or ())):
        assert torch.equal(x, y)
    for x, y in zip(_flatten(a.init)[0:1], _flatten(b.init)[0:1]):
        assert torch.equal(x, y)
    assert not torch.equal(a.data[0], c.data[0])


def test_linear_regression_target_is_standardized_on_the_training_split():
    p = linear_regression()
    y = p.data[1].double()
    assert abs(y.mean()) < 1e-6 and abs(y.std() - 1) < 1e-6
    assert p.dim == 11 and p.data_size == 332 and p.test[0].shape == (110, 10)


def test_synthetic_logistic_recovers_its_planted_model():
    """With 10^5 points the Laplace mode is within a few posterior sds of the planted weights."""
    p = synthetic_logistic(n=100_000, d=4, n_test=100)
    mode, cov = laplace(p)
    z = (mode - p.info["w_true"]) / cov.diagonal().sqrt()
    assert z.abs().max() < 4
    assert 0.3 < p.data[1].mean() < 0.7


def test_robust_regression_is_student_t():
    p = robust_regression(n=2000, d=2, nu=4.0, noise_scale=0.5, n_test=10)
    theta = p.info["w_true"].clone()
    r = (p.data[1].double() - p.data[0].double() @ theta[:-1] - theta[-1])
    t = torch.distributions.StudentT(*torch.tensor([4.0, 0.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(p.pointwise(theta, p.data), t.log_prob(r), rtol=1e-10, atol=1e-10)


def test_mlp_functional_matches_the_module():
    p = digits_mlp(hidden=6)
    module = mlp_module(6)
    module.load_state_dict(p.init)
    X = p.test[0][:20]
    torch.testing.assert_close(mlp_logits(p.init, X), module(X))
    expect = -torch.nn.functional.cross_entropy(module(p.data[0]), p.data[1], reduction="sum")
    torch.testing.assert_close(p.log_likelihood(p.init, p.data), expect, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("factory, kwargs, match", [
    (synthetic_logistic, dict(n=99_999), "Invalid n"),
    (synthetic_logistic, dict(n=10 ** 6 + 1), "Invalid n"),
    (synthetic_logistic, dict(d=0), "Invalid d"),
    (robust_regression, dict(n=0), "Invalid n"),
    (robust_regression, dict(nu=0.0), "Invalid nu"),
    (robust_regression, dict(noise_scale=-1.0), "Invalid noise_scale"),
    (gaussian_2d, dict(rho=1.0), "Invalid rho"),
    (gaussian_2d, dict(n=0), "Invalid n"),
    (gaussian_2d, dict(scales=(1.0, 0.0)), "Invalid scales"),
    (linear_regression, dict(noise_scale=0), "Invalid noise_scale"),
    (linear_regression, dict(seed=-1), "Invalid seed"),
    (logistic_regression, dict(prior_scale=math.inf), "Invalid prior_scale"),
    (digits_mlp, dict(hidden=0), "Invalid hidden"),
])
def test_bad_sizes_raise(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_unknown_problem():
    with pytest.raises(ValueError, match="Invalid name"):
        load_problem("mnist")


def test_reference_run_recovers_a_closed_form():
    """The reference HMC, run on a problem with a closed form, lands within 4 MCSE of its mean
    and near its covariance (relative Frobenius error of a few 1/sqrt(ESS))."""
    p = linear_regression()
    ref = reference_posterior(p, chains=2, draws=400, warmup=50, seed=3)
    assert ref.samples.shape == (2, 400, 11)
    assert ((ref.mean - p.mean).abs() / ref.mcse).max() < 4
    err = torch.linalg.matrix_norm(ref.cov - p.cov) / torch.linalg.matrix_norm(p.cov)
    assert err < 4 * math.sqrt(2 / ref.ess.min())
    assert ref.rhat.max() < 1.01 and ref.acceptance > 0.8
    again = reference_posterior(p, chains=2, draws=20, warmup=5, seed=3)
    assert torch.equal(again.samples, reference_posterior(p, chains=2, draws=20, warmup=5, seed=3).samples)


def test_reference_rejects_dict_positions_and_bad_settings():
    with pytest.raises(ValueError, match="Invalid problem"):
        reference_posterior(digits_mlp(hidden=2))
    with pytest.raises(ValueError, match="Invalid step_size"):
        reference_posterior(linear_regression(), step_size=2.5)
    with pytest.raises(ValueError, match="Invalid draws"):
        reference_posterior(linear_regression(), draws=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(SMALL))
def test_cuda_matches_cpu(name):
    p = load_problem(name, **SMALL[name])
    q = p.to("cuda")
    theta = _flat_theta(p, 2)
    theta_cuda = {k: v.cuda() for k, v in theta.items()} if isinstance(theta, dict) else theta.cuda()
    torch.testing.assert_close(q.log_density(theta_cuda).cpu(), p.log_density(theta), rtol=1e-10, atol=1e-8)
