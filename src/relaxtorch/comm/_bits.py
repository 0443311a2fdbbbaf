"""Bit packing: ``width``-bit unsigned codes to and from a dense uint8 stream (little-endian bits).

Code ``i`` occupies stream bits ``i*width .. i*width+width-1`` (bit 0 of a byte first), so
``n`` codes take exactly ``ceil(n*width/8)`` bytes.  Widths 1, 2, 4 and 8 pack with a few
shifts; other widths go through a bit matrix.
"""
from __future__ import annotations

import torch


def packed_bytes(count: int, width: int) -> int:
    return (count * width + 7) // 8


def pack(codes: torch.Tensor, width: int) -> torch.Tensor:
    """Pack non-negative integer ``codes`` (< 2**width) into ``ceil(numel*width/8)`` uint8 bytes."""
    n = codes.numel()
    flat = codes.reshape(-1)
    if width == 8:
        return flat.to(torch.uint8)
    if 8 % width == 0:
        per = 8 // width
        pad = (-n) % per
        c = flat.to(torch.uint8)
        if pad:
            c = torch.cat([c, c.new_zeros(pad)])
        c = c.reshape(-1, per)
        out = c[:, 0].clone()
        for j in range(1, per):
            out |= c[:, j] << (j * width)
        return out
    shifts = torch.arange(width, device=codes.device, dtype=torch.int64)
    bits = ((flat.to(torch.int64).unsqueeze(1) >> shifts) & 1).to(torch.uint8).reshape(-1)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    bits = bits.reshape(-1, 8)
    out = bits[:, 0].clone()
    for j in range(1, 8):
        out |= bits[:, j] << j
    return out


def unpack(packed: torch.Tensor, width: int, count: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """The ``count`` codes packed by :func:`pack`, as ``dtype`` (int64; float32 for arithmetic)."""
    if width == 8:
        return packed[:count].to(dtype)
    mask = (1 << width) - 1
    if 8 % width == 0:
        shifts = torch.arange(0, 8, width, device=packed.device, dtype=torch.uint8)
        codes = (packed.unsqueeze(1) >> shifts) & mask
        return codes.reshape(-1)[:count].to(dtype)
    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)
    bits = ((packed.unsqueeze(1) >> shifts) & 1).reshape(-1)[: count * width]
    bits = bits.reshape(count, width).to(torch.int64)
    weights = torch.ones(width, dtype=torch.int64, device=packed.device) << torch.arange(
        width, device=packed.device, dtype=torch.int64)
    return (bits * weights).sum(1).to(dtype)


def width_for(count: int) -> int:
    """Bits needed to write any index in ``0 .. count-1`` (at least 1)."""
    return max(1, (count - 1).bit_length())
