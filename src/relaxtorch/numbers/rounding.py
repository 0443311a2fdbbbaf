"""``quantize(x, fmt, rounding)``: round a tensor to the values of a number format."""
from __future__ import annotations

import contextlib
import functools
import warnings

import numpy as np
import torch

from .. import _memory
from . import _grid, _reference
from ._modes import NEAREST, NEAREST_AWAY, ROUNDING_CODES, SCALE_CODES, STOCHASTIC
from .formats import FORMAT_TYPES, BlockFloat, FixedPoint, FloatFormat, Format, MXFormat

ROUNDINGS = ("nearest", "stochastic", "toward_zero", "down", "up", "nearest_away")
# (round away from zero for positive values, for negative values) in the directed modes
_AWAY = {"toward_zero": (False, False), "down": (False, True), "up": (True, False),
         "nearest": (False, False), "stochastic": (False, False), "nearest_away": (False, False)}
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_E8M0 = (-127, 127)
_UNBOUNDED = (-(1 << 20), 1 << 20)

try:
    import numba

    from . import _cpu
except ImportError:  # numba missing or broken: the CPU uses the portable torch ops
    _cpu = None
_PARALLEL_MIN = 1 << 16  # elements; below this the CPU kernels run on one thread
_BLOCK_GROUP = 8192  # elements of blocks per parallel item of the CPU block kernels (tests shrink it)
_triton = None  # imported on the first CUDA tensor
_TRITON_MAX_BLOCK = 4096  # longer blocks (BlockFloat slices) use the portable path


def _gpu_kernels(device: torch.device):
    """The Triton module for CUDA tensors, or None (then the portable torch ops run)."""
    global _triton
    if device.type != "cuda":
        return None
    if _triton is None:
        try:
            from . import _triton as module
        except ImportError:
            module = False
        _triton = module
    return _triton or None


def _draw_seeds(generator, device) -> tuple[int, int]:
    """Two 32-bit seeds for the counter-based generator, drawn from a torch.Generator."""
    if isinstance(generator, int) and not isinstance(generator, bool):
        generator = torch.Generator().manual_seed(generator)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"Invalid generator: {generator!r} (expected a torch.Generator, an int seed or None)")
    gen_device = generator.device if generator is not None else torch.device(device)
    if gen_device.type == "cuda" and generator is None:
        generator = torch.cuda.default_generators[gen_device.index or 0]
    seeds = torch.randint(0, 2**32, (2,), generator=generator, device=gen_device, dtype=torch.int64)
    lo, hi = seeds.tolist()
    return lo, hi


def _check(x, fmt, rounding) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Invalid x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        hint = " (convert with .float(): formats are simulated in float32)" if x.dtype == torch.float64 else ""
        raise TypeError(f"Invalid x: dtype {x.dtype} is not supported; expected float32, float16 or bfloat16{hint}")
    if not isinstance(fmt, FORMAT_TYPES):
        raise TypeError(f"Invalid fmt: {fmt!r} (expected FloatFormat, FixedPoint, BlockFloat or MXFormat)")
    if rounding not in ROUNDINGS:
        raise ValueError(f"Invalid rounding: {rounding!r} (must be one of {ROUNDINGS})")


def quantize(x: torch.Tensor, fmt: Format, rounding: str = "nearest", *, generator=None) -> torch.Tensor:
    """Round every element of ``x`` to a value of ``fmt``; return a new tensor of x's dtype.

    ``rounding``: "nearest" (ties to even), "stochastic" (up with probability
    proportional to the distance from the lower neighbour, so E[q(x)] = x in
    range), "toward_zero", "down" (toward -inf), "up" (toward +inf) or
    "nearest_away" (ties away from zero: QPyTorch's and microxcaling's "nearest").
    ``generator`` (a torch.Generator or an int seed) drives stochastic rounding:
    the same seed gives the same bits on every run; None draws from torch's
    default generator.  NaN stays NaN; infinities follow the format's overflow policy.
    """
    _check(x, fmt, rounding)
    if x.numel() == 0:
        return x.clone()
    mode = ROUNDING_CODES[rounding]
    seeds = _draw_seeds(generator, x.device) if mode == STOCHASTIC else (0, 0)
    x32 = x.detach().float().contiguous()  # not differentiable: use rt.quantizer() for autograd
    return _narrow(_dispatch(x32, fmt, rounding, mode, seeds, None), x.dtype, fmt)


def quantize_(x: torch.Tensor, fmt: Format, rounding: str = "nearest", *, generator=None) -> torch.Tensor:
    """``quantize`` in place: ``x``'s elements become their rounded values (the same bits); returns ``x``.

    Contiguous float32 tensors are rounded where they lie, with no temporary (what
    optimizers rounding weights and state every step want); others round through a copy.
    """
    _check(x, fmt, rounding)
    if x.numel() == 0:
        return x
    mode = ROUNDING_CODES[rounding]
    seeds = _draw_seeds(generator, x.device) if mode == STOCHASTIC else (0, 0)
    with torch.no_grad():
        if x.dtype == torch.float32 and x.is_contiguous():
            _dispatch(x.detach(), fmt, rounding, mode, seeds, x.detach())
            torch.autograd.graph.increment_version(x)  # the kernels write behind autograd's back
        else:
            x.copy_(_narrow(_dispatch(x.detach().float().contiguous(), fmt, rounding, mode, seeds, None),
                            x.dtype, fmt))
    return x


def _narrow(res32: torch.Tensor, dtype: torch.dtype, fmt) -> torch.Tensor:
    """``res32`` in ``dtype``, warning when values of ``fmt`` beyond that dtype's range became inf
    (BF16's 65536 in a float16 tensor)."""
    if dtype == torch.float32:
        return res32
    out = res32.to(dtype)
    if _may_exceed(fmt, dtype):
        n = int((torch.isinf(out) & torch.isfinite(res32)).sum())
        if n:
            warnings.warn(f"quantize: {n} value(s) of {fmt!r} exceed {dtype}'s range and became inf in the "
                          f"{dtype} result; quantize a float32 tensor to keep them", RuntimeWarning, stacklevel=3)
    return out


@functools.lru_cache(maxsize=256)
def _may_exceed(fmt, dtype: torch.dtype) -> bool:
    """Whether a value of ``fmt`` can lie beyond ``dtype``'s largest finite value (block formats: any scale)."""
    if isinstance(fmt, (MXFormat, BlockFloat)):
        return True
    from .finfo import finfo
    return finfo(fmt).max > torch.finfo(dtype).max or -finfo(fmt).min > torch.finfo(dtype).max


def _dispatch(x32, fmt, rounding, mode, seeds, out) -> torch.Tensor:
    """Round contiguous float32 ``x32`` into ``out`` (which may be ``x32`` itself) or a new tensor."""
    if isinstance(fmt, (FloatFormat, FixedPoint)):
        return _round_flat(x32, _element_grid(fmt), mode, seeds, _AWAY[rounding], out)
    if isinstance(fmt, MXFormat):
        axis = _mx_axis(fmt, x32)
        if axis != max(x32.dim() - 1, 0):  # blocks along another axis: round x.transpose(axis, -1)
            swapped = x32.transpose(axis, -1).contiguous()  # (its stochastic bits too)
            return _into(_mx(swapped, fmt, rounding, mode, seeds, None).transpose(axis, -1).contiguous(), out)
        return _mx(x32, fmt, rounding, mode, seeds, out)
    res = _block_float(x32, fmt, mode, seeds, _AWAY[rounding], out)
    return res


def _mx(x32, fmt: MXFormat, rounding, mode, seeds, out) -> torch.Tensor:
    """MX blocks along the last dimension of contiguous ``x32``."""
    grid = _grid.element_grid(fmt.elem)._replace(overflow=0)  # MX elements saturate
    shape = (-1, x32.shape[-1]) if x32.dim() > 0 else (1, 1)
    res = _round_blocks(x32.reshape(shape), fmt.block, grid, mode, SCALE_CODES[fmt.scale_mode], fmt.elem_emax,
                        _grid.elem_mantissa_bits(fmt.elem), _E8M0, seeds, _AWAY[rounding],
                        None if out is None else out.reshape(shape))
    return res.reshape(x32.shape)


def _mx_axis(fmt: MXFormat, x32: torch.Tensor) -> int:
    ndim = max(x32.dim(), 1)
    if not -ndim <= fmt.axis < ndim:
        raise ValueError(f"Invalid axis: {fmt.axis} (tensor has {x32.dim()} dimensions)")
    return fmt.axis % ndim


_element_grid = functools.lru_cache(maxsize=256)(_grid.element_grid)


def _block_float(x32: torch.Tensor, fmt: BlockFloat, mode: int, seeds, away, out=None) -> torch.Tensor:
    elem = fmt.element
    grid = _grid.element_grid(elem)
    args = (grid, mode, 0, 0, elem.wl - 2, _UNBOUNDED, seeds, away)  # floor scale, emax 0
    if fmt.dim is None:  # one block: a parallel max, then the flat kernel on the shifted grid
        amax = _abs_max_bits(x32)
        if amax >= 0x7F800000:
            return _into(_block_float_nonfinite(x32, fmt, mode, seeds, away), out)
        if amax == 0:
            return _into(x32.clone(), out)
        return _round_flat(x32, _grid.shifted(grid, _floor_log2(amax)), mode, seeds, away, out)
    if not -x32.dim() <= fmt.dim < max(x32.dim(), 1):
        raise ValueError(f"Invalid dim: {fmt.dim} (tensor has {x32.dim()} dimensions)")
    moved = x32.movedim(fmt.dim, 0).contiguous()
    rows = moved.reshape(moved.shape[0], -1)
    if not bool(torch.isfinite(rows).all()):
        return _into(_block_float_nonfinite(x32, fmt, mode, seeds, away), out)
    res = _round_blocks(rows, max(rows.shape[1], 1), *args)
    return _into(res.reshape(moved.shape).movedim(0, fmt.dim).contiguous(), out)


def _block_float_nonfinite(x32: torch.Tensor, fmt: BlockFloat, mode: int, seeds, away) -> torch.Tensor:
    """BlockFloat of a tensor holding inf or NaN, element by element: non-finite values do not set
    the shared exponent; NaN stays NaN and +-inf saturate to their block's largest values, as the
    fixed-point elements do (a block with no finite non-zero value takes exponent 0)."""
    finite = torch.isfinite(x32)
    mags = torch.where(finite, x32.abs(), torch.zeros((), dtype=x32.dtype))
    if fmt.dim is None:
        amax = mags.max()
    else:
        dims = [d for d in range(x32.dim()) if d != fmt.dim % x32.dim()]
        amax = mags.amax(dim=dims, keepdim=True) if dims else mags
    exponent = torch.where(amax > 0, torch.frexp(amax)[1] - 1, torch.zeros_like(amax, dtype=torch.int32))
    # the largest float32 below 2**(e+1): beyond every grid value of the block, without raising its exponent
    edge = torch.ldexp(torch.full_like(amax, 1 - 2.0**-24), exponent + 1)
    stand_in = torch.where(finite, x32, torch.where(x32 > 0, edge, torch.where(x32 < 0, -edge, 0.0)))
    res = _block_float(stand_in.contiguous(), fmt, mode, seeds, away)
    return torch.where(torch.isnan(x32), x32, res)


def _into(result: torch.Tensor, out) -> torch.Tensor:
    """``result``, copied into ``out`` when one is given."""
    return result if out is None else out.copy_(result)


def _floor_log2(bits: int) -> int:
    """floor(log2(v)) of the positive finite float32 whose bits are given."""
    biased = bits >> 23
    return biased - 127 if biased else (bits & 0x7FFFFF).bit_length() - 1 - 149


def _abs_max_bits(x32: torch.Tensor) -> int:
    if _cpu is None or x32.device.type != "cpu":
        return int((x32.reshape(-1).view(torch.int32) & 0x7FFFFFFF).max())
    return int(_cpu.abs_max_bits(x32.reshape(-1).numpy().view(np.uint32)))


def _f32_bits(value: float) -> np.uint32:
    return np.array([value], dtype=np.float32).view(np.uint32)[0]


@functools.lru_cache(maxsize=256)
def _kernel_args(grid: _grid.Grid) -> tuple:
    return (grid.man, grid.emin, grid.k_low, _f32_bits(grid.max_pos), _f32_bits(grid.max_neg), grid.overflow)


def _round_flat(x32, grid, mode, seeds, away, out=None) -> torch.Tensor:
    gpu = _gpu_kernels(x32.device)
    if gpu is not None:
        return _into(gpu.round_flat(x32, grid, mode, seeds, away,
                                    int(_f32_bits(grid.max_pos)), int(_f32_bits(grid.max_neg))), out)
    if _cpu is None or x32.device.type != "cpu":
        return _into(_reference.round_flat(x32, grid, mode, seeds, away), out)
    out = _memory.empty_like(x32) if out is None else out
    src, dst = x32.view(-1).numpy().view(np.uint32), out.view(-1).numpy().view(np.uint32)
    common = _kernel_args(grid)
    with _threads_for(src.size):
        _flat_kernel(src, dst, mode, seeds, away, common)
    return out


@contextlib.contextmanager
def _threads_for(n: int):
    """Small tensors run on one thread: waking a busy pool costs more than the work."""
    if n >= _PARALLEL_MIN:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _flat_kernel(src, dst, mode, seeds, away, common) -> None:
    if mode == NEAREST:
        _cpu.flat_nearest(src, dst, *common)
    elif mode == NEAREST_AWAY:
        _cpu.flat_nearest_away(src, dst, *common)
    elif mode == STOCHASTIC:
        _cpu.flat_stochastic(src, dst, np.uint64(seeds[0]), np.uint64(seeds[1]), *common)
    else:
        _cpu.flat_directed(src, dst, away[0], away[1], *common)


def _round_blocks(rows, block, grid, mode, scale_mode, elem_emax, even_man, scale_range, seeds, away, out=None):
    block = min(block, max(rows.shape[1], 1))
    gpu = _gpu_kernels(rows.device)
    if gpu is not None and block <= _TRITON_MAX_BLOCK:
        return _into(gpu.round_blocks(rows, block, grid, mode, scale_mode, elem_emax, even_man, scale_range,
                                      seeds, away), out)
    if _cpu is None or rows.device.type != "cpu":
        return _into(_reference.round_blocks(rows, block, grid, mode, scale_mode, elem_emax, even_man,
                                             *scale_range, seeds, away), out)
    out = _memory.empty_like(rows) if out is None else out
    src, dst = rows.reshape(-1).numpy().view(np.uint32), out.view(-1).numpy().view(np.uint32)
    group = max(_BLOCK_GROUP // block, 1)
    common = (max(rows.shape[1], 1), block, group, scale_mode, elem_emax, even_man, scale_range[0], scale_range[1], grid.man, grid.emin,
              grid.k_low, np.float32(grid.max_pos), np.float32(grid.max_neg), grid.overflow)
    with _threads_for(src.size):
        _block_kernel(src, dst, mode, seeds, away, common)
    return out


def _block_kernel(src, dst, mode, seeds, away, common) -> None:
    if mode == NEAREST:
        _cpu.blocks_nearest(src, dst, *common)
    elif mode == NEAREST_AWAY:
        _cpu.blocks_nearest_away(src, dst, *common)
    elif mode == STOCHASTIC:
        _cpu.blocks_stochastic(src, dst, np.uint64(seeds[0]), np.uint64(seeds[1]), *common)
    else:
        _cpu.blocks_directed(src, dst, away[0], away[1], *common)
