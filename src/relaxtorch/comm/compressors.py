"""Compressors: what a rank puts on the wire instead of a float32 tensor, with exact byte counts.

A compressor is a small frozen value: ``compress(x) -> Payload`` (the tensors actually
sent), ``decompress(payload) -> tensor`` (x's shape and dtype) and ``wire_bytes(numel)``,
the exact size of every payload for a tensor of ``numel`` elements (sizes never depend on
the data, so ranks can exchange payloads with fixed-size collectives).  This module holds
the value compressors (Identity, Cast, QSGD, Sign) and the ``StatefulCompressor``
marker; sparsifiers (RandomK, TopK,
Compose) live in :mod:`.sparsify`, error feedback in :mod:`.feedback`.

Inputs are floating-point tensors (an integer tensor raises ``ValueError``: there is no
gradient to compress).  Non-finite values are never decoded as finite ones, so an overflow
(an fp16/AMP gradient, a diverging model) still shows downstream, where ``GradScaler``
or the user's check skips the step: sparsifiers, ``Identity`` and casts to torch dtypes send
them as they are (a dtype without inf, as float8_e4m3fn, gives NaN); ``QSGD`` and ``Sign``
decode every element of a bucket holding one as NaN (its scale travels as NaN); ``Cast`` to a
relaxtorch format sends the format's inf or NaN, and raises ``ValueError`` for a format that
has neither (FixedPoint, FP4_E2M1), since it cannot carry the value.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from . import _bits, _kernels

_F32 = torch.float32
_TORCH_CASTS = tuple(d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                 getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None))
                     if d is not None)
_FINITE_ONLY = tuple(d for d in (getattr(torch, "float8_e4m3fn", None),) if d is not None)  # NaN, no inf


def _invalid(name: str, value, why: str) -> ValueError:
    return ValueError(f"Invalid {name}: {value!r} ({why})")


def _check_floating(x: torch.Tensor) -> None:
    """Compressors take floating-point tensors (a dtype check, no pass over the data)."""
    if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
        what = f"a tensor of {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"Invalid x: {what} (compressors take floating-point tensors; "
                         "convert with x.float() if the values are meant as numbers)")


@dataclass(frozen=True, eq=False)
class Payload:
    """One compressed message.  ``tensors`` is exactly what is sent, ``nbytes`` their total size.

    ``shared`` holds what every rank derives by itself (e.g. RandomK's step, from which the
    shared seed picks the same indices everywhere): it is never sent and counts 0 bytes.
    """

    tensors: dict[str, torch.Tensor]
    shape: torch.Size
    dtype: torch.dtype
    nbytes: int
    shared: dict = field(default_factory=dict)

    def to_bytes(self) -> torch.Tensor:
        """The payload as one uint8 buffer of ``nbytes`` bytes (tensors in key order)."""
        parts = [t.contiguous().reshape(-1).view(torch.uint8) for t in self.tensors.values()]
        if not parts:
            return torch.empty(0, dtype=torch.uint8)
        return torch.cat(parts) if len(parts) > 1 else parts[0].clone()

    def from_bytes(self, buf: torch.Tensor) -> "Payload":
        """A payload laid out like this one, its tensors read from ``buf`` (see :meth:`to_bytes`)."""
        tensors, off = {}, 0
        for name, t in self.tensors.items():
            nb = t.numel() * t.element_size()
            tensors[name] = buf[off:off + nb].clone().view(t.dtype).reshape(t.shape)
            off += nb
        if off != buf.numel():
            raise ValueError(f"Invalid buf: {buf.numel()} bytes (this payload has {off})")
        return Payload(tensors, self.shape, self.dtype, self.nbytes, self.shared)


def payload(tensors: dict, shape, dtype, shared=None) -> Payload:
    """A Payload whose ``nbytes`` is the size of ``tensors``."""
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    return Payload(tensors, torch.Size(shape), dtype, nbytes, dict(shared or {}))


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


class Compressor:
    """Base of every compressor.  ``unbiased``: E[decompress(compress(x))] == x."""

    unbiased: bool = False

    def compress(self, x: torch.Tensor, *, generator: torch.Generator | None = None, step: int = 0) -> Payload:
        raise NotImplementedError

    def decompress(self, p: Payload) -> torch.Tensor:
        raise NotImplementedError

    def wire_bytes(self, numel: int, dtype: torch.dtype = _F32) -> int:
        """Exact bytes ``compress`` sends for a tensor of ``numel`` elements of ``dtype``."""
        raise NotImplementedError

    def roundtrip(self, x: torch.Tensor, *, generator=None, step: int = 0) -> torch.Tensor:
        """``decompress(compress(x))``: what the receivers see."""
        return self.decompress(self.compress(x, generator=generator, step=step))

    def compress_and_decode(self, x: torch.Tensor, *, generator=None, step: int = 0) -> tuple[Payload, torch.Tensor]:
        """``(p, decompress(p))`` for ``p = compress(x)``, the same bits, where a compressor knows
        what it sent without decoding it (error feedback needs both).

        >>> import torch
        >>> from relaxtorch.comm import QSGD
        >>> p, sent = QSGD(4, 4).compress_and_decode(torch.tensor([0.7, -1.4, 0.0, 0.7]), generator=torch.Generator())
        >>> torch.equal(sent, QSGD(4, 4).decompress(p)), sent[1].item()
        (True, -1.399999976158142)
        """
        p = self.compress(x, generator=generator, step=step)
        return p, self.decompress(p)


class StatefulCompressor(Compressor):
    """A compressor whose messages depend on what it sent before (error feedback's residuals).

    Marked by type, so holders find it without duck typing: ``DataParallel`` and the DDP
    hook's state save its ``state_dict()`` in theirs, and ``Compose`` refuses it as a stage
    (a residual belongs around the whole stack).  ``state_dict()`` holds tensors, numbers and
    dicts only (``torch.load(weights_only=True)`` reads it back).
    """

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def reset(self, key=None) -> None:
        """Forget the state of ``key`` (all of it if None)."""
        raise NotImplementedError


def _rand(n: int, generator, device) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=dev).to(device)


@dataclass(frozen=True)
class Identity(Compressor):
    """Send the tensor as it is (the exact baseline)."""

    unbiased = True

    def compress(self, x, *, generator=None, step=0):
        _check_floating(x)
        return payload({"values": x.detach().reshape(-1).clone()}, x.shape, x.dtype)

    def decompress(self, p):
        return p.tensors["values"].reshape(p.shape).to(p.dtype, copy=True)

    def wire_bytes(self, numel, dtype=_F32):
        return numel * _itemsize(dtype)


@dataclass(frozen=True)
class Cast(Compressor):
    """Send every element in a narrower number format.

    ``fmt`` is a torch dtype (float16, bfloat16, float8_e4m3fn, float8_e5m2, float32, float64;
    torch's cast, round to nearest even) or a relaxtorch element format (FloatFormat of at
    most 16 bits, e.g. ``formats.FP8_E4M3``, or FixedPoint), rounded with ``rt.quantize``
    and ``rounding`` ("stochastic" makes it unbiased within range).  Element formats travel
    as their bit patterns, ``finfo(fmt).bits`` bits each, packed into bytes (NaN becomes 0
    in formats without a NaN pattern).  Block formats (MX, BlockFloat) carry per-block
    scales: use :class:`QSGD` for those.
    """

    fmt: object = torch.float16
    rounding: str = "nearest"

    def __post_init__(self):
        from ..numbers import ROUNDINGS, FixedPoint, FloatFormat

        if isinstance(self.fmt, torch.dtype):
            if self.fmt not in _TORCH_CASTS:
                raise _invalid("fmt", self.fmt, f"torch dtypes: {', '.join(map(str, _TORCH_CASTS))}")
            if self.rounding != "nearest":
                raise _invalid("rounding", self.rounding, "a torch cast rounds to nearest; use a relaxtorch format")
        elif isinstance(self.fmt, FloatFormat):
            if self.fmt.bits > 16:
                raise _invalid("fmt", self.fmt, "at most 16 bits; use torch.float32 or Identity")
        elif not isinstance(self.fmt, FixedPoint):
            raise _invalid("fmt", self.fmt, "a torch float dtype, a FloatFormat or a FixedPoint")
        if self.rounding not in ROUNDINGS:
            raise _invalid("rounding", self.rounding, f"must be one of {ROUNDINGS}")

    @property
    def unbiased(self) -> bool:
        return (self.fmt in (torch.float32, torch.float64)) or self.rounding == "stochastic"

    @property
    def bits(self) -> int:
        """Bits per element on the wire."""
        if isinstance(self.fmt, torch.dtype):
            return 8 * _itemsize(self.fmt)
        return self.fmt.bits

    def compress(self, x, *, generator=None, step=0):
        _check_floating(x)
        flat = x.detach().reshape(-1)
        if isinstance(self.fmt, torch.dtype):
            src = flat
            if self.fmt in _FINITE_ONLY:  # torch's cast saturates inf to the largest finite value there
                src = torch.where(torch.isfinite(flat), flat, torch.full_like(flat, float("nan")))
            values = src.to(self.fmt, copy=True)
            return payload({"values": values}, x.shape, x.dtype)
        from ..numbers import quantize

        src = flat if flat.dtype in (torch.float32, torch.float16, torch.bfloat16) else flat.float()
        q = quantize(src, self.fmt, self.rounding, generator=generator).float()
        q = self._keep_non_finite(src, q)
        codes = _encode(q, self.fmt)
        return payload({"codes": _bits.pack(codes, self.fmt.bits)}, x.shape, x.dtype)

    def _keep_non_finite(self, src: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``q`` with the input's non-finite values put back (rounding saturates inf in "fn"
        formats): inf where the format has it, else NaN; a format with neither raises."""
        bad = ~torch.isfinite(src)
        if not bool(bad.any()):
            return q
        specials = getattr(self.fmt, "specials", None)
        if specials not in ("ieee", "fn"):
            raise ValueError(f"Invalid x: {int(bad.sum())} non-finite value(s) ({self.fmt!r} has no inf or NaN "
                             "to send them as; use a format with specials, or check the tensor first)")
        keep = src.float() if specials == "ieee" else torch.full_like(q, float("nan"))
        return torch.where(bad, keep, q)

    def decompress(self, p):
        n = p.shape.numel()
        if isinstance(self.fmt, torch.dtype):
            return p.tensors["values"].to(p.dtype).reshape(p.shape)
        codes = _bits.unpack(p.tensors["codes"], self.fmt.bits, n)
        return _decode(codes, self.fmt).to(p.dtype).reshape(p.shape)

    def wire_bytes(self, numel, dtype=_F32):
        return _bits.packed_bytes(numel, self.bits)


@functools.lru_cache(maxsize=64)
def _code_table(fmt) -> torch.Tensor:
    """The value (float32) of every bit pattern ``sign | exponent | mantissa`` of a FloatFormat."""
    code = torch.arange(2**fmt.bits, dtype=torch.int64)
    m = (code & (2**fmt.man - 1)).double()
    e = (code >> fmt.man) & (2**fmt.exp - 1)
    neg = (code >> (fmt.exp + fmt.man)) == 1
    sub = m * 2.0 ** (1 - fmt.bias - fmt.man)
    mag = torch.where(e == 0, sub if fmt.subnormals else torch.zeros_like(m),
                      (2**fmt.man + m) * torch.pow(2.0, (e - fmt.bias - fmt.man).double()))
    top = e == 2**fmt.exp - 1
    if fmt.specials == "ieee":
        mag = torch.where(top, torch.where(m == 0, float("inf"), float("nan")), mag)
    elif fmt.specials == "fn":
        mag = torch.where(top & (m == 2**fmt.man - 1), float("nan"), mag)
    return torch.where(neg, -mag, mag).float()


def _fixed_low(fmt) -> int:
    return -(2 ** (fmt.wl - 1)) if fmt.signed else 0


def _encode(q: torch.Tensor, fmt) -> torch.Tensor:
    """Bit patterns of values already rounded to ``fmt`` (NaN: the format's NaN, else 0)."""
    from ..numbers import FixedPoint

    if isinstance(fmt, FixedPoint):
        return torch.round(torch.nan_to_num(q.double(), nan=0.0) / fmt.eps).long() - _fixed_low(fmt)
    a = q.double().abs()
    mant, ex = torch.frexp(a)  # a = mant * 2**ex, 0.5 <= mant < 1
    normal = a >= 2.0 ** fmt.emin
    e_field = torch.where(normal, ex.long() - 1 + fmt.bias, 0)
    m_field = torch.where(normal, (mant * 2 - 1) * 2.0**fmt.man, a * 2.0 ** (fmt.man - fmt.emin)).long()
    top = 2**fmt.exp - 1
    if fmt.specials == "ieee":
        e_field = torch.where(torch.isinf(a) | torch.isnan(a), top, e_field)
        m_field = torch.where(torch.isinf(a), 0, m_field)
        m_field = torch.where(torch.isnan(a), 2 ** max(fmt.man - 1, 0), m_field)
    elif fmt.specials == "fn":
        e_field = torch.where(torch.isnan(a), top, e_field)
        m_field = torch.where(torch.isnan(a), 2**fmt.man - 1, m_field)
    else:
        e_field = torch.where(torch.isnan(a), 0, e_field)
        m_field = torch.where(torch.isnan(a), 0, m_field)
    sign = torch.signbit(q).long() & ~torch.isnan(q)
    return (sign << (fmt.exp + fmt.man)) | (e_field << fmt.man) | m_field


def _decode(codes: torch.Tensor, fmt) -> torch.Tensor:
    from ..numbers import FixedPoint

    if isinstance(fmt, FixedPoint):
        return ((codes + _fixed_low(fmt)).double() * fmt.eps).float()
    return _code_table(fmt).to(codes.device)[codes]


@dataclass(frozen=True)
class QSGD(Compressor):
    """Bucketed b-bit quantization (QSGD, Alistarh et al., NeurIPS 2017; CocktailSGD's 4-bit buckets).

    The flattened tensor is cut into buckets of ``bucket`` elements (the last may be
    shorter).  Each bucket sends one float32 scale ``s = max|x|`` and, per element, an
    integer ``q`` in ``[-L, L]`` with ``L = 2**(bits-1) - 1`` (symmetric, zero exact; one
    of the 2**bits codes stays unused), so ``x ~ q * s / L``.  "stochastic" rounding of
    ``x * L / s`` rounds up with probability equal to the fraction, making the compressor
    unbiased; "nearest" rounds ties to even.  Wire: ``ceil(numel*bits/8)`` bytes of packed
    codes plus ``4 * ceil(numel/bucket)`` bytes of scales.  A bucket holding a non-finite
    value sends the scale NaN (and zero codes): all its elements decode as NaN.

    On CPU float32 tensors one compiled pass per bucket (scale, rounding, packing) replaces
    the torch ops; both draw the rounding noise as ``torch.rand(numel, generator=generator)``
    and give the same bits.
    """

    bits: int = 4
    bucket: int = 128
    rounding: str = "stochastic"

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 16:
            raise _invalid("bits", self.bits, "an int in 2..16; use Sign for 1 bit, Identity for 32")
        if isinstance(self.bucket, bool) or not isinstance(self.bucket, int) or self.bucket < 1:
            raise _invalid("bucket", self.bucket, "an int >= 1")
        if self.rounding not in ("stochastic", "nearest"):
            raise _invalid("rounding", self.rounding, "'stochastic' or 'nearest'")

    @property
    def unbiased(self) -> bool:
        return self.rounding == "stochastic"

    @property
    def levels(self) -> int:
        """L: the largest code magnitude."""
        return 2 ** (self.bits - 1) - 1

    def compress(self, x, *, generator=None, step=0):
        _check_floating(x)
        flat = x.detach().reshape(-1).float()
        noise = _rand(flat.numel(), generator, flat.device) if self.rounding == "stochastic" else None
        if _kernels.cpu_f32(flat):
            codes, scale = self._encode_cpu(flat, noise)
        else:
            codes, scale = self._encode_torch(flat, noise)
        return payload({"codes": codes, "scales": scale}, x.shape, x.dtype)

    def compress_and_decode(self, x, *, generator=None, step=0):
        flat = x.detach().reshape(-1)
        if not (_kernels.cpu_f32(flat) and x.dtype == torch.float32):
            return super().compress_and_decode(x, generator=generator, step=step)
        noise = _rand(flat.numel(), generator, flat.device) if self.rounding == "stochastic" else None
        decoded = torch.empty(flat.numel(), dtype=torch.float32)
        codes, scale = self._encode_cpu(flat, noise, decoded)
        return payload({"codes": codes, "scales": scale}, x.shape, x.dtype), decoded.reshape(x.shape)

    def _encode_cpu(self, flat, noise, decoded: torch.Tensor | None = None):
        """Packed codes and scales in one compiled pass; ``decoded`` (if given) receives the
        values the receivers will decode."""
        n = flat.numel()
        codes = torch.empty(_bits.packed_bytes(n, self.bits), dtype=torch.uint8)
        scale = torch.empty(_nbuckets(n, self.bucket), dtype=torch.float32)
        empty = np.empty(0, np.float32)
        _kernels.qsgd_encode(_kernels.np_(flat), empty if noise is None else _kernels.np_(noise), self.bucket,
                             self.bits, noise is not None, codes.numpy(), scale.numpy(),
                             empty if decoded is None else decoded.numpy())
        return codes, scale

    def _encode_torch(self, flat, noise):
        """The reference (and the path off the CPU): the same float32 operations as torch ops."""
        n, L = flat.numel(), self.levels
        rows = _rows(flat, self.bucket)
        scale = rows.abs().amax(1)
        bad = ~torch.isfinite(scale)  # a bucket holding inf or NaN
        scale = torch.where(bad, torch.full_like(scale, float("nan")), scale)
        unit = scale / L
        # divide (not multiply by 1/unit): 1/unit overflows for subnormal scales
        y = rows / torch.where(unit > 0, unit, torch.ones_like(unit)).unsqueeze(1)
        y = torch.where(bad.unsqueeze(1), torch.zeros_like(y), y).reshape(-1)[:n]
        if noise is not None:
            y = y.add_(noise).floor_()
        else:
            y = y.round_()
        codes = y.clamp_(-L, L).add_(L).to(torch.uint8 if self.bits <= 8 else torch.int64)
        return _bits.pack(codes, self.bits), scale

    def decompress(self, p):
        n, L = p.shape.numel(), self.levels
        codes, scales = p.tensors["codes"], p.tensors["scales"]
        if _kernels.cpu_f32(scales):
            out = torch.empty(n, dtype=torch.float32)
            _kernels.qsgd_decode(_kernels.np_(codes), _kernels.np_(scales), self.bucket, self.bits, out.numpy())
            return out.to(p.dtype).reshape(p.shape)
        return self._decode_torch(p)

    def _decode_torch(self, p):
        n, L = p.shape.numel(), self.levels
        q = _bits.unpack(p.tensors["codes"], self.bits, n, dtype=torch.float32).sub_(L)
        unit = p.tensors["scales"] / L
        return (_rows(q, self.bucket).mul_(unit.unsqueeze(1)).reshape(-1)[:n]).to(p.dtype).reshape(p.shape)

    def wire_bytes(self, numel, dtype=_F32):
        return _bits.packed_bytes(numel, self.bits) + 4 * _nbuckets(numel, self.bucket)


def _nbuckets(n: int, bucket: int) -> int:
    return -(-n // bucket)


def _rows(flat: torch.Tensor, bucket: int) -> torch.Tensor:
    """``flat`` zero-padded to whole buckets, one bucket per row."""
    pad = (-flat.numel()) % bucket
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.reshape(-1, bucket)


@dataclass(frozen=True)
class Sign(Compressor):
    """1-bit sign compression with a scale (1-bit SGD, Seide et al., Interspeech 2014; signSGD
    with error feedback, Karimireddy et al., ICML 2019).

    Each element sends one bit (1 for ``x >= 0``), each bucket (``bucket=None``: the whole
    tensor) one float32 scale ``mean |x|``; ``x ~ sign * scale``.  Biased: wrap it in
    ``ErrorFeedback``.  Wire: ``ceil(numel/8) + 4 * buckets`` bytes.  A bucket holding a
    non-finite value sends the scale NaN: all its elements decode as NaN.
    """

    bucket: int | None = None

    def __post_init__(self):
        if self.bucket is not None and (isinstance(self.bucket, bool) or not isinstance(self.bucket, int)
                                        or self.bucket < 1):
            raise _invalid("bucket", self.bucket, "an int >= 1 or None for one scale per tensor")

    def _bucket(self, n: int) -> int:
        return max(n, 1) if self.bucket is None else self.bucket

    def compress(self, x, *, generator=None, step=0):
        _check_floating(x)
        flat = x.detach().reshape(-1).float()
        n, b = flat.numel(), self._bucket(flat.numel())
        sums = _rows(flat.abs(), b).sum(1)
        counts = torch.full_like(sums, float(b))
        if n % b:
            counts[-1] = n % b
        scales = sums / counts
        bad = ~torch.isfinite(_rows(flat, b)).all(1)  # a bucket holding inf or NaN
        scales = torch.where(bad, torch.full_like(scales, float("nan")), scales)
        return payload({"signs": _bits.pack(flat >= 0, 1), "scales": scales}, x.shape, x.dtype)

    def decompress(self, p):
        n = p.shape.numel()
        signs = _bits.unpack(p.tensors["signs"], 1, n, dtype=torch.float32).mul_(2).sub_(1)
        rows = _rows(signs, self._bucket(n)).mul_(p.tensors["scales"].unsqueeze(1))
        return rows.reshape(-1)[:n].to(p.dtype).reshape(p.shape)

    def wire_bytes(self, numel, dtype=_F32):
        return _bits.packed_bytes(numel, 1) + 4 * _nbuckets(numel, self._bucket(numel))
