"""The training loop the example-order benchmarks share: minibatch SGD whose visiting order is a
``relaxtorch.order`` value, the loss over the whole training set after every epoch.

One loop for every order, so random reshuffling and GraB differ only in the order: both take
the same steps (``torch.optim.SGD`` on the batch's mean loss); a balancing order also gets the
step's per-example gradients (``rt.order.per_example_grads``, whose mean is the step's gradient,
so no second backward pass) and is observed with them.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import relaxtorch as rt
from relaxtorch.data import load_dataset
from relaxtorch.jobs.tradeoff.models import build_model


@dataclass(frozen=True)
class Setting:
    """The optimiser of every run (the GraB paper's logistic-regression script: SGD, lr 0.01,
    momentum 0.9, weight decay 1e-4, batch 64, 100 epochs)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch: int = 64
    epochs: int = 100


PROBLEMS = {  # name -> (data set, model of relaxtorch tradeoff)
    "logreg-digits": ("digits", "logreg"),
    "logreg-breast_cancer": ("breast_cancer", "logreg"),
    "logreg-synthetic": ("synthetic_classification", "logreg"),
    "mlp-digits": ("digits", "mlp"),
}


def loss_function(data):
    """Mean loss of a batch (cross-entropy; binary cross-entropy on one logit for 2 classes)."""
    if data.n_classes == 2:
        return lambda out, y: F.binary_cross_entropy_with_logits(out.squeeze(-1), y.to(out.dtype))
    return F.cross_entropy


def problem(name: str, seed: int = 0):
    """``(data, model, loss_fn)`` of a problem: the data split and the model's init from ``seed``."""
    data_name, model_name = PROBLEMS[name]
    data = load_dataset(data_name, seed=0)
    model = build_model(model_name, data, torch.Generator().manual_seed(1000 + seed))
    return data, model, loss_function(data)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def full_loss(model, loss_fn, X, y) -> float:
    return float(loss_fn(model(X), y))


def run_epoch(model, loss_fn, X, y, order, state, opt, batch: int, per_example: bool | None = None,
              grads_fn=None, recorder=None):
    """One epoch of minibatch SGD in ``order``'s visiting order; returns the state.
    ``per_example=True`` takes the step from per-example gradients even for an order that
    does not need them (to time the gradients apart from the sorter).  ``recorder``: an
    ``rt.order.LinearGrads`` recording each ordinary step, the order observing its factored (or
    sketched) gradients (no per-example gradient formed)."""
    perm, state = order.epoch(state)
    balancing = order.needs_gradients
    per_example = balancing if per_example is None else per_example
    grads_fn = grads_fn or rt.order.per_example_grads
    with recorder if recorder is not None else contextlib.nullcontext():  # records every step of the epoch
        for start in range(0, len(perm), batch):
            idx = perm[start:start + batch]
            xb, yb = X[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            if recorder is not None:
                loss_fn(model(xb), yb).backward()
                grads = recorder.grads()  # this step's, clearing the record for the next
                if balancing:
                    state = order.observe(state, idx, grads)
            elif per_example:
                _, grads = grads_fn(model, loss_fn, xb, yb)
                rt.order.set_grads_(model, grads.mean(0))
                if balancing:
                    state = order.observe(state, idx, grads)
            else:
                loss_fn(model(xb), yb).backward()
            opt.step()
    return state


@torch.no_grad()
def objective(model, loss_fn, X, y, weight_decay: float) -> float:
    """The objective SGD with ``weight_decay`` minimises: the training loss + (wd / 2) ||w||²."""
    return full_loss(model, loss_fn, X, y) + 0.5 * weight_decay * sum(float(p.square().sum())
                                                                      for p in model.parameters())


def optimum(name: str, weight_decay: float) -> float | None:
    """The minimum of a logistic regression's regularised objective (L-BFGS in float64 on the whole
    training set, from zero; convex, so the seed does not matter); None for the (non-convex) MLP."""
    if not name.startswith("logreg"):
        return None
    data, model, loss_fn = problem(name, 0)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    X, y = data.X_train.double(), data.y_train
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=5000, tolerance_grad=1e-12, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        f = loss_fn(model(X), y) + 0.5 * weight_decay * sum(p.square().sum() for p in model.parameters())
        f.backward()
        return f

    for _ in range(3):
        opt.step(closure)
    return objective(model, loss_fn, X, y, weight_decay)


def parse_order(spec: str) -> tuple[str, int | None]:
    """An order of the benchmarks' command lines (``rt.order.parse_spec``): ``"grab"`` -> ("grab", None);
    ``"grab:sketch=64"`` -> ("grab", 64), GraB on ``LinearGrads(sketch=64)``'s per-layer sketches."""
    return rt.order.parse_spec(spec)


def make_recorder(model, sketch: int | None, seed: int):
    """The ``LinearGrads`` of a run: exact (factored) or sketched, its maps drawn from ``seed``."""
    return rt.order.LinearGrads(model, sketch=sketch, generator=torch.Generator().manual_seed(10_000 + seed))


def train(name: str, order_spec: str, seed: int, setting: Setting, *, regularised: bool = False,
          factored: bool = False, **order_options):
    """Training losses after 0, 1, ..., epochs epochs and the seconds of each epoch.
    ``regularised``: the objective with the weight-decay term instead of the bare loss.
    ``factored``: balancing orders observe through ``rt.order.LinearGrads`` (MLPs), sketched
    for an ``order_spec`` like ``"grab:sketch=64"``."""
    data, model, loss_fn = problem(name, seed)
    X, y = data.X_train, data.y_train
    order_name, sketch = parse_order(order_spec)
    recorder = make_recorder(model, sketch, seed) if factored or sketch else None
    order = rt.order.make(order_name, n=len(X), d=n_params(model) if recorder is None else recorder.dim,
                          **order_options)
    state = order.init(torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=setting.lr, momentum=setting.momentum,
                          weight_decay=setting.weight_decay)
    def measure():
        return objective(model, loss_fn, X, y, setting.weight_decay) if regularised else full_loss(model, loss_fn, X, y)

    losses, seconds = [measure()], []
    for _ in range(setting.epochs):
        t0 = time.perf_counter()
        state = run_epoch(model, loss_fn, X, y, order, state, opt, setting.batch, recorder=recorder)
        seconds.append(time.perf_counter() - t0)
        losses.append(measure())
    return losses, seconds


def linear_per_example_grads(model: nn.Sequential, loss_fn, xb, yb):
    """Per-example gradients of a Sequential of Linear layers and elementwise activations by
    one batched backward pass and outer products (Goodfellow 2015): the gradient of example i
    for a Linear layer is ``dz_i a_i^T`` (``dz_i`` its output's gradient, ``a_i`` its input).
    A lower bound for what per-example gradients cost on the MLP, to compare with torch.func."""
    inputs, outputs, h = [], [], xb
    for layer in model:
        if isinstance(layer, nn.Linear):
            inputs.append(h)
            h = layer(h)
            outputs.append(h)
        else:
            h = layer(h)
    total = loss_fn(h, yb) * len(xb)  # the sum of the examples' losses
    dzs = torch.autograd.grad(total, outputs)
    parts = []
    for a, dz in zip(inputs, dzs):
        parts.append(torch.einsum("bo,bi->boi", dz, a.detach()).reshape(len(xb), -1))
        parts.append(dz)
    return total.detach() / len(xb), torch.cat(parts, dim=1)
