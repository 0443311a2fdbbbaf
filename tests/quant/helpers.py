"""Representability checks shared by the quant tests."""
import torch

from relaxtorch.numbers import BlockFloat, quantize


def representable(t: torch.Tensor, fmt) -> bool:
    """Every element of ``t`` is a value of ``fmt``.

    Element formats and MX: ``quantize(t, fmt, "nearest")`` returns ``t``.
    BlockFloat is not idempotent (a block whose largest value rounded to
    ``-2**(e+1)`` gets exponent ``e+1`` the next time), so a block passes when
    its values are ``wl``-bit integers times ``2**(e - wl + 2)`` for the exponent
    ``e`` of its largest magnitude or the one below.
    """
    t = t.detach()
    if not isinstance(fmt, BlockFloat):
        return torch.equal(quantize(t, fmt, "nearest"), t)
    blocks = [t.reshape(-1)] if fmt.dim is None else [b.reshape(-1) for b in t.unbind(fmt.dim)]
    for b in blocks:
        amax = float(b.abs().max()) if b.numel() else 0.0
        if amax == 0:
            continue
        e = torch.floor(torch.log2(torch.tensor(amax, dtype=torch.float64))).item()
        ok = False
        for shared in (e, e - 1):
            k = b.double() * 2.0 ** -(shared - fmt.wl + 2)
            lo, hi = -(2 ** (fmt.wl - 1)), 2 ** (fmt.wl - 1) - 1
            ok = ok or bool((k == k.round()).all() and k.min() >= lo and k.max() <= hi)
        if not ok:
            return False
    return True
