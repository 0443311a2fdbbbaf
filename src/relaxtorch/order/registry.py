"""``ORDERS`` (name -> class), ``make(name, n, d=None, **options)`` and ``parse_spec``, the orders
as the jobs' configs and the benchmarks' command lines name them."""
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


def parse_spec(spec) -> tuple[str, int | None]:
    """An order as configs name it: ``"grab"`` -> ("grab", None); ``"grab:sketch=64"`` -> ("grab", 64),
    the order balancing :class:`~relaxtorch.order.LinearGrads`'s per-layer sketches of 64 numbers.

    >>> parse_spec("pair:sketch=64")
    ('pair', 64)
    """
    from .recorder import MAX_SKETCH

    if not isinstance(spec, str):
        raise invalid("order", spec, "a string: NAME or NAME:sketch=K")
    name, colon, option = spec.partition(":")
    if name not in ORDERS:
        raise invalid("order", spec, f"known orders: {', '.join(ORDERS)}")
    if not colon:
        return name, None
    key, _, value = option.partition("=")
    if key != "sketch" or not value.isdigit() or not 1 <= int(value) <= MAX_SKETCH:
        raise invalid("order", spec, f"the only option is sketch=K, an integer in [1, {MAX_SKETCH}]")
    if not ORDERS[name].needs_gradients:
        raise invalid("order", spec, f"{name!r} does not balance gradients, so it has nothing to sketch")
    return name, int(value)
