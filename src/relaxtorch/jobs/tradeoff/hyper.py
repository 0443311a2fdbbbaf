"""Training settings of one run and its learning-rate schedule."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

SCHEDULES = ("constant", "cosine", "linear")
SWA_EVERY = ("epoch", "step")


@dataclass(frozen=True)
class Hyper:
    """The ``[train]`` keys.  The L2 term is part of the loss (``weight_decay/2 |w|^2``).

    ``lr_schedule`` decays ``lr`` to ``lr * lr_final`` over the run (SGD) or over
    the phase before averaging (SWALP, which then holds ``swa_lr`` constant:
    the SWALP paper's schedule; ``swa_lr`` unset means ``lr``, so that with a
    constant schedule SWALP averages exactly the LP-SGD run of the same seed).
    SWALP averages every epoch or every step once ``swa_start`` (a fraction of
    the epochs) has passed.  SVRG and HALP use a constant ``lr`` and no
    momentum (as defined).  ``rounding`` is that of weights, gradients, momentum
    and HALP's offset; activations round to nearest and errors stochastically.
    """

    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "constant"
    lr_final: float = 0.0
    swa_start: float = 0.5
    swa_lr: float | None = None
    swa_every: str = "epoch"
    rounding: str = "stochastic"

    @property
    def averaging_lr(self) -> float:
        return self.lr if self.swa_lr is None else self.swa_lr

    def to_dict(self) -> dict:
        return asdict(self)


HYPER_KEYS = {f.name: {"int": int, "str": str}.get(f.type, float) for f in fields(Hyper)}  # key -> type


def check_hyper(values: dict) -> str | None:
    """Why these resolved settings are invalid (None when fine); names the key.

    Every number must be finite (NaN passes ``<= 0``, so the checks are ranges, not
    comparisons) and in a usable range: a step size above ``MAX_LR`` only overflows.
    """
    from ...numbers import ROUNDINGS
    from .._config import MAX_LR, MAX_PENALTY, range_error
    for key in ("epochs", "batch_size"):
        if values[key] < 1:
            return f"{key}: must be >= 1, got {values[key]}"
    checks = (("lr", 0, MAX_LR, True, False), ("swa_lr", 0, MAX_LR, True, False),
              ("momentum", 0, 1, False, True), ("swa_start", 0, 1, False, True),
              ("weight_decay", 0, MAX_PENALTY, False, False), ("lr_final", 0, MAX_LR, False, False))
    for key, lo, hi, lo_open, hi_open in checks:
        if values[key] is None:
            continue
        why = range_error(values[key], lo, hi, lo_open=lo_open, hi_open=hi_open)
        if why:
            return f"{key}: {why}"
    if values["lr"] * values["lr_final"] > MAX_LR:
        return f"lr_final: lr * lr_final must be <= {MAX_LR:g}, got {values['lr'] * values['lr_final']:g}"
    for key, choices in (("lr_schedule", SCHEDULES), ("swa_every", SWA_EVERY), ("rounding", ROUNDINGS)):
        if values[key] not in choices:
            return f"{key}: unknown value {values[key]!r} (choose from {', '.join(choices)})"
    return None


def decay(kind: str, start: float, end: float, t: float) -> float:
    """Learning rate at progress ``t`` in [0, 1] from ``start`` to ``end``."""
    t = min(max(t, 0.0), 1.0)
    if kind == "constant":
        return start
    if kind == "linear":
        return start + (end - start) * t
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


def lr_at(hp: Hyper, step: int, total: int, average_from: int | None = None) -> float:
    """SGD: decay over ``total`` steps.  SWALP: decay to ``swa_lr`` before ``average_from``, then constant."""
    if average_from is None:
        return decay(hp.lr_schedule, hp.lr, hp.lr * hp.lr_final, step / max(total, 1))
    if step >= average_from:
        return hp.averaging_lr
    return decay(hp.lr_schedule, hp.lr, hp.averaging_lr, step / max(average_from, 1))
