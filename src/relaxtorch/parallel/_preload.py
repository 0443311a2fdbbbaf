"""Imported by the multiprocessing fork server before it forks any worker.

It imports torch, numba and the worker code and starts numba's JIT once, so a
forked worker only maps its (cached) kernel: start-up in milliseconds, not seconds.
"""
from . import _kernels, _worker  # noqa: F401

_kernels.init_jit()
