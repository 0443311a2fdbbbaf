"""Run a kernel for a number of steps and keep the positions and the per-step costs."""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["ChainResult", "run_chain"]


class ChainResult(NamedTuple):
    samples: torch.Tensor  # [num_steps, *shape]: the position after each step
    accepted: torch.Tensor  # bool [num_steps]
    data_touched: torch.Tensor  # int64 [num_steps]: each iteration's batch size
    energy_evals: torch.Tensor  # int64 [num_steps]
    state: object  # the last state

    @property
    def acceptance_rate(self) -> float:
        return float(self.accepted.double().mean())

    @property
    def mean_batch(self) -> float:
        return float(self.data_touched.double().mean())


def run_chain(kernel, generator: torch.Generator, state, num_steps: int, step_size: float) -> ChainResult:
    """``num_steps`` steps of an MH kernel from ``state`` (tensor positions), collecting each position.

    >>> from relaxtorch.mcmc.mh import FullMH
    >>> from relaxtorch.mcmc.mh.models import LogisticRegression
    >>> k = FullMH(LogisticRegression(torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 0])))
    >>> r = run_chain(k, torch.Generator().manual_seed(0), k.init(torch.zeros(1)), 5, 0.5)
    >>> r.samples.shape, r.mean_batch
    (torch.Size([5, 1]), 2.0)
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"Invalid num_steps: {num_steps!r} (must be an int >= 1)")
    pos = state.position
    samples = torch.empty((num_steps, *pos.shape), dtype=pos.dtype, device=pos.device)
    acc = torch.zeros(num_steps, dtype=torch.bool)
    touched = torch.zeros(num_steps, dtype=torch.int64)
    evals = torch.zeros(num_steps, dtype=torch.int64)
    for t in range(num_steps):
        state, info = kernel.step(generator, state, None, step_size)
        samples[t] = state.position
        acc[t], touched[t], evals[t] = info.accepted, info.data_touched, info.energy_evals
    return ChainResult(samples, acc, touched, evals, state)
