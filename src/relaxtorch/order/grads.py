"""Per-example gradients for the balancing orders, flattened in ``model.parameters()`` order.

The fast path is ``torch.func``: ``vmap(grad(loss of functional_call(model, one example)))``.
Models vmap cannot take — BatchNorm or Dropout in train mode, where an example's output
depends on the batch or on fresh random numbers — fall back to one ordinary forward pass of
the whole batch (batch statistics, dropout masks and running-stat updates exactly as a training
step sees them) and batched backward passes of each example's loss through it
(``autograd.grad(..., is_grads_batched=True)``), or a loop of backward passes where even that
fails.  There the gradient of example i is that of its loss term in the batch's forward pass,
so the gradients still sum to the gradient of the summed loss.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from ._base import check_positive_int, invalid

def _needs_fallback(model: nn.Module) -> bool:
    for m in model.modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return True
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
    return False


def per_example_grads(model: nn.Module, loss_fn, inputs: Tensor, targets: Tensor, *,
                      microbatch: int | None = None) -> tuple[Tensor, Tensor]:
    """``(losses [b], grads [b, d])``: each example's loss and the gradient of it with respect to
    the model's trainable parameters (``requires_grad``), flattened in ``model.parameters()`` order.

    ``loss_fn(outputs, targets)`` is the mean loss of a batch (as ``F.cross_entropy``); an
    example's loss is ``loss_fn`` of its batch of one.  ``microbatch`` bounds how many examples'
    gradients are computed at once (memory); None: all.  ``grads.mean(0)`` is the gradient of
    the batch's mean loss, so a training step can reuse it.  Models in train mode with BatchNorm
    or Dropout take the batched-backward fallback (module docstring); their running statistics
    are updated once, as by one training forward pass.

    >>> model = nn.Linear(3, 2); x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    >>> losses, grads = per_example_grads(model, nn.functional.cross_entropy, x, y)
    >>> losses.shape, grads.shape
    (torch.Size([4]), torch.Size([4, 8]))
    """
    if not isinstance(model, nn.Module):
        raise invalid("model", type(model).__name__, "a torch.nn.Module")
    if not isinstance(inputs, Tensor) or inputs.ndim < 1:
        raise invalid("inputs", type(inputs).__name__, "a Tensor with a batch dimension")
    b = inputs.shape[0]
    if not isinstance(targets, Tensor) or targets.ndim < 1 or targets.shape[0] != b:
        raise invalid("targets", getattr(targets, "shape", targets), f"a Tensor with batch dimension {b}")
    chunk = b if microbatch is None else check_positive_int("microbatch", microbatch)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise invalid("model", type(model).__name__, "it has no parameters that require grad")
    if not _needs_fallback(model):
        try:
            return _vmapped(model, loss_fn, inputs, targets, names, chunk)
        except (RuntimeError, NotImplementedError, ValueError):
            pass
    return _batched_backward(model, loss_fn, inputs, targets, names, chunk)


def set_grads_(model: nn.Module, flat: Tensor) -> nn.Module:
    """Write the flat gradient ``flat`` [d] (``per_example_grads`` layout: trainable parameters in
    ``model.parameters()`` order) into each parameter's ``.grad``; returns ``model``.

    >>> model = nn.Linear(2, 1); _ = set_grads_(model, torch.arange(3.))
    >>> model.weight.grad.tolist(), model.bias.grad.tolist()
    ([[0.0, 1.0]], [2.0])
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in params)
    if not isinstance(flat, Tensor) or flat.shape != (total,):
        raise invalid("flat", getattr(flat, "shape", flat), f"a Tensor[{total}] (the model's trainable parameters)")
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.detach().view_as(p).to(p.dtype).clone()
    return model


def _vmapped(model, loss_fn, inputs, targets, names, chunk):
    named = dict(model.named_parameters())
    params = {k: named[k].detach() for k in names}
    frozen = {k: v.detach() for k, v in named.items() if k not in params}
    buffers = dict(model.named_buffers())

    def loss(p, x, y):
        out = functional_call(model, ({**p, **frozen}, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    step = vmap(grad_and_value(loss), in_dims=(None, 0, 0))
    losses, grads = [], []
    for start in range(0, inputs.shape[0], chunk):
        g, value = step(params, inputs[start:start + chunk], targets[start:start + chunk])
        losses.append(value.detach())
        grads.append(torch.cat([g[k].reshape(g[k].shape[0], -1) for k in names], dim=1))
    return torch.cat(losses), torch.cat(grads)


def _batched_backward(model, loss_fn, inputs, targets, names, chunk):
    named = dict(model.named_parameters())
    params = [named[k] for k in names]
    b = inputs.shape[0]
    with torch.enable_grad():
        outputs = model(inputs)
        losses = torch.stack([loss_fn(outputs[i:i + 1], targets[i:i + 1]) for i in range(b)])
        rows = []
        eye = torch.eye(b, dtype=losses.dtype, device=losses.device)
        try:
            for start in range(0, b, chunk):
                parts = torch.autograd.grad(losses, params, grad_outputs=eye[start:start + chunk],
                                            retain_graph=True, is_grads_batched=True, allow_unused=True)
                rows.append(_flatten(parts, params, eye[start:start + chunk].shape[0]))
        except (RuntimeError, NotImplementedError):
            rows = [_flatten(torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True),
                             params, None) for i in range(b)]
            return losses.detach(), torch.stack(rows)
    return losses.detach(), torch.cat(rows)


def _flatten(parts, params, rows):
    if rows is None:
        return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(parts, params)])
    return torch.cat([(torch.zeros((rows, p.numel()), dtype=p.dtype, device=p.device) if g is None
                       else g.reshape(rows, -1)) for g, p in zip(parts, params)], dim=1)
