"""Low-precision training building blocks: autograd quantizers, model conversion, OptimLP."""
from .convert import quantize_model
from .optim_lp import OptimLP
from .quantizer import Quantizer, quantizer

__all__ = ["OptimLP", "Quantizer", "quantize_model", "quantizer"]
