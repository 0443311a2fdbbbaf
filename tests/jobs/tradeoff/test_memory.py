"""Bytes stored, counted from the real state, against hand counts for a 3-feature logistic regression."""
import pytest
import torch

from relaxtorch.data import Dataset
from relaxtorch.numbers import BlockFloat, FixedPoint
from relaxtorch.numbers import presets as P
from relaxtorch.quant import OptimLP
from relaxtorch.jobs.tradeoff import memory
from relaxtorch.jobs.tradeoff.algorithms import RUNNERS
from relaxtorch.jobs.tradeoff.convex import ConvexObjective
from relaxtorch.jobs.tradeoff.hyper import Hyper
from relaxtorch.jobs.tradeoff.models import build_model
from relaxtorch.jobs.tradeoff.precisions import PRECISIONS


def _tiny() -> Dataset:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(12, 3, generator=g)
    y = (X[:, 0] > 0).long()
    return Dataset("tiny", "classification", X[:8], y[:8], X[8:], y[8:], 2)


# logreg on 3 features: weight (1, 3) + bias (1,) = 4 numbers.
# bfp8: 8 bits each + one 8-bit shared exponent per tensor: (3*8+8) + (1*8+8) = 48 bits = 6 bytes.
# fixed8: 4 * 8 bits = 4 bytes.  float32: 16 bytes.
HAND = {
    ("sgd", "fp32"): {"weights": 16, "momentum_buffer": 16},
    ("sgd", "bfp8"): {"weights": 6, "momentum_buffer": 6},
    ("sgd", "fixed8"): {"weights": 4, "momentum_buffer": 4},
    ("swalp", "bfp8"): {"weights": 6, "momentum_buffer": 6, "swa_average": 16},
    ("svrg", "fp32"): {"weights": 16, "anchor": 16, "full_grad": 16},
    ("svrg", "fixed8"): {"weights": 4, "anchor": 4, "full_grad": 16},
    ("halp", "fixed8"): {"weights": 16 + 4, "full_grad": 16},  # float32 anchor + 8-bit offset
}


@pytest.mark.parametrize("alg, prec", list(HAND))
def test_memory_matches_a_hand_count(alg, prec):
    data = _tiny()
    torch.manual_seed(0)
    hp = Hyper(epochs=3, batch_size=4, lr=0.05, weight_decay=0.1)
    obj = ConvexObjective(data, hp.weight_decay, 1)
    result = RUNNERS[alg](build_model("logreg", data), data, PRECISIONS[prec], hp, seed=0, objective=obj)
    assert result.memory == HAND[alg, prec]
    assert len(result.history) == 4


@pytest.mark.parametrize("fmt", [None, P.BF16, P.FP8_E4M3, FixedPoint(8, 6), BlockFloat(8), BlockFloat(8, dim=0),
                                 P.MXFP8_E4M3, P.MXFP4])
def test_tensor_bits_agrees_with_optimlp_accounting(fmt):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 3), torch.nn.Linear(3, 2))
    opt = OptimLP(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), weight=fmt, momentum=fmt)
    model(torch.randn(5, 40)).sum().backward()
    opt.step()
    theirs = opt.memory_bits()
    assert theirs["weight"] == sum(memory.tensor_bits(p, fmt) for p in model.parameters())
    assert theirs["momentum_buffer"] == theirs["weight"]


def test_state_bytes_ignores_step_counters_and_uses_dtype_by_default():
    p = torch.zeros(10)
    state = {p: {"step": torch.tensor(3.0), "buf": torch.zeros(10), "half": torch.zeros(10, dtype=torch.float16)}}
    assert memory.state_bytes(state, {"buf": FixedPoint(4, 2)}) == {"buf": 5, "half": 20}
