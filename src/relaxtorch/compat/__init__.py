"""Compatibility layers: a peer library's public names on relaxtorch's kernels."""
from . import qtorch

__all__ = ["qtorch"]
