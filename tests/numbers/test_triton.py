"""The Triton GPU kernels, run in Triton's CPU interpreter, agree bit for bit with
the portable torch path. (On a CUDA machine, test_cuda.py checks them natively.)"""
import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
if os.environ["TRITON_INTERPRET"] != "1":
    pytest.skip("the interpreter check needs TRITON_INTERPRET=1", allow_module_level=True)

import relaxtorch as rt  # noqa: E402
from relaxtorch.numbers import _grid, _reference, _triton, rounding  # noqa: E402
from relaxtorch.numbers._modes import ROUNDING_CODES, SCALE_CODES  # noqa: E402

from .test_kernels import FLAT, MODES, _inputs, near_f32_max  # noqa: E402

BLOCKED = [rt.formats.MXFP8_E4M3, rt.formats.MXFP4, rt.formats.MXINT8,
           rt.MXFormat(rt.formats.FP6_E2M3, 7, scale_mode="ceil"),
           rt.MXFormat(rt.formats.FP8_E4M3, 16, scale_mode="even"), rt.formats.MXINT8_SM,
           rt.MXFormat(rt.formats.INT8, 5, scale_mode="ceil")]


def _same_bits(a, b):
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FLAT, ids=repr)
def test_triton_flat_matches_portable_path(fmt, mode):
    x = _inputs()[:2500]
    grid = _grid.element_grid(fmt)
    seeds = (123456789, 3000000000)
    m, away = ROUNDING_CODES[mode], rounding._AWAY[mode]
    got = _triton.round_flat(x, grid, m, seeds, away, int(rounding._f32_bits(grid.max_pos)),
                             int(rounding._f32_bits(grid.max_neg)))
    want = _reference.round_flat(x, grid, m, seeds, away)
    assert _same_bits(got, want)


@pytest.mark.parametrize("mode", ["nearest", "stochastic", "up", "nearest_away"])
@pytest.mark.parametrize("fmt", BLOCKED, ids=repr)
def test_triton_blocks_match_portable_path(fmt, mode):
    x = _inputs(1)[:3500].reshape(35, 100)
    x[3, 5] = float("inf")
    x[7, :40] = 0.0
    x = near_f32_max(x)
    grid = _grid.element_grid(fmt.elem)._replace(overflow=0)
    args = (fmt.block, grid, ROUNDING_CODES[mode], SCALE_CODES[fmt.scale_mode], fmt.elem_emax,
            _grid.elem_mantissa_bits(fmt.elem))
    seeds, away = (99, 4000000000), rounding._AWAY[mode]
    got = _triton.round_blocks(x, *args, rounding._E8M0, seeds, away)
    want = _reference.round_blocks(x, *args, *rounding._E8M0, seeds, away)
    assert _same_bits(got, want)


def test_triton_block_float_row_of_float32_max_matches_portable_path():
    """BlockFloat rows with a 2**127 scale: the -2**(wl-1) code would be -2**128."""
    x = near_f32_max(_inputs(2)[:3500].reshape(35, 100))
    grid = _grid.element_grid(rt.FixedPoint(8, 6))
    for mode in ("nearest", "down", "nearest_away"):
        args = (100, grid, ROUNDING_CODES[mode], 0, 0, 6)
        got = _triton.round_blocks(x, *args, rounding._UNBOUNDED, (0, 0), rounding._AWAY[mode])
        want = _reference.round_blocks(x, *args, *rounding._UNBOUNDED, (0, 0), rounding._AWAY[mode])
        assert _same_bits(got, want) and not torch.isinf(got[30:]).any()
