"""The integer codes of rounding and MX scale modes, one home for every kernel.

The numba kernels, the LLVM IR, the Triton kernels and the torch reference all branch
on these codes; ``rounding.py`` maps the public mode names onto them.
"""
NEAREST, STOCHASTIC, DIRECTED = 0, 1, 2  # DIRECTED: toward zero, down or up (see rounding._AWAY)
FLOOR, CEIL, EVEN = 0, 1, 2  # MX shared-scale modes

ROUNDING_CODES = {"nearest": NEAREST, "stochastic": STOCHASTIC, "toward_zero": DIRECTED, "down": DIRECTED,
                  "up": DIRECTED}
SCALE_CODES = {"floor": FLOOR, "ceil": CEIL, "even": EVEN}
