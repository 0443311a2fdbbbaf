"""Record per-example gradients of ``nn.Linear`` layers, factored or sketched, from an ordinary
training step.

A forward hook keeps each layer's input ``a`` and its output's gradient ``δ`` is retained during
the step's own ``loss.backward()`` (taken on the layer's autograd node instead where an in-place
op follows the layer, as learned on the first step); ``grads()`` then hands a balancing order
the step's per-example gradients.  Nothing is recomputed and no per-example gradient is formed:

- exact (``sketch=None``): a :class:`~relaxtorch.order.factored.FactoredGrads`, balanced through
  b x b Gram matrices (O(b·d) multiply-adds a step, about the step's own cost);
- sketched (``sketch=k``): each layer's gradients ``δ_i [a_i, 1]ᵀ`` mapped to ``k`` numbers by a
  Kronecker product of two Gaussian maps, ``(Pᵀδ_i) ⊗ (Qᵀ[a_i, 1])`` (the tensor random projection
  of Sun, Guo, Tropp & Udell, ICML 2021, applied to the factors): O(b (o + in) √k) a step.  Inner
  products of sketches are unbiased estimates of the gradients' (E[PPᵀ] = E[QQᵀ] = I, P and Q
  independent), so GraB balances them as it would the gradients, up to the sketch's noise.

Every trainable parameter must be the weight or bias of an ``nn.Linear`` that sees inputs of
shape [batch, features] once per step (an MLP; activations, dropout and other parameter-free
modules are free).  Other models take :func:`~relaxtorch.order.grads.per_example_grads`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from . import _kernels
from ._base import check_generator, check_positive_int, invalid
from .factored import Dense, FactoredGrads, Outer
from .projection import kronecker_shape

REDUCTIONS = ("mean", "sum")
MAX_SKETCH = 1 << 20


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


def _layout(params: list[tuple[nn.Linear, str]]) -> list[tuple[nn.Linear, bool, bool]]:
    """The gradient's blocks in parameter order: (layer, has its weight, has its bias); a bias
    right after its layer's weight joins the weight's block."""
    blocks = []
    for k, (module, p_name) in enumerate(params):
        if p_name == "bias" and k and params[k - 1] == (module, "weight"):
            continue
        if p_name == "weight":
            blocks.append((module, True, k + 1 < len(params) and params[k + 1] == (module, "bias")))
        else:
            blocks.append((module, False, True))
    return blocks


class LinearGrads:
    """A context that records a step's per-example gradients of an MLP, factored or sketched.

    ``reduction``: how the step's loss combines the examples' losses (``"mean"``, as
    ``F.cross_entropy``, or ``"sum"``); ``grads()`` returns the gradient of each example's own
    loss, as :func:`per_example_grads` does: a :class:`FactoredGrads` of length ``dim`` (the
    trainable parameters' count), or with ``sketch=k`` a Tensor [b, dim] of per-layer Kronecker
    sketches, ``k`` numbers (rounded up to ``k1 * k2``) a layer, drawn once from ``generator``
    (None: torch's default generator).  Build the order with ``d=recorder.dim``.

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
    >>> sketched = LinearGrads(model, sketch=16, generator=torch.Generator().manual_seed(0))
    >>> with sketched:
    ...     nn.functional.cross_entropy(model(x), y).backward()
    >>> sketched.dim, sketched.grads().shape
    (32, torch.Size([5, 32]))
    """

    def __init__(self, model: nn.Module, *, reduction: str = "mean", sketch: int | None = None,
                 generator: torch.Generator | None = None):
        if not isinstance(model, nn.Module):
            raise invalid("model", type(model).__name__, "a torch.nn.Module")
        if reduction not in REDUCTIONS:
            raise invalid("reduction", reduction, f"one of {', '.join(map(repr, REDUCTIONS))}")
        if sketch is not None:
            sketch = check_positive_int("sketch", sketch)
            if sketch > MAX_SKETCH:
                raise invalid("sketch", sketch, f"at most {MAX_SKETCH} numbers a layer: a sketch is meant to be "
                                                "far smaller than the gradient it stands for")
        if generator is not None:
            check_generator(generator)
        self.reduction = reduction
        self.sketch = sketch
        self._model = model
        self._params = _linear_params(model)
        self._blocks_layout = _layout(self._params)
        self._block_modules = [m for m, _, _ in self._blocks_layout]
        self._block_weights = [weight for _, weight, _ in self._blocks_layout]
        self._layers = list(dict.fromkeys(m for m, _, _ in self._blocks_layout))
        self._batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._maps = None if sketch is None else [self._draw_map(block, sketch, generator)
                                                  for block in self._blocks_layout]
        self._maps_in: dict = {}  # the maps in the dtype of the recorded steps, made on first use
        self.dim = (sum(getattr(m, name).numel() for m, name in self._params) if sketch is None else
                    sum(p.shape[1] * q.shape[1] for p, q, _ in self._maps))
        self._on_node: dict = {}  # layer -> its output gradient is taken on its autograd node (learned)
        self._handles: list = []
        self._clear()

    @staticmethod
    def _draw_map(block, k: int, generator) -> tuple[Tensor, Tensor, Tensor]:
        """A block's Gaussian factors (float64): P [o, k1] and Q [in, k2] with entries of variance
        1/k1 and 1/k2, and Q's bias column [k2]; a bias-only block maps δ by P [o, k1 k2] alone."""
        module, weight, bias = block
        o, n_in = module.out_features, module.in_features
        k1, k2 = kronecker_shape(k)
        if not weight:
            k1, k2, n_in = k1 * k2, 1, 0
        p = torch.randn(o, k1, generator=generator, dtype=torch.float64).div_(math.sqrt(k1))
        if not weight:
            return p, torch.zeros(0, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
        q = torch.randn(n_in + bias, k2, generator=generator, dtype=torch.float64).div_(math.sqrt(k2))
        return p, q[:n_in], q[n_in] if bias else torch.zeros(k2, dtype=torch.float64)

    def _clear(self) -> None:
        self._records: list = []  # (layer, input, output, output's version) of each recorded call
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
        # kept lean (it runs at every layer of every step); grads() validates the record
        node = getattr(output, "grad_fn", None)
        if node is None:
            return  # an evaluation pass (no_grad, or nothing requires grad): nothing to balance
        self._records.append((module, inputs[0], output, output._version))
        on_node = self._on_node.get(module)
        if on_node is not False:
            # the gradient reaching the layer's own node: its output's before an in-place op after it
            # (a ReLU(inplace=True)) moved the output's gradient to that op
            dz = self._dz
            node.register_prehook(lambda grads: dz.__setitem__(module, grads[0]))
        if not on_node:
            output.retain_grad()  # kept in C++: cheaper than a Python hook, unless an in-place op follows

    def grads(self) -> FactoredGrads | Tensor:
        """The recorded step's per-example gradients (trainable parameters in ``model.parameters()``
        order): a FactoredGrads, or their sketches [b, dim] with ``sketch``; clears the record for
        the next step (also when it raises)."""
        try:
            return self._factored() if self._maps is None else self._sketched()
        finally:
            self._clear()

    def _recorded_all(self, modules) -> list[tuple[Tensor, Tensor]]:
        """The step's (input, output gradient) of each of ``modules``, or the reason one has none.
        The first step learns, per layer, whether an in-place op follows it (its output's version
        moved): such a layer's gradient is then taken on its autograd node, the others' retained."""
        records = {r[0]: r for r in self._records}
        if len(records) != len(self._records):
            twice = next(m for m in records if sum(r[0] is m for r in self._records) > 1)
            raise RuntimeError(f"LinearGrads: layer {twice!r}: it ran {sum(r[0] is twice for r in self._records)} "
                               "times in one step (a shared layer or a second forward pass): its per-example "
                               "gradient is no longer one outer product; use per_example_grads")
        out = []
        for module in modules:
            record = records.get(module)
            if record is None:
                raise RuntimeError(f"LinearGrads: layer {module!r}: no forward pass with gradients was "
                                   "recorded since the last grads()")
            _, a, output, version = record
            modified = output._version != version
            on_node = self._on_node.setdefault(module, modified)
            if on_node:
                dz = self._dz.get(module)
            elif modified:
                raise RuntimeError(f"LinearGrads: layer {module!r}: an in-place op changed its output after "
                                   "the layer in this step but not in the first one recorded; build a new "
                                   "LinearGrads for a model whose in-place ops change between steps")
            else:
                dz = output.grad
            if dz is None:
                raise RuntimeError(f"LinearGrads: layer {module!r}: backward() has not reached it; "
                                   "call loss.backward() inside the `with` block before grads()")
            if a.ndim != 2:
                raise invalid("inputs", f"Tensor{list(a.shape)} into {module!r}",
                              "LinearGrads takes [batch, features] inputs; use per_example_grads for sequences")
            out.append((a.detach() if a.requires_grad else a,
                        dz.detach() if dz.requires_grad else dz))  # (create_graph=True)
        return out

    def _check_batchnorm(self) -> None:
        for m in self._batchnorms:
            if m.training:
                raise invalid("model", f"{type(m).__name__} in train mode",
                              "batch statistics couple the examples, so a layer's output gradient is not "
                              "one example's; use per_example_grads")

    def _factored(self) -> FactoredGrads:
        self._check_batchnorm()
        blocks = []
        for (module, weight, bias), (a, dz) in zip(self._blocks_layout, self._recorded_all(self._block_modules)):
            if self.reduction == "mean":
                dz = dz * dz.shape[0]
            blocks.append(Outer(dz, a, bias=bias) if weight else Dense(dz))
        return FactoredGrads(blocks)

    def _sketched(self) -> Tensor:
        if self._batchnorms:
            self._check_batchnorm()
        recorded = self._recorded_all(self._block_modules)
        dz0 = recorded[0][1]
        dtype = dz0.dtype if dz0.dtype in (torch.float32, torch.float64) else torch.float32
        maps = self._maps_in.get(dtype)
        if maps is None:
            maps = self._maps_in[dtype] = tuple(tuple(np.ascontiguousarray(t.to(dtype).numpy()) for t in part)
                                                for part in zip(*self._maps))
        b = dz0.shape[0]
        z = torch.empty(b, self.dim, dtype=dtype)
        dzs = tuple([_host(dz, dtype) for _, dz in recorded])
        inputs = tuple([_host(a, dtype) if weight else np.zeros((b, 0), maps[0][0].dtype)  # a bias block: P alone
                        for (a, _), weight in zip(recorded, self._block_weights)])
        _kernels.kron_sketches(dzs, inputs, *maps, float(b) if self.reduction == "mean" else 1.0, z.numpy())
        return z


def _host(t: Tensor, dtype: torch.dtype) -> np.ndarray:
    """``t`` as a C-contiguous NumPy array of ``dtype`` on the CPU (no copy when it already is)."""
    if t.dtype is dtype and t.is_cpu and t.is_contiguous():
        return t.numpy()
    return t.to("cpu", dtype).contiguous().numpy()


def _factorable(model: nn.Module) -> bool:
    try:
        _linear_params(model)
    except ValueError:
        return False
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def example_grads(model: nn.Module, loss_fn, inputs: Tensor, targets: Tensor, *, recorder: LinearGrads | None = None):
    """The per-example gradients of a batch at the model's weights, for ``order.observe``: factored
    (one forward and backward pass under :class:`LinearGrads`, nothing formed) when the model is
    an MLP of ``nn.Linear`` layers with [batch, features] inputs, else the tensor of
    :func:`~relaxtorch.order.grads.per_example_grads`.  ``recorder``: a :class:`LinearGrads` of
    ``model`` kept across steps (a sketching one: its maps must stay the same), whose ``grads()``
    this returns.  Leaves every ``.grad`` as it was.

    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> example_grads(model, nn.functional.cross_entropy, torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1]))
    FactoredGrads(batch=5, dim=26, blocks=2)
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if recorder is not None:
        if not isinstance(recorder, LinearGrads) or recorder._model is not model:
            raise invalid("recorder", recorder, "a LinearGrads built on this model")
        with torch.enable_grad(), recorder:
            torch.autograd.grad(loss_fn(model(inputs), targets), params, allow_unused=True)
        return recorder.grads()
    if _factorable(model) and inputs.ndim == 2:
        with torch.enable_grad(), LinearGrads(model) as rec:
            torch.autograd.grad(loss_fn(model(inputs), targets), params, allow_unused=True)
        try:
            return rec.grads()
        except (ValueError, RuntimeError):
            pass  # a layer ran twice or saw a sequence: the formed gradients below
    from .grads import per_example_grads
    return per_example_grads(model, loss_fn, inputs, targets)[1]
