"""Communication state on a CUDA device: Moniqua's bit packing, and error-feedback residuals
restored from a CPU checkpoint (dist checkpoints load on the CPU). Skipped without a GPU."""
import pytest
import torch

from relaxtorch.comm import ErrorFeedback, TopK
from relaxtorch.comm._bits import pack as pack_bits, unpack as unpack_bits  # Moniqua's wire code

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_moniqua_packing_on_cuda_matches_cpu():
    codes = torch.randint(0, 4, (1001,), generator=torch.Generator().manual_seed(0))
    cpu = pack_bits(codes, 2)
    gpu = pack_bits(codes.cuda(), 2)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    assert torch.equal(unpack_bits(gpu, 2, codes.numel()).cpu(), codes)


def test_error_feedback_resumes_a_cpu_checkpoint_on_cuda():
    x = torch.randn(256, generator=torch.Generator().manual_seed(1))
    ef = ErrorFeedback(TopK(0.1))
    ef.compress(x)
    saved = ef.state_dict()  # on the CPU, as a checkpoint
    gpu = ErrorFeedback(TopK(0.1))
    gpu.load_state_dict(saved)
    ef_next = ef.decompress(ef.compress(x))
    gpu_next = gpu.decompress(gpu.compress(x.cuda()))
    assert torch.allclose(gpu_next.cpu(), ef_next)
