"""The float64 optimum behind the suboptimality column: its gradient is tiny, its Hessian right."""
import pytest
import torch

from relaxtorch.data import Dataset, load_dataset
from relaxtorch.jobs.tradeoff.convex import ConvexObjective
from relaxtorch.jobs.tradeoff.models import build_model, n_outputs


def _multiclass(n=60, d=4, k=3) -> Dataset:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g)
    y = (X @ torch.randn(d, k, generator=g) + torch.randn(n, k, generator=g)).argmax(1)
    return Dataset("multiclass", "classification", X, y, X[:5], y[:5], k)


def _data(name):
    return _multiclass() if name == "multiclass" else load_dataset(name)


@pytest.mark.parametrize("name, wd", [("breast_cancer", 0.05), ("multiclass", 1e-2),
                                      ("synthetic_classification", 1e-3), ("synthetic_regression", 1e-3)])
def test_optimum_has_a_tiny_gradient_and_zero_suboptimality(name, wd):
    data = _data(name)
    obj = ConvexObjective(data, wd, n_outputs(data))
    opt = obj.optimum()
    assert opt.grad_norm < 1e-12 and float(obj.grad(opt.theta).norm()) < 1e-12
    model = build_model("logreg", data).double()
    lin = model[0]
    k, d = lin.weight.shape
    with torch.no_grad():
        lin.weight.copy_(opt.theta[: k * d].reshape(k, d))
        lin.bias.copy_(opt.theta[k * d:])
    assert abs(obj.suboptimality(model)) < 1e-14
    with torch.no_grad():
        lin.bias.add_(0.01)  # any other point is worse
    assert obj.suboptimality(model) > 0


@torch.no_grad()
def test_objective_matches_the_training_loss_in_float64():
    from relaxtorch.jobs.tradeoff.models import data_loss, l2
    data = load_dataset("breast_cancer")
    torch.manual_seed(0)
    model = build_model("logreg", data)
    obj = ConvexObjective(data, 0.05, 1)
    y = data.y_train.double()
    expected = torch.nn.functional.softplus(-(2 * y - 1) * (data.X_train.double() @ model[0].weight.double()[0]
                                                            + model[0].bias.double())).mean()
    expected += 0.025 * sum(float(p.detach().double().pow(2).sum()) for p in model.parameters())
    assert float(obj.value(obj.theta_of(model))) == pytest.approx(float(expected), rel=1e-12)
    train = float(data_loss(model(data.X_train), data.y_train, data) + l2(model, 0.05))
    assert train == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("name", ["multiclass", "breast_cancer", "synthetic_regression"])
def test_closed_form_hessian_matches_autograd(name):
    data = _data(name).subsample(40)
    obj = ConvexObjective(data, 0.1, n_outputs(data))
    theta = torch.randn(obj.k * (obj.d + 1), dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.1
    auto = torch.autograd.functional.hessian(obj.value, theta)
    torch.testing.assert_close(obj.hessian(theta), auto, rtol=1e-10, atol=1e-12)
