"""Files a user keeps: atomic writes, JSON without NaN, TOML configs.

Every report, checkpoint and data file relaxtorch writes goes through ``atomic_write``, so
a crash or Ctrl-C leaves the previous file intact, never a torn one.  Configs are TOML
(data, never code).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable) -> Path:
    """Write ``data`` (bytes, str, or a function called with a binary file) to a temporary
    file beside ``path``, flush it to disk, then rename it over ``path``.

    A function writes into memory first, so that a write that fails (a full disk) raises the
    ``OSError`` itself, never a serializer's confused message.  Every ``OSError`` names ``path``
    (not the temporary file): ``[Errno 28] No space left on device: 'out/report.json'``.
    """
    path = Path(path)
    if callable(data):
        buf = io.BytesIO()
        data(buf)
        data = buf.getvalue()
    try:
        return _atomic_write(path, data)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def _atomic_write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; these are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable (not every filesystem can)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def finite(x):
    """JSON has no NaN/inf: a diverged run's non-finite numbers become null (recursively)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def read_toml(path: str | os.PathLike, error: type[Exception] = ValueError) -> dict:
    """Parse a TOML file; a missing, unreadable or malformed file raises ``error`` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read ({exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: invalid TOML: {exc}") from None
