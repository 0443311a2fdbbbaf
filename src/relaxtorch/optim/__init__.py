"""Low-precision and variance-reduced training algorithms."""
from .svrg import HALP, SVRG

__all__ = ["HALP", "SVRG"]
