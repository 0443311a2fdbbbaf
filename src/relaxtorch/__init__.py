"""relaxtorch: relaxed-consistency machine learning on PyTorch."""
from . import comm, compat, data, formats, mcmc, numbers, optim, order, parallel, quant
from .quant import OptimLP, Quantizer, quantize_model, quantizer
from .numbers import ROUNDINGS, BlockFloat, Finfo, FixedPoint, FloatFormat, MXFormat, finfo, quantize, quantize_
from .optim import HALP, SVRG, SWALP

__version__ = "0.1.0"

__all__ = ["comm", "compat", "data", "mcmc", "numbers", "optim", "order", "parallel", "quant", "BlockFloat", "Finfo", "FixedPoint", "FloatFormat", "MXFormat", "ROUNDINGS",
           "finfo", "formats", "quantize", "quantize_", "OptimLP", "Quantizer", "quantize_model", "quantizer",
           "HALP", "SVRG", "SWALP", "__version__"]
