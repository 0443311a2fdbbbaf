"""Run by /work/qt-venv's python (real QPyTorch, no relaxtorch): ``qtorch_side.py IN.pt OUT.pt``.

IN holds {"x": float32 tensor, "cases": [(kind, args), ...]}; OUT the list of qtorch results.
"""
import sys

import torch
from qtorch.quant import block_quantize, fixed_point_quantize, float_quantize

spec = torch.load(sys.argv[1], weights_only=True)
out = []
for kind, args in spec["cases"]:
    x = spec[kind + "_x"] if kind + "_x" in spec else spec["x"]
    if kind == "float":
        out.append(float_quantize(x, *args, rounding="nearest"))
    elif kind == "fixed":
        out.append(fixed_point_quantize(x, *args, rounding="nearest"))
    else:
        out.append(block_quantize(x, *args, rounding="nearest"))
torch.save(out, sys.argv[2])
