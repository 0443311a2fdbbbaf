"""Record per-example gradients of ``nn.Linear`` layers, factored, from an ordinary training step.

A forward hook keeps each layer's input ``a`` and a tensor hook its output's gradient ``δ``
during the step's own ``loss.backward()``; ``grads()`` then hands a balancing order the
:class:`~relaxtorch.order.factored.FactoredGrads` of the step.  Nothing is recomputed and no
per-example gradient is formed, so GraB costs little more than the step itself.

Every trainable parameter must be the weight or bias of an ``nn.Linear`` that sees inputs of
shape [batch, features] once per step (an MLP; activations, dropout and other parameter-free
modules are free).  Other models take :func:`~relaxtorch.order.grads.per_example_grads`.
"""
from __future__ import annotations

from torch import Tensor, nn
import torch

from ._base import invalid
from .factored import Dense, FactoredGrads, Outer

REDUCTIONS = ("mean", "sum")


def _linear_params(model: nn.Module) -> list[tuple[nn.Linear, str]]:
    """(layer, "weight" | "bias") for every trainable parameter, in ``model.parameters()`` order."""
    owner = {}
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            owner.setdefault(id(p), (mod_name, module, p_name))
    out = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        _, module, p_name = owner[id(p)]
        if not isinstance(module, nn.Linear):
            raise invalid("model", f"parameter {name!r} of a {type(module).__name__}",
                          "LinearGrads factors only nn.Linear weights and biases; use per_example_grads")
        out.append((module, p_name))
    if not out:
        raise invalid("model", type(model).__name__, "it has no parameters that require grad")
    return out


class LinearGrads:
    """A context that records a step's per-example gradients of an MLP in factored form.

    ``reduction``: how the step's loss combines the examples' losses (``"mean"``, as
    ``F.cross_entropy``, or ``"sum"``); ``grads()`` returns the gradient of each example's own
    loss, as :func:`per_example_grads` does.

    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    >>> with LinearGrads(model) as rec:
    ...     nn.functional.cross_entropy(model(x), y).backward()
    >>> grads = rec.grads()
    >>> grads.shape
    torch.Size([5, 26])
    >>> from relaxtorch.order import per_example_grads
    >>> torch.allclose(grads.dense(), per_example_grads(model, nn.functional.cross_entropy, x, y)[1], atol=1e-6)
    True
    """

    def __init__(self, model: nn.Module, *, reduction: str = "mean"):
        if not isinstance(model, nn.Module):
            raise invalid("model", type(model).__name__, "a torch.nn.Module")
        if reduction not in REDUCTIONS:
            raise invalid("reduction", reduction, f"one of {', '.join(map(repr, REDUCTIONS))}")
        self.reduction = reduction
        self._model = model
        self._params = _linear_params(model)
        self._layers = list(dict.fromkeys(m for m, _ in self._params))
        self._handles: list = []
        self._clear()

    def _clear(self) -> None:
        self._inputs: dict = {}
        self._calls: dict = {}
        self._dz: dict = {}

    def __enter__(self) -> "LinearGrads":
        if self._handles:
            raise RuntimeError("LinearGrads is already recording (nested `with` on one recorder)")
        self._clear()
        self._handles = [m.register_forward_hook(self._forward) for m in self._layers]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _forward(self, module: nn.Module, inputs, output: Tensor) -> None:
        if not (torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad):
            return  # an evaluation pass: nothing to balance
        self._calls[module] = self._calls.get(module, 0) + 1
        self._inputs[module] = inputs[0].detach()

        def keep(grad: Tensor, module=module) -> None:
            self._dz[module] = grad.detach()
        output.register_hook(keep)

    def grads(self) -> FactoredGrads:
        """The recorded step's per-example gradients (trainable parameters in ``model.parameters()``
        order); clears the record for the next step (also when it raises)."""
        try:
            return FactoredGrads(self._blocks())
        finally:
            self._clear()

    def _blocks(self) -> list:
        for m in self._model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
                raise invalid("model", f"{type(m).__name__} in train mode",
                              "batch statistics couple the examples, so a layer's output gradient is not "
                              "one example's; use per_example_grads")
        blocks = []
        for k, (module, p_name) in enumerate(self._params):
            if p_name == "bias" and k and self._params[k - 1] == (module, "weight"):
                continue  # joined to the weight's block
            calls = self._calls.get(module, 0)
            if calls != 1:
                why = ("no forward pass with gradients was recorded since the last grads()" if calls == 0 else
                       f"it ran {calls} times in one step (a shared layer or a second forward pass): its "
                       "per-example gradient is no longer one outer product; use per_example_grads")
                raise RuntimeError(f"LinearGrads: layer {module!r}: {why}")
            if module not in self._dz:
                raise RuntimeError(f"LinearGrads: layer {module!r}: backward() has not reached it; "
                                   "call loss.backward() inside the `with` block before grads()")
            a, dz = self._inputs[module], self._dz[module]
            if a.ndim != 2:
                raise invalid("inputs", f"Tensor{list(a.shape)} into {module!r}",
                              "LinearGrads takes [batch, features] inputs; use per_example_grads for sequences")
            if self.reduction == "mean":
                dz = dz * dz.shape[0]
            with_bias = k + 1 < len(self._params) and self._params[k + 1] == (module, "bias")
            blocks.append(Outer(dz, a, bias=with_bias) if p_name == "weight" else Dense(dz))
        return blocks


def _factorable(model: nn.Module) -> bool:
    try:
        _linear_params(model)
    except ValueError:
        return False
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def example_grads(model: nn.Module, loss_fn, inputs: Tensor, targets: Tensor):
    """The per-example gradients of a batch at the model's weights, for ``order.observe``: factored
    (one forward and backward pass under :class:`LinearGrads`, nothing formed) when the model is
    an MLP of ``nn.Linear`` layers with [batch, features] inputs, else the tensor of
    :func:`~relaxtorch.order.grads.per_example_grads`.  Leaves every ``.grad`` as it was.

    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> example_grads(model, nn.functional.cross_entropy, torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1]))
    FactoredGrads(batch=5, dim=26, blocks=2)
    """
    if _factorable(model) and inputs.ndim == 2:
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.enable_grad(), LinearGrads(model) as rec:
            torch.autograd.grad(loss_fn(model(inputs), targets), params, allow_unused=True)
        try:
            return rec.grads()
        except (ValueError, RuntimeError):
            pass  # a layer ran twice or saw a sequence: the formed gradients below
    from .grads import per_example_grads
    return per_example_grads(model, loss_fn, inputs, targets)[1]
