"""Learning-rate schedules of the distributed runs, as a pure function of the step.

``constant``; ``step``: ``lr * lr_gamma ** (t // lr_step)``; ``cosine``: from ``lr``
to ``lr_final`` over the run; ``inverse_sqrt``: ``lr / sqrt(1 + t / lr_step)``.  A
function of the step alone, so a resumed run continues on the same schedule.  A
decaying step size is what lets decentralized runs reach consensus: with a constant
one, D-PSGD's and Moniqua's ranks stay apart at a distance set by the step size
(Moniqua: by its quantization grid).
"""
from __future__ import annotations

import math

SCHEDULES = ("constant", "step", "cosine", "inverse_sqrt")


def lr_at(schedule: str, lr: float, step: int, steps: int, *, lr_final: float = 0.0, lr_step: int = 0,
          lr_gamma: float = 0.1) -> float:
    """The step size at ``step`` (0-based) of a ``steps``-step run.

    ``lr_step`` 0 means a third of the run for ``step`` and a tenth for ``inverse_sqrt``.

    >>> lr_at("step", 0.1, 250, 300, lr_step=100)
    0.0010000000000000002
    >>> lr_at("cosine", 0.1, 300, 300, lr_final=0.01)
    0.01
    """
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr_final + (lr - lr_final) * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
    if schedule == "step":
        every = lr_step or max(1, steps // 3)
        return lr * lr_gamma ** (step // every)
    if schedule == "inverse_sqrt":
        tau = lr_step or max(1, steps // 10)
        return lr / math.sqrt(1.0 + step / tau)
    raise ValueError(f"Invalid schedule: {schedule!r} (choose from {', '.join(SCHEDULES)})")
