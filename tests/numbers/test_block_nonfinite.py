"""BlockFloat with inf/NaN inside: element by element, as its fixed-point elements (probe F17)."""
import math

import pytest
import torch

import relaxtorch as rt

INF, NAN = float("inf"), float("nan")


def _expected(block: torch.Tensor, wl: int) -> torch.Tensor:
    """A slow float64 reading of the rule: finite values round as if the others were absent."""
    finite = [abs(v) for v in block.tolist() if math.isfinite(v)]
    amax = max(finite, default=0.0)
    e = math.floor(math.log2(amax)) if amax > 0 else 0
    step = 2.0 ** (e - (wl - 2))
    top, bottom = (2 ** (wl - 1) - 1) * step, -(2 ** (wl - 1)) * step
    out = []
    for v in block.tolist():
        if math.isnan(v):
            out.append(NAN)
        elif math.isinf(v):
            out.append(top if v > 0 else bottom)
        else:
            q = round(v / step) * step  # Python's round: ties to even, as "nearest"
            out.append(min(max(q, bottom), top))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("wl", [4, 8])
@pytest.mark.parametrize("specials", [[3], [0, 5], [1, 2, 3]])
def test_per_tensor_block(wl, specials):
    g = torch.Generator().manual_seed(wl + len(specials))
    x = torch.randn(40, generator=g) * 3
    for i, j in enumerate(specials):
        x[j] = (INF, -INF, NAN)[i % 3]
    got = rt.quantize(x, rt.BlockFloat(wl)).double()
    torch.testing.assert_close(got, _expected(x, wl), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_per_slice_blocks(dim):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 6, generator=g)
    x[1, 2], x[3, 0], x[4, 4], x[0, 5] = INF, NAN, -INF, INF
    x[2] = torch.tensor([INF, NAN, 0.0, 0.0, -INF, 0.0])  # a row with no finite non-zero value: exponent 0
    got = rt.quantize(x, rt.BlockFloat(8, dim=dim)).double()
    moved = x.movedim(dim, 0)
    want = torch.stack([_expected(moved[i].reshape(-1), 8).reshape(moved[i].shape) for i in range(moved.shape[0])])
    torch.testing.assert_close(got, want.movedim(0, dim), rtol=0, atol=0, equal_nan=True)


def test_finite_tensors_take_the_fast_path_unchanged():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[10] = INF
    a, b = rt.quantize(x, rt.BlockFloat(8)), rt.quantize(y, rt.BlockFloat(8))
    # the inf only saturates: every other element is what the finite tensor gives when its max is kept
    keep = torch.ones(1000, dtype=torch.bool)
    keep[10] = False
    if x.abs().argmax() != 10:
        assert torch.equal(a[keep], b[keep])
    assert torch.isfinite(b).all()
