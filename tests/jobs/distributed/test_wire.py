"""The job's wire format: trees round-trip exactly; what cannot travel is refused when sent, and a
hostile message is refused when received (before any allocation it asks for)."""
import json
import math
import pickle
from collections import OrderedDict, namedtuple

import pytest
import torch

from relaxtorch.jobs.distributed import wire


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b and str(a) == str(b)  # str: -0.0 stays -0.0


def _tree():
    g = torch.Generator().manual_seed(1)
    return OrderedDict(
        model=OrderedDict(w=torch.randn(3, 4, generator=g), b=torch.randn(4, generator=g)[::2]),  # non-contiguous
        optimizer={"state": {0: {"momentum_buffer": torch.randn(2, generator=g)}, 1: {}},
                   "param_groups": [{"params": [0, 1], "lr": 0.1, "nesterov": False, "foreach": None}]},
        dtypes=[torch.zeros(0, 2, dtype=d) if i % 3 == 0 else torch.arange(5).to(d) for i, d in
                enumerate(wire.DTYPES.values())],
        scalar=torch.tensor(2.5, dtype=torch.float64), generator=g.get_state(),
        numbers=(0, -7, 2 ** 80, 0.1, -0.0, math.inf, -math.inf, math.nan, 1e-310, True, None),
        text="rang ü 0 \u2603 \"quoted\" \\", nested=[[[], ()], {"": ""}])


def test_a_tree_round_trips_exactly():
    tree = _tree()
    sizes, buf = wire.encode(tree)
    assert sizes.dtype == torch.int64 and buf.dtype == torch.uint8 and buf.numel() == int(sizes.sum())
    got = wire.decode(sizes, torch.cat([buf, torch.full((9,), 255, dtype=torch.uint8)]))  # padding is ignored
    assert _same(tree, got)
    assert _same(tree, wire.decode(*wire.encode(got)))
    skeleton = bytes(buf[:int(sizes[0])].numpy())
    assert skeleton.isascii() and json.loads(skeleton)  # structure only: no tensor bytes in it
    assert int(sizes[1]) == sum(t.numel() * t.element_size() for t in _tensors(tree))


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        return [tree]
    items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else []
    return [t for v in items for t in _tensors(v)]


Point = namedtuple("Point", "x y")


@pytest.mark.parametrize("tree, what", [
    (object(), "object"), ({1, 2}, "set"), (Point(1, 2), "Point"), (b"raw", "bytes"), ({(1, 2): 0}, "dict key"),
    ({True: 0}, "dict key"), (torch.float32, "dtype"), (torch.zeros(2).to_sparse(), "sparse"),
    (torch.zeros(2, dtype=torch.float8_e4m3fn), "float8"), (torch.zeros([1] * 17), "17 dims"),
])
def test_what_cannot_travel_is_refused_when_sent(tree, what):
    with pytest.raises(ValueError, match="Invalid tree"):
        wire.encode(tree)


def test_too_deep_a_tree_is_refused():
    deep = []
    for _ in range(wire.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper"):
        wire.encode(deep)


def _message(skeleton, data=b""):
    text = skeleton if isinstance(skeleton, bytes) else json.dumps(skeleton).encode()
    raw = text + data
    return torch.tensor([len(text), len(data)]), torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else \
        torch.zeros(0, dtype=torch.uint8)


@pytest.mark.parametrize("message, why", [
    (_message(pickle.dumps({"a": 1})), "not JSON"),  # a pickle is refused, never loaded
    (_message(b"\xff\xfe"), "not JSON"),
    (_message(b'["dict",[["a",1]'), "not JSON"),
    (_message(["object", "os.system"]), "skeleton node 'object'"),
    (_message({"a": 1}), "node of type dict"),
    (_message([]), "node of type list"),
    (_message([1, 2]), "node of type list"),
    (_message(["tensor", "float128", [1]], b"\0" * 16), "tensor node"),
    (_message(["tensor", "float32", [-1]]), "tensor node"),
    (_message(["tensor", "float32", [True]], b"\0" * 4), "tensor node"),
    (_message(["tensor", "float32", [1.0]], b"\0" * 4), "tensor node"),
    (_message(["tensor", "float32", [2]], b"\0" * 4), "fill 8 bytes, the message has 4"),
    (_message(["tensor", "float32", [1]], b"\0" * 8), "fill 4 bytes, the message has 8"),
    (_message(["tensor", "uint8", [2 ** 30] * 3]), "more than"),
    (_message(["dict", [["a", 1], ["a", 2]]]), "duplicate dict key 'a'"),
    (_message(["dict", [[None, 1]]]), "dict entry"),
    (_message(["dict", [[1.5, 1]]]), "dict entry"),
    (_message(["list", 3]), "skeleton node 'list'"),
    (_message(b"[" * 100000 + b"]" * 100000), "not JSON|deeper"),
    (_message(('["list",[' * (wire.MAX_DEPTH + 2) + "0" + "]]" * (wire.MAX_DEPTH + 2)).encode()), "deeper"),
])
def test_a_hostile_message_is_refused(message, why):
    with pytest.raises(ValueError, match=f"Invalid message: .*({why})"):
        wire.decode(*message)


@pytest.mark.parametrize("sizes", [[-1, 0], [0, -1], [wire.MAX_SKELETON + 1, 0], [0, wire.MAX_DATA + 1], [1, 2, 3]])
def test_sizes_out_of_bounds_are_refused_before_anything_is_allocated(sizes):
    with pytest.raises(ValueError, match="Invalid message: sizes"):
        wire.check_sizes(torch.tensor(sizes))
    with pytest.raises(ValueError, match="Invalid message: sizes"):
        wire.check_sizes(torch.tensor(sizes[:2], dtype=torch.float64))


def test_a_short_buffer_is_refused():
    sizes, buf = wire.encode({"x": torch.zeros(3)})
    with pytest.raises(ValueError, match="uint8 bytes expected"):
        wire.decode(sizes, buf[:-1])
