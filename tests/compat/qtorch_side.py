"""Run by /work/qt-venv's python (real QPyTorch, no relaxtorch): ``qtorch_side.py IN.pt OUT.pt``.

IN holds {"x": float32 tensor, "block_x": ..., "cases": [(kind, args), ...]}; OUT the list of
qtorch's nearest-rounded results.  Imports nothing when imported (pytest collects it).
"""


def main(argv) -> None:
    import torch
    from qtorch.quant import block_quantize, fixed_point_quantize, float_quantize

    spec = torch.load(argv[1], weights_only=True)
    fns = {"float": float_quantize, "fixed": fixed_point_quantize, "block": block_quantize}
    out = [fns[kind](spec["block_x"] if kind == "block" else spec["x"], *args, rounding="nearest")
           for kind, args in spec["cases"]]
    torch.save(out, argv[2])


if __name__ == "__main__":
    import sys

    main(sys.argv)
