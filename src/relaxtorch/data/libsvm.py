"""Read and write LIBSVM / SVMlight text files.

Each line is ``<label> [qid:<n>] <index>:<value> <index>:<value> ... [# comment]``.
Blank lines and lines starting with ``#`` are skipped.  Indices are one-based as
LIBSVM writes them; ``zero_based="auto"`` treats the file as zero-based when it
uses index 0.  Indices within a line may come in any order but not twice.
Files ending in ``.gz``, ``.bz2`` or ``.xz`` are decompressed on the fly; a damaged or
truncated one, a directory or an unreadable file is a :class:`LibSVMError` naming it.
Values are stored as float32: a number beyond its range (1e39) is an error at its line.

Every parse error names the file, the line and the reason::

    LibSVMError: data/train.svm:17: token '4:abc': value 'abc' is not a number
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import math
import os
import zlib

import numpy as np

from .._files import atomic_write
from .sparse import SparseDataset


class LibSVMError(ValueError):
    """A malformed LIBSVM file; ``path``, ``line`` (1-based) and ``reason`` say where and why."""

    def __init__(self, path, line: int, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{self.path}:{line}: {reason}")


_COMPRESSED = {".gz": ("gzip", gzip.open), ".bz2": ("bzip2", bz2.open), ".xz": ("xz", lzma.open)}
# what a damaged compressed stream raises while it is read (besides OSError)
_STREAM_ERRORS = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
F32_MAX = float(np.finfo(np.float32).max)


def _open(path):
    """The file as binary lines (decoded one by one, so a bad byte is pinned to its line)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise LibSVMError(path, 0, "is a directory, not a LIBSVM file")
    for suffix, (_, opener) in _COMPRESSED.items():
        if p.endswith(suffix):
            return opener(p, "rb")
    return open(p, "rb")


def _lines(path):
    """``(line number, bytes)`` of the file; an unreadable file or a damaged compressed stream
    raises LibSVMError naming the file (and the line it broke at)."""
    p = os.fspath(path)
    kind = next((name for suffix, (name, _) in _COMPRESSED.items() if p.endswith(suffix)), None)
    lineno = 0
    try:
        with _open(path) as f:
            for lineno, raw in enumerate(f, start=1):
                yield lineno, raw
    except FileNotFoundError:
        raise
    except _STREAM_ERRORS + (OSError,) as exc:
        if isinstance(exc, EOFError):
            what = f"not a valid {kind} file: truncated (the compressed data ends early)"
        elif isinstance(exc, OSError) and exc.errno is not None:  # a real I/O error (permissions, EIO)
            what = f"cannot read: {exc.strerror or exc}"
        else:  # a damaged stream: BadGzipFile, bz2's "Invalid data stream", LZMAError, zlib.error
            what = f"not a valid {kind or 'LIBSVM'} file: {exc or type(exc).__name__}"
        raise LibSVMError(path, lineno + 1 if lineno else 0, what) from None


def _number(text: str) -> tuple[float | None, str]:
    """``(value, "")`` for a number float32 holds, else ``(None, why)``: values are stored as float32,
    so 1e39 (finite in float64) would become inf."""
    try:
        v = float(text)
    except ValueError:
        return None, "is not a finite number"
    if not math.isfinite(v):
        return None, "is not a finite number"
    if abs(v) > F32_MAX:
        return None, f"is beyond float32's range (|x| <= {F32_MAX:.6g})"
    return v, ""


def load_libsvm(path, *, n_features: int | None = None, zero_based: bool | str = "auto",
                name: str | None = None) -> SparseDataset:
    """Load a LIBSVM/SVMlight file as a :class:`SparseDataset` (float32 values, labels as given).

    ``n_features``: the number of features (default: the largest index seen + 1);
    an index beyond it is an error.  ``zero_based``: True, False or "auto".
    Raises :class:`LibSVMError` for malformed content and ``FileNotFoundError``
    when the file is missing.
    """
    if zero_based not in (True, False, "auto"):
        raise ValueError(f"Invalid zero_based: {zero_based!r} (must be True, False or 'auto')")
    if n_features is not None and (isinstance(n_features, bool) or not isinstance(n_features, int)
                                   or n_features < 1):
        raise ValueError(f"Invalid n_features: {n_features!r} (must be a positive int or None)")
    labels: list[float] = []
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    lines: list[int] = []  # file line of each example, to report range errors found at the end
    min_index = None
    for lineno, raw_bytes in _lines(path):
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LibSVMError(path, lineno, f"not UTF-8 text ({exc.reason})") from None
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        tokens = text.split()
        label = tokens[0]
        if "," in label:
            raise LibSVMError(path, lineno, f"label {label!r}: multi-label lines are not supported")
        y, why = _number(label)
        if y is None:
            raise LibSVMError(path, lineno, f"label {label!r} {why}")
        row: dict[int, float] = {}
        for tok in tokens[1:]:
            idx_text, sep, val_text = tok.partition(":")
            if not sep:
                raise LibSVMError(path, lineno, f"token {tok!r}: expected index:value")
            if idx_text == "qid":
                if not val_text.lstrip("-").isdigit():
                    raise LibSVMError(path, lineno, f"token {tok!r}: qid must be an integer")
                continue
            try:
                idx = int(idx_text)
            except ValueError:
                raise LibSVMError(path, lineno, f"token {tok!r}: index {idx_text!r} is not an integer") from None
            if idx < 0:
                raise LibSVMError(path, lineno, f"token {tok!r}: index {idx} is negative")
            val, why = _number(val_text)
            if val is None:
                raise LibSVMError(path, lineno, f"token {tok!r}: value {val_text!r} {why}")
            if idx in row:
                raise LibSVMError(path, lineno, f"token {tok!r}: index {idx} appears twice on this line")
            row[idx] = val
        if row:
            lo = min(row)
            min_index = lo if min_index is None else min(min_index, lo)
        for idx in sorted(row):
            indices.append(idx)
            values.append(row[idx])
        indptr.append(len(indices))
        labels.append(y)
        lines.append(lineno)
    if not labels:
        raise LibSVMError(path, 0, "no examples in the file")
    idx_arr = np.asarray(indices, dtype=np.int64)
    zb = (min_index == 0) if zero_based == "auto" else zero_based
    if not zb:
        if min_index == 0:
            bad = int(np.flatnonzero(idx_arr == 0)[0])
            raise LibSVMError(path, _line_of(bad, indptr, lines), "index 0 in a one-based file (zero_based=False)")
        idx_arr -= 1
    top = int(idx_arr.max()) + 1 if idx_arr.size else 1
    d = n_features if n_features is not None else top
    if top > d:
        bad = int(np.flatnonzero(idx_arr >= d)[0])
        raise LibSVMError(path, _line_of(bad, indptr, lines),
                          f"index {int(idx_arr[bad]) + (0 if zb else 1)} exceeds n_features={d}")
    if d > np.iinfo(np.int32).max:
        raise LibSVMError(path, 0, f"{d} features do not fit 32-bit indices")
    return SparseDataset(np.asarray(indptr, np.int64), idx_arr.astype(np.int32), np.asarray(values, np.float32),
                         np.asarray(labels, np.float32), d, name=name or os.path.basename(os.fspath(path)),
                         meta={"path": os.fspath(path), "zero_based": zb})


def _line_of(k: int, indptr: list[int], lines: list[int]) -> int:
    """File line of the example holding non-zero number k."""
    return lines[int(np.searchsorted(np.asarray(indptr), k, side="right")) - 1]


def save_libsvm(dataset: SparseDataset, path, *, zero_based: bool = False) -> None:
    """Write a dataset in LIBSVM format (one-based indices unless ``zero_based``), atomically."""
    off = 0 if zero_based else 1
    lines = []
    for i in range(dataset.n_examples):
        k0, k1 = dataset.indptr[i], dataset.indptr[i + 1]
        feats = " ".join(f"{j + off}:{v:.9g}" for j, v in zip(dataset.indices[k0:k1].tolist(),
                                                             dataset.values[k0:k1].tolist()))
        y = float(dataset.y[i])
        lines.append(f"{int(y) if y.is_integer() else repr(y)} {feats}".rstrip() + "\n")
    atomic_write(path, "".join(lines))
