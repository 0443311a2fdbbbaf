"""Example orders as values: random reshuffling and its relatives, GraB and other balancing
sorters, per-example gradients, and a ``torch.utils.data.Sampler`` adapter.

>>> import torch, relaxtorch as rt
>>> order = rt.order.make("grab", n=8, d=3)
>>> state = order.init(torch.Generator().manual_seed(0))
>>> perm, state = order.epoch(state)            # this epoch's visiting order
>>> state = order.observe(state, perm[:4], torch.randn(4, 3))   # after a step of 4 examples
>>> sorted(order.epoch(state)[0].tolist())      # the next epoch's order
[0, 1, 2, 3, 4, 5, 6, 7]
"""
from ._base import Order, OrderState
from .balance import GraB, Herding, PairBalance, ProbBalance, RecursiveBalance
from .cdgrab import CDGraB
from .factored import FactoredGrads
from .grads import per_example_grads, set_grads_
from .projection import PROJECTIONS
from .recorder import LinearGrads, example_grads
from .registry import ORDERS, make, parse_spec
from .sampler import OrderSampler, WithIndices
from .simple import Blocks, FlipFlop, RandomReshuffling, Sequential, ShuffleOnce

__all__ = ["ORDERS", "PROJECTIONS", "Blocks", "CDGraB", "FactoredGrads", "FlipFlop", "GraB", "Herding", "LinearGrads", "Order", "OrderSampler", "OrderState",
           "PairBalance", "ProbBalance", "RandomReshuffling", "RecursiveBalance", "Sequential", "ShuffleOnce",
           "WithIndices", "example_grads", "make", "parse_spec", "per_example_grads", "set_grads_"]
