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

from .test_kernels import FLAT, MODES, _inputs  # noqa: E402

BLOCKED = [rt.formats.MXFP8_E4M3, rt.formats.MXFP4, rt.formats.MXINT8,
           rt.MXFormat(rt.formats.FP6_E2M3, 7, scale_mode="ceil"),
           rt.MXFormat(rt.formats.FP8_E4M3, 16, scale_mode="even")]


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


@pytest.mark.parametrize("mode", ["nearest", "stochastic", "up"])
@pytest.mark.parametrize("fmt", BLOCKED, ids=repr)
def test_triton_blocks_match_portable_path(fmt, mode):
    x = _inputs(1)[:1500].reshape(15, 100)
    x[3, 5] = float("inf")
    x[7, :40] = 0.0
    grid = _grid.element_grid(fmt.elem)._replace(overflow=0)
    args = (fmt.block, grid, ROUNDING_CODES[mode], SCALE_CODES[fmt.scale_mode], fmt.elem_emax,
            _grid.elem_mantissa_bits(fmt.elem))
    seeds, away = (99, 4000000000), rounding._AWAY[mode]
    got = _triton.round_blocks(x, *args, rounding._E8M0, seeds, away)
    want = _reference.round_blocks(x, *args, *rounding._E8M0, seeds, away)
    assert _same_bits(got, want)
