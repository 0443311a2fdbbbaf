"""The integer codes of rounding and MX scale modes, one home for every kernel.

The numba kernels, the LLVM IR, the Triton kernels and the torch reference all branch
on these codes; ``rounding.py`` maps the public mode names onto them.
"""
NEAREST, STOCHASTIC, DIRECTED, NEAREST_AWAY = 0, 1, 2, 3  # DIRECTED: toward zero, down or up (rounding._AWAY)
FLOOR, CEIL, EVEN = 0, 1, 2  # MX shared-scale modes

ROUNDING_CODES = {"nearest": NEAREST, "stochastic": STOCHASTIC, "toward_zero": DIRECTED, "down": DIRECTED,
                  "up": DIRECTED, "nearest_away": NEAREST_AWAY}
SCALE_CODES = {"floor": FLOOR, "ceil": CEIL, "even": EVEN}
F32_MAX_BITS = 0x7F7FFFFF
