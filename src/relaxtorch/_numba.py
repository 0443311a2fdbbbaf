"""``njit`` that caches compiled kernels where numba can write a cache, and compiles without one elsewhere.

numba's ``cache=True`` raises at import ("no locator available") when neither the
package's ``__pycache__`` nor a user cache folder is writable: a read-only install
with a read-only home.  relaxtorch then still imports and runs, compiling each
kernel once per process.
"""
from __future__ import annotations

import numba


def njit(*args, **kwargs):
    """``numba.njit`` with ``cache=True`` falling back to ``cache=False`` when caching is impossible."""
    if args and callable(args[0]):  # bare @njit
        return njit(**kwargs)(args[0])

    def decorate(func):
        try:
            return numba.njit(*args, **kwargs)(func)
        except RuntimeError as exc:
            if not kwargs.get("cache") or "no locator available" not in str(exc):
                raise
            return numba.njit(*args, **{**kwargs, "cache": False})(func)
    return decorate
