"""relaxtorch._numba.njit: cache where numba can, compile uncached where it cannot (read-only installs)."""
import numba
import numpy as np
import pytest

from relaxtorch import _numba


def test_falls_back_to_no_cache_when_numba_has_no_cache_locator(monkeypatch):
    real = numba.njit
    calls = []

    def njit(*args, **kwargs):
        calls.append(kwargs.get("cache"))
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file '/ro/x.py'")
        return real(*args, **kwargs)
    monkeypatch.setattr(_numba.numba, "njit", njit)

    @_numba.njit(cache=True)
    def twice(x):
        return 2 * x
    assert calls == [True, False] and twice(np.int64(21)) == 42


def test_other_errors_are_not_hidden(monkeypatch):
    def njit(*args, **kwargs):
        raise RuntimeError("something else")
    monkeypatch.setattr(_numba.numba, "njit", njit)
    with pytest.raises(RuntimeError, match="something else"):
        _numba.njit(cache=True)(lambda x: x)


def test_caches_when_it_can():
    @_numba.njit(cache=True)
    def inc(x):
        return x + 1
    assert inc(np.int64(1)) == 2 and inc._cache._impl is not None  # a real cache implementation is attached
