"""Sparsifiers (RandomK, TopK) and Compose, the stacking of compressors CocktailSGD uses.

A sparsifier keeps ``kept(numel)`` of the flattened tensor's elements: its payload has the
kept ``values`` (x's dtype) plus whatever locates them.  ``Compose(RandomK(0.1), TopK(0.2),
QSGD(4, 128))`` runs each stage on the previous stage's kept values: TopK picks the
largest 20% *within* the random 10% subset (its indices count positions in the subset) and
the quantizer encodes the survivors; only the last stage's values go on the wire.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .._seeding import derive
from . import _bits, _kernels
from .compressors import (_F32, Compressor, Identity, Payload, StatefulCompressor, _check_floating, _invalid,
                          _itemsize, payload)


def _permutation(seed: int, numel: int, k: int | None = None) -> torch.Tensor:
    """A seeded uniformly random permutation of ``0..numel-1`` (its first ``k`` entries are
    drawn, the rest left in place: ``k=None`` draws all of it).  relaxtorch's own Fisher-Yates
    (``_kernels.permutation``: splitmix64, Lemire's unbiased bounds), so the same seed gives
    the same positions on every machine and torch version; int32 below 2**31 elements."""
    dtype = torch.int32 if numel < 2**31 else torch.int64
    out = torch.empty(numel, dtype=dtype)
    if numel >= 2**32:  # beyond the kernel's 32-bit bounds (a chunk of over 4e9 elements)
        return torch.randperm(numel, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    _kernels.permutation(seed, numel, numel if k is None else k, out.numpy())
    return out


@functools.lru_cache(maxsize=16)  # one per (chunk, cycle) in use
def _cycle_windows(seed: int, numel: int, k: int) -> torch.Tensor:
    """``numel // k`` disjoint windows of ``k`` positions each, sorted, a uniformly random
    partition (int32 or int64): the positions' window labels shuffled
    (``_kernels.window_labels``), then one pass in position order deals them out."""
    nwin = numel // k
    dtype = torch.int32 if numel < 2**31 else torch.int64
    if numel >= 2**32:  # beyond the kernel's 32-bit bounds: the windows of a torch permutation
        return _sorted_windows(_permutation(seed, numel), nwin, k)
    labels = _window_labels(seed, numel, k)
    out = torch.empty((nwin + 1, k), dtype=dtype)  # the last row: the numel % k left over
    _kernels.deal_labels(labels, out.numpy())
    return out[:nwin]


def _window_labels(seed: int, numel: int, k: int) -> np.ndarray:
    nwin = numel // k
    labels = np.empty(numel, np.uint8 if nwin < 255 else np.uint32)
    _kernels.window_labels(seed, nwin, k, labels)
    return labels


def _sorted_windows(perm: torch.Tensor, nwin: int, k: int) -> torch.Tensor:
    out = torch.empty((nwin, k), dtype=perm.dtype)
    _kernels.sorted_windows(perm.numpy(), nwin, k, out.numpy())
    return out


def _cycle_windows_reference(seed: int, numel: int, k: int) -> torch.Tensor:
    """:func:`_cycle_windows` from the same labels by ``nonzero`` (the reference the tests compare with)."""
    labels = torch.from_numpy(_window_labels(seed, numel, k).astype(np.int64))
    dtype = torch.int32 if numel < 2**31 else torch.int64
    return torch.stack([torch.nonzero(labels == j).reshape(-1) for j in range(numel // k)]).to(dtype)


def _check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise _invalid("ratio", ratio, "the fraction of elements kept, in (0, 1]")
    return float(ratio)


def kept_count(numel: int, ratio: float) -> int:
    """Elements a ratio keeps: ``round(ratio * numel)``, at least one of a non-empty tensor."""
    return 0 if numel == 0 else min(numel, max(1, round(ratio * numel)))


class Sparsifier(Compressor):
    """A compressor that sends ``kept(numel)`` values plus ``index_bytes(numel)`` bytes locating them."""

    ratio: float

    def kept(self, numel: int) -> int:
        return kept_count(numel, self.ratio)

    def index_bytes(self, numel: int) -> int:
        raise NotImplementedError

    def wire_bytes(self, numel, dtype=_F32):
        return self.index_bytes(numel) + self.kept(numel) * _itemsize(dtype)

    def compress_and_decode(self, x, *, generator=None, step=0):
        p = self.compress(x, generator=generator, step=step)
        return p, self.decode_values(p, p.tensors["values"])

    def decode_values(self, p: Payload, values: torch.Tensor) -> torch.Tensor:
        """What ``p`` decodes to with its kept values replaced by ``values`` (how ``Compose``
        decodes: the next stage's output takes the place of this stage's values)."""
        return self.decompress(Payload({**p.tensors, "values": values}, p.shape, p.dtype, 0, p.shared))

    def _scatter(self, values: torch.Tensor, index: torch.Tensor, p: Payload) -> torch.Tensor:
        out = torch.zeros(p.shape.numel(), dtype=p.dtype, device=values.device)
        out[index] = values.to(p.dtype)
        return out.reshape(p.shape)


@dataclass(frozen=True)
class RandomK(Sparsifier):
    """Keep a random ``ratio`` of the elements, the same positions on every rank.

    The positions come from ``seed`` and the ``step`` passed to ``compress`` (a counter all
    ranks agree on), not from the ``generator``, so ranks whose generators differ (as they
    should for stochastic rounding) still pick the same subset, and only values are sent:
    the index costs 0 bytes.  ``scale=True`` multiplies the values by ``numel/k`` (unbiased,
    Wangni et al., NeurIPS 2018); the default ``False`` sends them as they are, which with
    error feedback (CocktailSGD) keeps the residual small instead of amplifying noise.

    ``cycle=True`` draws without replacement across steps, as the reference CocktailSGD
    code's ``random_wo_replacement``: one seeded random partition serves ``numel // k``
    consecutive steps, each taking the next window of ``k`` positions, so no position is
    sent twice in a cycle (the ``numel % k`` left over wait for a later cycle); each step's
    subset is still uniformly random, and the partition (cached: a shuffle of one window
    label per position, dealt out in position order) costs one draw per cycle instead of one
    per step.

    The shuffles are relaxtorch's own seeded Fisher-Yates (splitmix64 with unbiased bounds,
    compiled), not ``torch.randperm``: the same seed picks the same positions on every
    machine and torch version, and a step without ``cycle`` draws only ``k`` swaps.
    """

    ratio: float = 0.1
    scale: bool = False
    seed: int = 0
    cycle: bool = False

    def __post_init__(self):
        object.__setattr__(self, "ratio", _check_ratio(self.ratio))
        for name in ("scale", "cycle"):
            if not isinstance(getattr(self, name), bool):
                raise _invalid(name, getattr(self, name), "a bool")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise _invalid("seed", self.seed, "an int shared by all ranks")

    @property
    def unbiased(self) -> bool:
        return self.scale

    def indices(self, numel: int, step: int) -> torch.Tensor:
        """The sorted positions kept at ``step`` (int64, CPU)."""
        k = self.kept(numel)
        if not self.cycle:  # the first k entries of a permutation: k draws, one pass to sort them
            return _sorted_windows(_permutation(derive(self.seed, step), numel, k), 1, k)[0].long()
        if k == 0:
            return torch.zeros(0, dtype=torch.int64)
        epoch, window = divmod(step, numel // k)
        return _cycle_windows(derive(self.seed, 0xC1C1E, epoch), numel, k)[window].long()

    def index_bytes(self, numel):
        return 0

    def compress(self, x, *, generator=None, step=0):
        _check_floating(x)
        flat = x.detach().reshape(-1)
        n = flat.numel()
        idx = self.indices(n, step).to(flat.device)
        values = flat[idx]
        if self.scale:
            values = values * (n / max(idx.numel(), 1))
        return payload({"values": values}, x.shape, x.dtype, shared={"step": int(step)})

    def decompress(self, p):
        idx = self.indices(p.shape.numel(), p.shared["step"]).to(p.tensors["values"].device)
        return self._scatter(p.tensors["values"], idx, p)


@dataclass(frozen=True)
class TopK(Sparsifier):
    """Keep the ``ratio`` of the elements largest in magnitude (Aji & Heafield, EMNLP 2017;
    Stich et al., NeurIPS 2018).

    Sends the values (in position order) and their positions, in whichever form is smaller
    for the sizes (never for the data): ``k`` indices of ``ceil(log2(numel))`` bits each
    (20 bits for a million elements, not 64), or a bitmask of ``numel`` bits when
    ``k * ceil(log2(numel)) >= numel`` (the reference CocktailSGD code sends masks).  Ties
    at the threshold go to the lowest positions and NaN counts as the largest magnitude, so
    the kept set is defined bit for bit (on CPU float32 tensors a compiled selection, one
    pass after a radix select; elsewhere a stable sort).  Biased: wrap it in ``ErrorFeedback``.
    """

    ratio: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "ratio", _check_ratio(self.ratio))

    def uses_mask(self, numel: int) -> bool:
        """Whether positions travel as a bitmask (else as packed indices)."""
        return numel <= self.kept(numel) * _bits.width_for(numel)

    def index_bytes(self, numel):
        if self.uses_mask(numel):
            return _bits.packed_bytes(numel, 1)
        return _bits.packed_bytes(self.kept(numel), _bits.width_for(numel))

    def compress(self, x, *, generator=None, step=0):
        _check_floating(x)
        flat = x.detach().reshape(-1)
        n = flat.numel()
        k = self.kept(n)
        if k and _kernels.cpu_f32(flat):
            return self._compress_cpu(flat, n, k, x)
        return self._compress_torch(flat, n, k, x)

    def _compress_cpu(self, flat, n, k, x):
        use_mask = self.uses_mask(n)
        mask = torch.empty(_bits.packed_bytes(n, 1) if use_mask else 0, dtype=torch.uint8)
        idx, values = torch.empty(0 if use_mask else k, dtype=torch.int64), torch.empty(k, dtype=torch.float32)
        _kernels.topk_select(_kernels.np_(flat), k, mask.numpy(), idx.numpy(), values.numpy())
        where = {"mask": mask} if use_mask else {"indices": _bits.pack(idx, _bits.width_for(n))}
        return payload({"values": values, **where}, x.shape, x.dtype)

    def _compress_torch(self, flat, n, k, x):
        """The reference (and the path off the CPU or for other dtypes): a stable descending sort
        of ``|x|`` (NaN first, ties in position order), the same positions as the compiled path."""
        idx = torch.sort(flat.abs(), descending=True, stable=True).indices[:k].sort().values if k < n else \
            torch.arange(n, device=flat.device)
        if self.uses_mask(n):
            mask = torch.zeros(n, dtype=torch.uint8, device=flat.device)
            mask[idx] = 1
            where = {"mask": _bits.pack(mask, 1)}
        else:
            where = {"indices": _bits.pack(idx, _bits.width_for(n))}
        return payload({"values": flat[idx], **where}, x.shape, x.dtype)

    def decompress(self, p):
        n = p.shape.numel()
        if "mask" in p.tensors and _kernels.cpu_f32(p.tensors["values"]) and p.dtype == torch.float32:
            out = torch.empty(n, dtype=torch.float32)
            _kernels.mask_scatter(_kernels.np_(p.tensors["mask"]), _kernels.np_(p.tensors["values"]), out.numpy())
            return out.reshape(p.shape)
        if "mask" in p.tensors:
            idx = torch.nonzero(_bits.unpack(p.tensors["mask"], 1, n)).reshape(-1)
        else:
            idx = _bits.unpack(p.tensors["indices"], _bits.width_for(n), self.kept(n))
        return self._scatter(p.tensors["values"], idx, p)


class Compose(Compressor):
    """Stages run in order, each on the values the previous one kept (see the module doc).

    Every stage but the last must be a sparsifier; the last may be any stateless compressor
    (a quantizer, Sign, Cast, or another sparsifier).  ``Compose()`` sends the tensor as is.
    Unbiased when every stage is.
    """

    def __init__(self, *stages: Compressor):
        flat = []
        for s in stages:
            flat.extend(s.stages if isinstance(s, Compose) else [s])
        for i, s in enumerate(flat):
            if not isinstance(s, Compressor) or isinstance(s, StatefulCompressor):
                raise _invalid(f"stages[{i}]", s, "a stateless Compressor (wrap the Compose in ErrorFeedback)")
            if i < len(flat) - 1 and not isinstance(s, Sparsifier):
                raise _invalid(f"stages[{i}]", s, "only sparsifiers (RandomK, TopK) may come before the last stage")
        self.stages = tuple(flat) or (Identity(),)

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.stages))})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Compose) and self.stages == other.stages

    def __hash__(self) -> int:
        return hash(self.stages)

    @property
    def unbiased(self) -> bool:
        return all(s.unbiased for s in self.stages)

    def _sizes(self, numel: int) -> list[int]:
        sizes = [numel]
        for s in self.stages[:-1]:
            sizes.append(s.kept(sizes[-1]))
        return sizes

    def compress(self, x, *, generator=None, step=0):
        _check_floating(x)
        last = len(self.stages) - 1
        tensors, shared, cur = {}, {}, x
        for i, stage in enumerate(self.stages):
            p = stage.compress(cur, generator=generator, step=step)
            for name, t in p.tensors.items():
                if i == last or name != "values":
                    tensors[f"{i}.{name}"] = t
            shared.update({f"{i}.{k}": v for k, v in p.shared.items()})
            cur = p.tensors.get("values")
        return payload(tensors, x.shape, x.dtype, shared)

    def compress_and_decode(self, x, *, generator=None, step=0):
        _check_floating(x)
        last = len(self.stages) - 1
        tensors, shared, cur, parts = {}, {}, x, []
        for i, stage in enumerate(self.stages):
            if i == last:
                p, values = stage.compress_and_decode(cur, generator=generator, step=step)
            else:
                p = stage.compress(cur, generator=generator, step=step)
            parts.append(p)
            for name, t in p.tensors.items():
                if i == last or name != "values":
                    tensors[f"{i}.{name}"] = t
            shared.update({f"{i}.{k}": v for k, v in p.shared.items()})
            cur = p.tensors.get("values")
        for i in reversed(range(last)):
            values = self.stages[i].decode_values(parts[i], values)
        return payload(tensors, x.shape, x.dtype, shared), values.to(x.dtype).reshape(x.shape)

    def decompress(self, p):
        sizes = self._sizes(p.shape.numel())
        values = None
        for i in reversed(range(len(self.stages))):
            prefix = f"{i}."
            tensors = {k[len(prefix):]: t for k, t in p.tensors.items() if k.startswith(prefix)}
            shared = {k[len(prefix):]: v for k, v in p.shared.items() if k.startswith(prefix)}
            if values is not None:
                tensors["values"] = values
            shape = p.shape if i == 0 else torch.Size([sizes[i]])
            values = self.stages[i].decompress(Payload(tensors, shape, p.dtype, 0, shared))
        return values

    def wire_bytes(self, numel, dtype=_F32):
        sizes = self._sizes(numel)
        return (sum(s.index_bytes(n) for s, n in zip(self.stages[:-1], sizes))
                + self.stages[-1].wire_bytes(sizes[-1], dtype))
