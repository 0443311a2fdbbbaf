"""examples/order_grab.py runs as a user would run it, and its two loops agree where they must."""
import importlib.util
import math
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_grab.py"


def _load():
    spec = importlib.util.spec_from_file_location("order_grab_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_first_epoch_agrees_then_orders_differ():
    example = _load()
    rr, grab = example.train("rr", 2), example.train("grab", 2)
    assert all(math.isfinite(v) for v in rr + grab)
    # epoch 1: both orders visit the same random permutation from the same weights, and GraB's
    # step (mean of per-example gradients) is the ordinary batch gradient: the same loss
    assert math.isclose(rr[0], grab[0], rel_tol=1e-4)
    # epoch 2: GraB's balanced order is another permutation, so the losses part
    assert rr[1] != grab[1]
    assert rr[1] < rr[0] and grab[1] < grab[0]


def test_example_with_sketched_gradients():
    example = _load()
    exact, sketched = example.train("grab", 2), example.train("grab", 2, sketch=16)
    # the first epoch is the same random permutation and the same steps; the sketch changes only
    # the order GraB builds for the second
    assert math.isclose(exact[0], sketched[0], rel_tol=1e-4)
    assert sketched[1] != exact[1] and sketched[1] < sketched[0]
