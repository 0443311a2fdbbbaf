"""What the ranks of a job send each other: trees of tensors and plain values as two tensors, never pickles.

The checkpoint paths move trees such as ``{"model": state_dict, "optimizer": state_dict,
"stats": {...}}`` between ranks: rank 0 gathers every rank's state, broadcasts a
checkpoint's header and scatters each rank its part on resume.  Their layout is not
fixed in advance (optimizer buffers appear after the first step; CocktailSGD's server
shard differs in size from rank to rank), so each message carries its own, as data:

* ``sizes``, an int64 tensor ``[skeleton_bytes, data_bytes]``, sent first and checked
  against :data:`MAX_SKELETON` and :data:`MAX_DATA` before any buffer is allocated;
* one uint8 tensor: the *skeleton*, ASCII JSON of the tree's structure, then the
  bytes of its tensors, in the order the skeleton lists them.

The skeleton's grammar is closed: a node is ``null``, ``true``/``false``, a number
(int or float, ``NaN``/``Infinity`` included: exact, floats round-trip through
``repr``) or a string, or a tagged array ``["list", [node...]]``, ``["tuple",
[node...]]``, ``["dict", [[key, node]...]]`` (keys str or int, no duplicates) or
``["tensor", dtype, [dim...]]`` (dtype one of :data:`DTYPES`).  The receiver checks
the UTF-8, the grammar, the depth and that the tensors fill the data bytes exactly;
anything else is a ``ValueError``.  Nothing received is unpickled or run: JSON
yields only dicts, lists, strings and numbers, and tensors are read as raw bytes.

The collectives run on the CPU for gloo and on the current CUDA device for NCCL.
"""
from __future__ import annotations

import json

import torch
import torch.distributed as dist

MAX_SKELETON = 64 << 20  # bytes of structure one message may carry
MAX_DATA = 1 << 40  # bytes of tensor data one message may carry (a sanity bound, before allocating)
MAX_DEPTH = 32  # nesting of containers in a tree
MAX_DIMS = 16
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128)}


def _invalid(why: str) -> ValueError:
    return ValueError(f"Invalid message: {why}")


# ---------------------------------------------------------------------------------------- encoding

def encode(tree) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sizes, buffer)``: ``tree`` as the two tensors that travel (see the module docstring).

    >>> sizes, buf = encode({"step": 3, "x": torch.arange(2.0)})
    >>> sizes.tolist(), decode(sizes, buf)
    ([52, 8], {'step': 3, 'x': tensor([0., 1.])})
    """
    tensors: list[torch.Tensor] = []
    skeleton = json.dumps(_skeleton(tree, tensors, 0), ensure_ascii=True, separators=(",", ":")).encode("ascii")
    parts = [torch.frombuffer(bytearray(skeleton), dtype=torch.uint8)] if skeleton else []
    parts += [t.reshape(-1).view(torch.uint8) for t in tensors]
    data = sum(t.numel() * t.element_size() for t in tensors)
    return torch.tensor([len(skeleton), data], dtype=torch.int64), torch.cat(parts)


def _skeleton(node, tensors: list, depth: int):
    if depth > MAX_DEPTH:
        raise ValueError(f"Invalid tree: nested deeper than {MAX_DEPTH}")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, torch.Tensor):
        name = str(node.dtype).removeprefix("torch.")
        if name not in DTYPES or node.layout != torch.strided or node.dim() > MAX_DIMS:
            raise ValueError(f"Invalid tree: a {node.dtype} {node.layout} tensor of {node.dim()} dims "
                             f"(strided tensors of {', '.join(DTYPES)} travel)")
        tensors.append(node.detach().cpu().contiguous())
        return ["tensor", name, list(node.shape)]
    if isinstance(node, tuple) and not hasattr(node, "_fields"):
        return ["tuple", [_skeleton(v, tensors, depth + 1) for v in node]]
    if isinstance(node, list):
        return ["list", [_skeleton(v, tensors, depth + 1) for v in node]]
    if isinstance(node, dict):
        for k in node:
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise ValueError(f"Invalid tree: dict key {k!r} (str or int keys travel)")
        return ["dict", [[k, _skeleton(v, tensors, depth + 1)] for k, v in node.items()]]
    raise ValueError(f"Invalid tree: {type(node).__name__} {node!r} "
                     "(tensors, dicts, lists, tuples, str, int, float, bool and None travel)")


# ---------------------------------------------------------------------------------------- decoding

def check_sizes(sizes: torch.Tensor) -> tuple[int, int]:
    """``(skeleton_bytes, data_bytes)`` of a received ``sizes`` tensor, within the bounds (else ValueError)."""
    if sizes.dtype != torch.int64 or sizes.shape != (2,):
        raise _invalid(f"sizes {sizes.dtype} {tuple(sizes.shape)} (int64 [2])")
    n, m = (int(v) for v in sizes.tolist())
    if not (0 <= n <= MAX_SKELETON and 0 <= m <= MAX_DATA):
        raise _invalid(f"sizes {n}, {m} (at most {MAX_SKELETON} bytes of structure, {MAX_DATA} of data)")
    return n, m


def decode(sizes: torch.Tensor, buf: torch.Tensor):
    """The tree ``encode`` made ``(sizes, buf)`` of (``buf`` may carry padding after its bytes)."""
    n, m = check_sizes(sizes)
    buf = buf.detach().cpu()
    if buf.dtype != torch.uint8 or buf.dim() != 1 or buf.numel() < n + m:
        raise _invalid(f"buffer {buf.dtype} {tuple(buf.shape)} ({n + m} uint8 bytes expected)")
    try:
        text = bytes(buf[:n].numpy()).decode("utf-8")
        skeleton = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _invalid(f"skeleton is not JSON text ({type(exc).__name__})") from None
    layout: list[tuple[torch.dtype, list[int]]] = []
    _check(skeleton, layout, 0)
    total = sum(_nbytes(d, s) for d, s in layout)
    if total != m:
        raise _invalid(f"the skeleton's tensors fill {total} bytes, the message has {m}")
    data, off, tensors = buf[n:n + m], 0, []
    for dtype, shape in layout:
        nb = _nbytes(dtype, shape)
        tensors.append(data[off:off + nb].clone().view(dtype).reshape(shape))
        off += nb
    return _build(skeleton, iter(tensors))


def _nbytes(dtype: torch.dtype, shape: list[int]) -> int:
    numel = 1
    for d in shape:
        numel *= d
    return numel * torch.empty(0, dtype=dtype).element_size()


def _check(node, layout: list, depth: int) -> None:
    """Validate the skeleton against the grammar; collect the tensors' (dtype, shape)."""
    if depth > MAX_DEPTH:
        raise _invalid(f"nested deeper than {MAX_DEPTH}")
    if node is None or isinstance(node, (bool, int, float, str)):
        return
    if not (isinstance(node, list) and node and isinstance(node[0], str)):
        raise _invalid(f"skeleton node of type {type(node).__name__}")
    tag, rest = node[0], node[1:]
    if tag == "tensor":
        if len(rest) != 2 or rest[0] not in DTYPES or not isinstance(rest[1], list) or len(rest[1]) > MAX_DIMS \
                or not all(type(d) is int and 0 <= d <= MAX_DATA for d in rest[1]):
            raise _invalid("tensor node (['tensor', dtype, [dims]])")
        layout.append((DTYPES[rest[0]], rest[1]))
        if _nbytes(*layout[-1]) > MAX_DATA:
            raise _invalid(f"a tensor of more than {MAX_DATA} bytes")
        return
    if tag in ("list", "tuple") and len(rest) == 1 and isinstance(rest[0], list):
        for v in rest[0]:
            _check(v, layout, depth + 1)
        return
    if tag == "dict" and len(rest) == 1 and isinstance(rest[0], list):
        keys = set()
        for item in rest[0]:
            if not (isinstance(item, list) and len(item) == 2 and type(item[0]) in (str, int)):
                raise _invalid("dict entry ([key, node], key str or int)")
            if item[0] in keys:
                raise _invalid(f"duplicate dict key {item[0]!r}")
            keys.add(item[0])
            _check(item[1], layout, depth + 1)
        return
    raise _invalid(f"skeleton node {tag[:40]!r}")


def _build(node, tensors):
    if not isinstance(node, list):
        return node
    tag = node[0]
    if tag == "tensor":
        return next(tensors)
    if tag == "list":
        return [_build(v, tensors) for v in node[1]]
    if tag == "tuple":
        return tuple(_build(v, tensors) for v in node[1])
    return {k: _build(v, tensors) for k, v in node[1]}


# ---------------------------------------------------------------------------------------- collectives

def _device(group) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _padded(buf: torch.Tensor, size: int, device) -> torch.Tensor:
    out = torch.zeros(size, dtype=torch.uint8, device=device)
    out[:buf.numel()] = buf.to(device)
    return out


def gather(tree, *, group=None) -> list | None:
    """Collective: every rank's ``tree`` to the group's rank 0, which returns them in rank order (others None)."""
    rank, world, dev = dist.get_rank(group), dist.get_world_size(group), _device(group)
    sizes, buf = encode(tree)
    all_sizes = [torch.empty(2, dtype=torch.int64, device=dev) for _ in range(world)]
    dist.all_gather(all_sizes, sizes.to(dev), group=group)
    all_sizes = [s.cpu() for s in all_sizes]
    longest = max(sum(check_sizes(s)) for s in all_sizes)  # every rank checks every size before allocating
    parts = [torch.empty(longest, dtype=torch.uint8, device=dev) for _ in range(world)] if rank == 0 else None
    dist.gather(_padded(buf, longest, dev), parts, group=group, group_dst=0)
    if rank != 0:
        return None
    return [decode(s, p) for s, p in zip(all_sizes, parts)]


def broadcast(tree=None, *, group=None):
    """Collective: the group's rank 0's ``tree``, on every rank (the others' argument is ignored)."""
    rank, dev = dist.get_rank(group), _device(group)
    sizes, buf = encode(tree) if rank == 0 else (torch.empty(2, dtype=torch.int64), None)
    sizes = sizes.to(dev)
    dist.broadcast(sizes, group=group, group_src=0)
    sizes = sizes.cpu()
    n, m = check_sizes(sizes)
    data = buf.to(dev) if rank == 0 else torch.empty(n + m, dtype=torch.uint8, device=dev)
    dist.broadcast(data, group=group, group_src=0)
    return tree if rank == 0 else decode(sizes, data)


def scatter(trees: list | None = None, *, group=None):
    """Collective: the group's rank 0 sends rank ``r`` its ``trees[r]``; every rank returns its own."""
    rank, world, dev = dist.get_rank(group), dist.get_world_size(group), _device(group)
    if rank == 0:
        if len(trees) != world:
            raise ValueError(f"Invalid trees: {len(trees)} (one for each of the {world} ranks)")
        encoded = [encode(t) for t in trees]
        table = torch.stack([s for s, _ in encoded])
    else:
        table = torch.empty(world, 2, dtype=torch.int64)
    table = table.to(dev)
    dist.broadcast(table, group=group, group_src=0)
    table = table.cpu()
    longest = max(sum(check_sizes(s)) for s in table)
    mine = torch.empty(longest, dtype=torch.uint8, device=dev)
    dist.scatter(mine, [_padded(b, longest, dev) for _, b in encoded] if rank == 0 else None,
                 group=group, group_src=0)
    return trees[0] if rank == 0 else decode(table[rank], mine)
