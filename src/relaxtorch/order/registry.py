"""``ORDERS`` (name -> class) and ``make(name, n, d=None, **options)``."""
from __future__ import annotations

from ._base import Order, invalid
from .cdgrab import CDGraB
from .balance import GraB, Herding, PairBalance, ProbBalance, RecursiveBalance
from .simple import Blocks, FlipFlop, RandomReshuffling, Sequential, ShuffleOnce

ORDERS: dict[str, type[Order]] = {cls.name: cls for cls in (
    Sequential, RandomReshuffling, ShuffleOnce, FlipFlop, Blocks,
    Herding, GraB, PairBalance, RecursiveBalance, ProbBalance)}
ORDERS[CDGraB.name] = CDGraB  # a collective across torch.distributed ranks (a world of one without a group)


def make(name: str, n: int, d: int | None = None, **options) -> Order:
    """The order called ``name`` for ``n`` examples (``d``: gradient length, for balancing orders;
    accepted and unused by the others, so a loop can build every order the same way).

    >>> make("blocks", 10, k=5)
    Blocks(n=10, k=5)
    >>> make("grab", 100, d=8).needs_gradients
    True
    """
    if name not in ORDERS:
        raise invalid("name", name, f"known orders: {', '.join(ORDERS)}")
    cls = ORDERS[name]
    try:
        return cls(n, d, **options) if cls.needs_gradients else cls(n, **options)
    except TypeError as exc:  # an option the order does not take
        raise invalid("options", options, f"{name!r}: {exc}") from None
