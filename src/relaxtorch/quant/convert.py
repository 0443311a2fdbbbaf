"""``quantize_model``: turn a float model into a low-precision-training model in one line.

As in QPyTorch's examples (and SWALP, WAGE), quantizers sit between layers:
the input and output of every Linear/Conv and the output of every activation
module are rounded to ``activation`` in the forward pass, and the errors that
flow back through the same points are rounded to ``error``.  The weights are
rounded to ``weight`` once here; ``OptimLP`` keeps them there during training.

The quantizers are attached to the layers themselves (child modules named
``quant_input`` / ``quant_output``, run by forward hooks), so the model's
structure, its ``state_dict`` keys and its ``forward`` code are unchanged.
Activations called as functions (``F.relu`` inside a ``forward``) are not
modules and are not quantized; the output of the layer before them is.

A value is rounded once per boundary: a layer's input quantizer is skipped when
its input is, unchanged, the output of an identical quantizer (one Linear's
output feeding the next), and a ReLU's output quantizer is skipped when its input
was just rounded to an element-wise format.  Rounding those values again would
leave them where they are (rounding is idempotent on the grid, and ReLU keeps
grid values and masks errors element by element), so only the time is saved.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..numbers import quantize
from ._checks import check_format, make_generator, resolve_roundings
from .quantizer import Quantizer

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
               nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
               nn.Softsign, nn.Tanhshrink, nn.LogSigmoid)
# max(x, 0) keeps element-wise grid values on the grid and masks the error elementwise,
# so a quantizer after one whose input was just quantized changes nothing
GRID_PRESERVING = (nn.ReLU,)
DEFAULT_ROUNDING = {"weight": "nearest", "activation": "nearest", "error": "stochastic"}
INPUT, OUTPUT = "quant_input", "quant_output"


def _quantize_input(module, args):
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    q = getattr(module, INPUT)
    if q.applied_to(args[0]):  # straight from an identical quantizer: already on the grid
        return None
    return (q(args[0]),) + tuple(args[1:])


def _quantize_output(module, args, output):
    q = getattr(module, OUTPUT)
    if (isinstance(module, GRID_PRESERVING) and q.elementwise and args and isinstance(args[0], torch.Tensor)
            and q.applied_to(args[0])):
        q.mark(output)  # max(x, 0) of grid values is on the grid, forward and backward
        return output
    return q(output)


def _attach(module: nn.Module, name: str, quantizer: Quantizer, register, hook) -> None:
    fresh = name not in module._modules
    module.add_module(name, quantizer)  # a second conversion replaces the quantizer, keeps one hook
    if fresh:
        register(hook)


@torch.no_grad()
def quantize_model(model: nn.Module, *, weight=None, activation=None, error=None, weight_rounding=None,
                   activation_rounding=None, error_rounding=None, rounding=None, generator=None) -> nn.Module:
    """Return a deep copy of ``model`` set up for low-precision training; ``model`` is not changed.

    ``weight``: format every floating parameter is rounded to (once, here).
    ``activation`` / ``error``: formats of the forward values and backward
    errors at the inputs and outputs of Linear/Conv layers and at the outputs of
    activation modules (``LAYERS``, ``ACTIVATIONS``).  ``None`` leaves a role in
    float.  Roundings default to nearest (weights, activations) and stochastic
    (errors); ``rounding`` sets every role not given explicitly.  ``generator``
    (a torch.Generator or an int seed, shared by all quantizers of the copy)
    drives stochastic rounding.  Converting a converted model replaces its
    quantizers (no double wrapping).  Build the optimizer on the returned model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: {type(model).__name__} (expected a torch.nn.Module)")
    for name, fmt in (("weight", weight), ("activation", activation), ("error", error)):
        check_format(name, fmt)
    r = resolve_roundings({"weight": weight_rounding, "activation": activation_rounding, "error": error_rounding},
                          DEFAULT_ROUNDING, rounding)
    gen = make_generator(generator)
    if any(f is not None for f in (weight, activation, error)):
        bad = sorted({str(p.dtype) for p in model.parameters() if p.dtype == torch.float64})
        if bad:
            raise ValueError(f"Invalid model: has {bad[0]} parameters (formats are simulated in float32, "
                             "float16 or bfloat16; convert with model.float())")
    model = copy.deepcopy(model)
    for m in list(model.modules()):
        if isinstance(m, Quantizer):
            continue
        if isinstance(m, LAYERS):
            _attach(m, INPUT, Quantizer(activation, error, r["activation"], r["error"], generator=gen),
                    m.register_forward_pre_hook, _quantize_input)
        if isinstance(m, LAYERS + ACTIVATIONS):
            _attach(m, OUTPUT, Quantizer(activation, error, r["activation"], r["error"], generator=gen),
                    m.register_forward_hook, _quantize_output)
    if weight is not None:
        for p in model.parameters():
            if p.is_floating_point():
                p.copy_(quantize(p, weight, r["weight"], generator=gen))
    return model
