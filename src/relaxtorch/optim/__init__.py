"""Low-precision and variance-reduced training algorithms."""
from .swalp import SWALP
from .svrg import HALP, SVRG

__all__ = ["HALP", "SVRG", "SWALP"]
