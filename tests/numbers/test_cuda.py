"""On a CUDA device, quantize gives the same bits as on the CPU (Triton kernels or the
portable path), stochastic rounding included. Skipped without a GPU."""
import pytest
import torch

from .test_kernels import BLOCKED, FLAT, MODES, _inputs
from relaxtorch.numbers.rounding import quantize

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FLAT + BLOCKED, ids=repr)
def test_cuda_matches_cpu(fmt, mode):
    x = _inputs()[:6000].reshape(60, 100)
    cpu = quantize(x, fmt, mode, generator=5)
    gpu = quantize(x.cuda(), fmt, mode, generator=5).cpu()
    assert torch.equal(cpu.view(torch.int32), gpu.view(torch.int32))


def test_cuda_half_and_bfloat16_inputs():
    x = _inputs()[:4096].cuda()
    for dt in (torch.float16, torch.bfloat16):
        got = quantize(x.to(dt), FLAT[2])
        assert got.dtype == dt and got.device.type == "cuda"
        assert torch.equal(got.cpu(), quantize(x.to(dt).cpu(), FLAT[2]))
