"""Sparse datasets and generators with a planted (known) model.

* :class:`SparseDataset`: examples in CSR form (``indptr``, ``indices``, ``values``)
  with labels ``y``, and the planted model ``w_true`` when generated.
* :func:`make_bag_of_words`: an RCV1-like text-classification problem.  The word
  of frequency rank ``r`` appears in a document with probability
  ``min(max_df, c / (r + 1) ** skew)`` (Zipf's law, the most common words capped
  like stop-word removal caps them), with ``c`` set so a document holds ``nnz``
  words on average; ranks are assigned to feature ids at random, as in a real
  vocabulary.  Values are log term frequency times inverse document
  frequency, each row scaled to unit L2 norm (as in RCV1).  Labels come from a
  planted model ``w_true ~ N(0, scale**2)``: logistic (``y = +-1`` with
  ``P(y=1) = sigmoid(x.w_true)``), squared (``y = x.w_true + noise``; with
  ``noise=0`` ``w_true`` attains the optimum, loss 0) or separable
  (``y = sign(x.w_true)``: ``w_true`` separates the data, hinge loss 0 once scaled).
  ``nnz``, ``skew`` and ``max_df`` control the sparsity and how often the
  workers of a Hogwild! run write the same coordinates.
* :class:`LowRankData` / :func:`make_low_rank`: observed entries of a planted
  rank-``r`` matrix ``L_true @ R_true.T`` (plus optional noise), for matrix completion.

Generation is seeded and deterministic (same seed, same arrays) and compiled
(numba), about a second per 10M non-zeros.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._numba import njit
from .._seeding import derive, numpy_rng

TASKS = ("logistic", "squared", "separable")


def _invalid(name, value, why) -> ValueError:
    return ValueError(f"Invalid {name}: {value!r} ({why})")


@dataclass(eq=False)
class SparseDataset:
    """Examples as CSR rows: example ``i`` holds ``values[indptr[i]:indptr[i+1]]`` at
    feature indices ``indices[indptr[i]:indptr[i+1]]``; ``y[i]`` is its label."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    y: np.ndarray
    n_features: int
    w_true: np.ndarray | None = None
    name: str = "sparse"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int32)
        self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        self.y = np.ascontiguousarray(self.y, dtype=np.float32)
        if self.indptr.ndim != 1 or self.indptr.size != self.y.size + 1:
            raise _invalid("indptr", self.indptr.shape, f"expected {self.y.size + 1} entries for {self.y.size} labels")
        if self.indptr[0] != 0 or np.any(np.diff(self.indptr) < 0) or self.indptr[-1] != self.indices.size:
            raise _invalid("indptr", "...", "must start at 0, never decrease and end at len(indices)")
        if self.values.shape != self.indices.shape:
            raise _invalid("values", self.values.shape, f"must match indices {self.indices.shape}")
        if isinstance(self.n_features, bool) or not isinstance(self.n_features, (int, np.integer)) \
                or self.n_features < 1:
            raise _invalid("n_features", self.n_features, "must be a positive int")
        self.n_features = int(self.n_features)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= self.n_features):
            raise _invalid("indices", (int(self.indices.min()), int(self.indices.max())),
                           f"must lie in 0..{self.n_features - 1}")

    @property
    def n_examples(self) -> int:
        return int(self.y.size)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @property
    def density(self) -> float:
        return self.nnz / max(self.n_examples * self.n_features, 1)

    def to_scipy(self):
        """The examples as a ``scipy.sparse.csr_matrix`` (float32)."""
        from scipy.sparse import csr_matrix
        return csr_matrix((self.values, self.indices, self.indptr), shape=(self.n_examples, self.n_features))

    def __repr__(self) -> str:
        return (f"SparseDataset({self.name!r}: {self.n_examples} examples x {self.n_features} features, "
                f"{self.nnz / max(self.n_examples, 1):.1f} non-zeros per example)")


@dataclass(eq=False)
class LowRankData:
    """Observed entries ``values[e] = M[rows[e], cols[e]]`` of an ``shape[0] x shape[1]`` matrix."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple
    rank: int
    L_true: np.ndarray | None = None
    R_true: np.ndarray | None = None
    name: str = "low-rank"

    def __post_init__(self) -> None:
        self.rows = np.ascontiguousarray(self.rows, dtype=np.int32)
        self.cols = np.ascontiguousarray(self.cols, dtype=np.int32)
        self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        if not (self.rows.shape == self.cols.shape == self.values.shape):
            raise _invalid("rows/cols/values", (self.rows.shape, self.cols.shape, self.values.shape), "must match")
        m, n = self.shape
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= m or self.cols.min() < 0
                               or self.cols.max() >= n):
            raise _invalid("rows/cols", self.shape, "an observed entry lies outside the matrix")

    @property
    def n_examples(self) -> int:
        return int(self.values.size)

    def __repr__(self) -> str:
        return (f"LowRankData({self.shape[0]} x {self.shape[1]}, rank {self.rank}, "
                f"{self.n_examples} observed entries)")


@njit(cache=True)
def _columns(n, q, seed):
    """For each feature j, a Binomial(n, q[j]) number of distinct documents holding it."""
    np.random.seed(seed)
    d = q.size
    counts = np.empty(d, np.int64)
    for j in range(d):
        counts[j] = np.random.binomial(n, q[j])
    rows = np.empty(counts.sum(), np.int32)
    marker = np.full(n, -1, np.int32)
    p = 0
    for j in range(d):
        for _ in range(counts[j]):
            while True:
                r = np.random.randint(0, n)
                if marker[r] != j:
                    marker[r] = j
                    break
            rows[p] = r
            p += 1
    return counts, rows


@njit(cache=True)
def _to_csr(n, counts, rows):
    indptr = np.zeros(n + 1, np.int64)
    for r in rows:
        indptr[r + 1] += 1
    for i in range(n):
        indptr[i + 1] += indptr[i]
    fill = indptr[:-1].copy()
    indices = np.empty(rows.size, np.int32)
    p = 0
    for j in range(counts.size):  # features in increasing order: every row comes out sorted
        for _ in range(counts[j]):
            r = rows[p]
            p += 1
            indices[fill[r]] = j
            fill[r] += 1
    return indptr, indices


@njit(cache=True)
def _tfidf_rows(indptr, indices, tf, idf):
    values = np.empty(indices.size, np.float32)
    for i in range(indptr.size - 1):
        norm = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            v = (1.0 + np.log(tf[k])) * idf[indices[k]]
            values[k] = v
            norm += v * v
        if norm > 0:
            inv = 1.0 / np.sqrt(norm)
            for k in range(indptr[i], indptr[i + 1]):
                values[k] = np.float32(values[k] * inv)
    return values


@njit(cache=True)
def _margins(indptr, indices, values, w):
    out = np.empty(indptr.size - 1, np.float64)
    for i in range(out.size):
        s = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            s += np.float64(w[indices[k]]) * np.float64(values[k])
        out[i] = s
    return out


def document_frequencies(n_features: int, nnz: float, skew: float, max_df: float) -> np.ndarray:
    """Probability that feature j appears in a document: ``min(max_df, c / (j+1)**skew)``, summing to nnz."""
    base = np.arange(1, n_features + 1, dtype=np.float64) ** -skew
    if nnz >= max_df * n_features:
        raise _invalid("nnz", nnz, f"must be below max_df * n_features = {max_df * n_features:g}")
    lo, hi = 0.0, nnz / base[-1]
    for _ in range(200):  # bisection on c
        c = 0.5 * (lo + hi)
        lo, hi = (c, hi) if np.minimum(max_df, c * base).sum() < nnz else (lo, c)
    return np.minimum(max_df, 0.5 * (lo + hi) * base)


def make_bag_of_words(n_examples: int = 100_000, n_features: int = 20_000, nnz: float = 50, *,
                      skew: float = 1.0, max_df: float = 0.05, task: str = "logistic", scale: float = 1.0,
                      noise: float = 0.0, seed: int = 0) -> SparseDataset:
    """An RCV1-like sparse problem with a planted model (see the module docstring)."""
    for name, value, lo in (("n_examples", n_examples, 1), ("n_features", n_features, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise _invalid(name, value, f"must be an int >= {lo}")
    if not 0 < nnz:
        raise _invalid("nnz", nnz, "must be positive")
    if not 0 <= skew <= 4:
        raise _invalid("skew", skew, "must be in [0, 4]")
    if not 0 < max_df <= 1:
        raise _invalid("max_df", max_df, "must be in (0, 1]")
    if task not in TASKS:
        raise _invalid("task", task, f"must be one of {TASKS}")
    if not scale > 0 or noise < 0:
        raise _invalid("scale/noise", (scale, noise), "scale must be positive and noise non-negative")
    rng = numpy_rng(int(seed), "bag of words")
    # frequency ranks go to random feature ids, as in real vocabularies (ids are not sorted by frequency)
    q = document_frequencies(n_features, nnz, skew, max_df)[rng.permutation(n_features)]
    counts, rows = _columns(int(n_examples), q, derive(int(seed), "bag of words columns") & 0x7FFFFFFF)
    indptr, indices = _to_csr(int(n_examples), counts, rows)
    tf = rng.geometric(0.6, size=indices.size).astype(np.float64)
    idf = np.log(1.0 / np.maximum(q, 1.0 / n_examples))
    values = _tfidf_rows(indptr, indices, tf, idf)
    w_true = (rng.standard_normal(n_features) * scale).astype(np.float32)
    m = _margins(indptr, indices, values, w_true)
    if task == "logistic":
        y = np.where(rng.random(m.size) < 1 / (1 + np.exp(-m)), 1.0, -1.0)
    elif task == "squared":
        y = m + noise * rng.standard_normal(m.size)
    else:
        y = np.where(m >= 0, 1.0, -1.0)
    meta = dict(nnz=nnz, skew=skew, max_df=max_df, task=task, scale=scale, noise=noise, seed=seed)
    return SparseDataset(indptr, indices, values, y, n_features, w_true, name=f"bag-of-words-{task}", meta=meta)


def make_low_rank(n_rows: int = 2000, n_cols: int = 2000, rank: int = 10, density: float = 0.05, *,
                  noise: float = 0.0, seed: int = 0) -> LowRankData:
    """Observed entries of ``L_true @ R_true.T`` (factors N(0, 1/sqrt(rank)), entries ~ N(0, 1)).

    ``density``: fraction of entries observed, uniformly without replacement.
    With ``noise=0`` the planted factors reach the optimum (loss 0, lam=0).
    """
    for name, value in (("n_rows", n_rows), ("n_cols", n_cols), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise _invalid(name, value, "must be a positive int")
    if rank > min(n_rows, n_cols):
        raise _invalid("rank", rank, "exceeds the matrix dimensions")
    if not 0 < density <= 1:
        raise _invalid("density", density, "must be in (0, 1]")
    rng = numpy_rng(int(seed), "low rank")
    L = (rng.standard_normal((n_rows, rank)) / rank**0.25).astype(np.float32)
    R = (rng.standard_normal((n_cols, rank)) / rank**0.25).astype(np.float32)
    total = n_rows * n_cols
    k = max(1, int(round(density * total)))
    cells = rng.choice(total, size=k, replace=False) if total <= 50_000_000 else \
        np.unique(rng.integers(0, total, size=int(k * 1.2)))[:k]
    cells = rng.permutation(cells)
    r, c = (cells // n_cols).astype(np.int32), (cells % n_cols).astype(np.int32)
    vals = np.einsum("ij,ij->i", L[r].astype(np.float64), R[c].astype(np.float64))
    if noise:
        vals = vals + noise * rng.standard_normal(vals.size)
    return LowRankData(r, c, vals.astype(np.float32), (n_rows, n_cols), rank, L, R)
