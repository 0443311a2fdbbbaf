"""Error feedback: remember what compression dropped and send it later (Seide et al., 2014;
Stich et al., NeurIPS 2018; Karimireddy et al., ICML 2019).

``ErrorFeedback(c).compress(x, key=k)`` compresses ``x + e_k`` and keeps the new residual
``e_k = (x + e_k) - decompress(payload)``.  Summed over steps, what was sent plus the last
residual equals what was given (a telescoping sum), so a biased compressor such as TopK or
Sign loses nothing in the long run.  The wrapper is itself a Compressor, a
``StatefulCompressor`` (its residuals are saved with the holder's checkpoint).
"""
from __future__ import annotations

import torch

from .compressors import _F32, Compressor, Payload, StatefulCompressor, _invalid


class ErrorFeedback(StatefulCompressor):
    """Wrap ``compressor`` with one residual per ``key`` (a bucket index, a parameter name...)."""

    unbiased = False

    def __init__(self, compressor: Compressor):
        if not isinstance(compressor, Compressor):
            raise _invalid("compressor", compressor, "a Compressor")
        if isinstance(compressor, ErrorFeedback):
            raise _invalid("compressor", compressor, "already has error feedback")
        self.compressor = compressor
        self._residuals: dict = {}

    def __repr__(self) -> str:
        return f"ErrorFeedback({self.compressor!r})"

    def compress(self, x: torch.Tensor, *, key=0, generator=None, step: int = 0) -> Payload:
        r = self._residuals.get(key)
        if r is None:
            corrected = x.detach().clone()
        elif r.shape != x.shape or r.dtype != x.dtype:
            raise _invalid("x", tuple(x.shape), f"key {key!r} holds a residual of shape {tuple(r.shape)} "
                                                f"and dtype {r.dtype}; reset(key) first")
        else:
            corrected = x.detach() + r.to(x.device)  # a residual loaded from a CPU checkpoint
        p = self.compressor.compress(corrected, generator=generator, step=step)
        self._residuals[key] = corrected - self.compressor.decompress(p)
        return p

    def decompress(self, p: Payload) -> torch.Tensor:
        return self.compressor.decompress(p)

    def wire_bytes(self, numel: int, dtype: torch.dtype = _F32) -> int:
        return self.compressor.wire_bytes(numel, dtype)

    def residual(self, key=0) -> torch.Tensor | None:
        """The error kept for ``key`` (None before its first message)."""
        return self._residuals.get(key)

    def reset(self, key=None) -> None:
        """Forget the residual of ``key`` (every key if None)."""
        if key is None:
            self._residuals.clear()
        else:
            self._residuals.pop(key, None)

    def state_dict(self) -> dict:
        return {"residuals": {k: v.clone() for k, v in self._residuals.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._residuals = {k: v.clone() for k, v in state["residuals"].items()}
