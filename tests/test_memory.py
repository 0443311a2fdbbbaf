"""relaxtorch._memory.empty_like: an ordinary tensor, on huge pages where Linux offers them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from relaxtorch import _memory


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "absent"
    return text.split("[")[1].split("]")[0]


def _huge_kib(start: int, end: int) -> int:
    """AnonHugePages of the mappings overlapping [start, end) in /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo < end and hi > start
        elif inside and line.startswith("AnonHugePages:"):
            total += int(line.split()[1])
    return total


@pytest.mark.parametrize("shape,dtype", [((3, 5), torch.float32), ((4096, 1024), torch.float32), ((2**22,), torch.int16)])
def test_empty_like_is_an_ordinary_contiguous_tensor(shape, dtype):
    x = torch.ones(shape, dtype=dtype).t() if len(shape) == 2 else torch.ones(shape, dtype=dtype)
    out = _memory.empty_like(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
    out.copy_(x)
    assert torch.equal(out, x)
    out.resize_(7)  # torch's own storage: resizable, freed as usual
    assert out.numel() == 7


@pytest.mark.skipif(not sys.platform.startswith("linux") or _thp_mode() not in ("always", "madvise"),
                    reason="needs Linux transparent huge pages (always or madvise)")
def test_large_buffers_are_backed_by_huge_pages():
    out = _memory.empty_like(torch.empty(2**24))  # 64 MiB
    out.fill_(1.0)  # first touch
    start, end = out.data_ptr(), out.data_ptr() + out.numel() * 4
    assert _huge_kib(start, end) >= 32 * 1024  # at least half of it on 2 MiB pages
