"""What a Hogwild!/Buckwild! run trains: linear models, matrix completion, torch models.

A problem owns its data (full precision, in the parent process) and knows how to

* ``prepare(signature)``: put the data (in ``D``-bit precision) and a fresh model
  (in ``M``-bit precision) into shared memory, with the small picklable ``spec``
  the workers need to run the compiled kernel or the torch step;
* ``objective(model)``: evaluate the training objective of a float32 model on the
  full-precision data (the number every report compares).

Problems:

* :class:`SparseLinear`: logistic regression, least squares or linear SVM (hinge)
  on a :class:`~relaxtorch.data.sparse.SparseDataset`; the L2 penalty ``lam``
  applies to the coordinates each example touches, so updates stay sparse:
  ``f(w) = mean_i [loss(y_i, x_i.w) + lam/2 sum_{j in x_i} w_j^2]``.
* :class:`DenseLinear`: the same losses on a dense matrix (``lam/2 |w|^2``).
* :class:`MatrixCompletion`: rank-``r`` factors ``L``, ``R`` fitted to observed
  entries (non-convex).
* :class:`TorchModel`: any small ``nn.Module`` trained PyTorch-Hogwild style
  (parameters in shared memory, each worker runs forward/backward on its own
  mini-batches and adds its step in place).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .._seeding import numpy_rng
from ..data.sparse import LowRankData, SparseDataset
from ..numbers import _grid
from ..numbers.formats import FixedPoint
from ..numbers.presets import BF16, FP8_E4M3
from . import _kernels as K
from .shared import code_range, data_codes, decode, encode, model_format, share
from .signature import Signature

FLOAT_FORMATS = {8: FP8_E4M3, 16: BF16}
LINEAR_LOSSES = ("logistic", "squared", "hinge")
TORCH_LOSSES = ("cross_entropy", "mse")


@dataclass
class Prepared:
    """Shared tensors and worker parameters of one run."""

    kind: str
    tensors: dict
    model_names: tuple
    spec: dict
    n_items: int
    formats: dict  # model tensor name -> FixedPoint, or None for float32
    data_format: str
    extra: dict = field(default_factory=dict)

    def model_float(self) -> dict:
        """The current shared model as float32 arrays (a racy but element-wise valid read)."""
        return {n: _to_float(self.tensors[n], self.formats[n]) for n in self.model_names}

    def model_raw(self) -> dict:
        # numpy's copy, not torch's clone: torch's copy is parallel, and its thread pool then spins on
        # the workers' cores (30 curve snapshots a run cost a third of a 2-worker run's wall time)
        return {n: _copy(self.tensors[n]) for n in self.model_names}

    @property
    def model_bits(self) -> int:
        return sum(self.tensors[n].numel() * self.tensors[n].element_size() * 8 for n in self.model_names)


def _copy(t: torch.Tensor) -> np.ndarray:
    """A private copy of a shared CPU tensor, on this thread alone (see ``model_raw``)."""
    return t.detach().numpy().copy()


def _to_float(t: torch.Tensor, fmt) -> np.ndarray:
    raw = _copy(t)
    return decode(raw, fmt) if fmt is not None else raw.astype(np.float32, copy=False)


def _grid_params(fmt) -> list[int]:
    g = _grid.element_grid(fmt)
    f32 = np.array([g.max_pos, g.max_neg], dtype=np.float32).view(np.uint32)
    return [g.man, g.emin, g.k_low, int(f32[0]), int(f32[1]), g.overflow]


def _check_positive(name, value, allow_zero=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) \
        and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"Invalid {name}: {value!r} (must be a {'non-negative' if allow_zero else 'positive'} number)")


def kernel_params(loss: str, lr: float, lam: float, vscale: float, fmt: FixedPoint | None, sig: Signature,
                  stale_every: int = 16, xmax: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
    """The float64 and int64 parameter vectors of the compiled kernels (layout in ``_kernels``).

    ``xmax``: the largest data magnitude; with it the fixed-point kernel skips clamping
    updates it can prove fit the communication format (inf: always clamp)."""
    fp = np.zeros(K.NF, np.float64)
    fp[K.F_LR], fp[K.F_LAM], fp[K.F_VSCALE], fp[K.F_XMAX] = lr, lam, vscale, xmax
    fp[K.F_WSTEP] = fmt.eps if fmt is not None else 1.0
    ip = np.zeros(K.NI, np.int64)
    ip[K.I_LOSS] = K.LOSSES[loss]
    ip[K.I_STALE_MASK] = stale_every - 1
    if sig.gradient < 32:
        ip[K.I_G_ON] = 1
        ip[K.I_G:K.I_G + 6] = _grid_params(FLOAT_FORMATS[sig.gradient])
    if fmt is None and sig.communication < 32:
        ip[K.I_C_ON] = 1
        ip[K.I_C:K.I_C + 6] = _grid_params(FLOAT_FORMATS[sig.communication])
    if fmt is not None:
        ip[K.I_WLO], ip[K.I_WHI] = code_range(fmt)
        ip[K.I_QLO], ip[K.I_QHI] = code_range(FixedPoint(sig.communication, fmt.fl))
    return fp, ip


class Problem:
    """Base class: subclasses set ``kind``, ``loss`` and the data; see the module docstring."""

    kind = ""
    default_lr = 0.1
    default_epochs = 5
    chunk = 4096  # examples per kernel call: a worker checks for a stop request between calls

    def __init__(self, *, lr: float | None = None, lam: float = 0.0, model_range: float = 4.0,
                 name: str | None = None):
        lr = self.default_lr if lr is None else lr
        _check_positive("lr", lr)
        _check_positive("lam", lam, allow_zero=True)
        _check_positive("model_range", model_range)
        self.lr, self.lam, self.model_range = float(lr), float(lam), float(model_range)
        self.name = name or self.kind
        self._data_cache: dict = {}

    # -- interface -----------------------------------------------------------------
    @property
    def n_items(self) -> int:
        raise NotImplementedError

    def init_model(self, seed: int) -> dict:
        raise NotImplementedError

    def objective(self, model: dict) -> float:
        raise NotImplementedError

    def _data(self, bits: int) -> tuple[dict, float, str]:
        raise NotImplementedError

    def model_dict(self, model: dict) -> dict:
        """Prepared-model names -> the names ``objective`` and ``init_model`` use."""
        return model

    # -- shared preparation for the compiled kernels ---------------------------------
    def data(self, bits: int) -> tuple[dict, float, str]:
        """Shared data tensors at ``bits`` precision (made once per precision, then reused)."""
        if bits not in self._data_cache:
            self._data_cache[bits] = self._data(bits)
        return self._data_cache[bits]

    def release(self) -> None:
        """Drop the cached shared data (the memory is freed once no worker holds it)."""
        self._data_cache.clear()

    def prepare(self, sig: Signature, *, seed: int = 0, stale_every: int = 16) -> Prepared:
        _check_stale_every(stale_every)
        data, vscale, ddesc = self.data(sig.data)
        formats, model = {}, {}
        for name, arr in self.init_model(seed).items():
            if sig.fixed_model:
                fmt = model_format(sig.model, self.model_range)
                formats[name], model[name] = fmt, share(encode(arr, fmt))
            else:
                formats[name], model[name] = None, share(np.asarray(arr, dtype=np.float32))
        fmt = next(iter(formats.values()))
        fp, ip = kernel_params(getattr(self, "loss", "squared"), self.lr, self.lam, vscale, fmt, sig, stale_every,
                               xmax=_largest_value(data))
        kernel = f"{self.kind}_{'fixed' if fmt is not None else 'float'}"
        tensors = dict(data, **model)
        spec = dict(kind=self.kind, kernel=kernel, fp=fp, ip=ip, chunk=self.chunk, data_names=tuple(data),
                    model_names=tuple(model))
        return Prepared(self.kind, tensors, tuple(model), spec, self.n_items, formats, ddesc)


def _largest_value(data: dict) -> float:
    """max |data value| (the largest code magnitude for integer data, packed or not)."""
    for name in ("values", "X", "vals"):
        if name in data:
            a = data[name].numpy()
            if a.size == 0 and data.get("indices") is not None and data["indices"].dtype == torch.uint32:
                return 128.0
            if np.issubdtype(a.dtype, np.integer):
                return float(np.iinfo(a.dtype).max + 1)  # -min: the largest magnitude
            return float(np.abs(a).max()) if a.size else 0.0
    return 0.0


def _check_stale_every(stale_every):
    if isinstance(stale_every, bool) or not isinstance(stale_every, int) or stale_every < 1 \
            or stale_every & (stale_every - 1):
        raise ValueError(f"Invalid stale_every: {stale_every!r} (must be a power of two >= 1)")


def _linear_labels(loss: str, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if loss in ("logistic", "hinge"):
        values = set(np.unique(y).tolist())
        if values <= {0.0, 1.0}:
            return np.where(y > 0, 1.0, -1.0).astype(np.float32)
        if not values <= {-1.0, 1.0}:
            raise ValueError(f"Invalid labels: {sorted(values)[:5]!r} ({loss} loss needs two classes, "
                             "labelled -1/+1 or 0/1)")
    return y


class SparseLinear(Problem):
    """A linear model (``loss``: logistic, squared or hinge) on a sparse dataset."""

    kind = "sparse"

    def __init__(self, dataset: SparseDataset, loss: str = "logistic", **kw):
        if not isinstance(dataset, SparseDataset):
            raise TypeError(f"Invalid dataset: expected a SparseDataset, got {type(dataset).__name__}")
        if loss not in LINEAR_LOSSES:
            raise ValueError(f"Invalid loss: {loss!r} (must be one of {LINEAR_LOSSES})")
        self.dataset, self.loss = dataset, loss
        self.y = _linear_labels(loss, dataset.y)
        self.default_lr = 1.0 if loss == "logistic" else 0.5
        super().__init__(**{"name": f"{dataset.name}-{loss}", **kw})

    @property
    def n_items(self) -> int:
        return self.dataset.n_examples

    def init_model(self, seed):
        return {"w": np.zeros(self.dataset.n_features, np.float32)}

    def objective(self, model):
        d = self.dataset
        return float(K.sparse_objective(d.indptr, d.indices, d.values, self.y, model["w"],
                                        K.LOSSES[self.loss], self.lam))

    def _data(self, bits):
        d = self.dataset
        codes, scale = data_codes(d.values, bits)
        desc = "float32" if bits == 32 else f"int{bits} x {scale:.4g}"
        if bits == 8 and d.n_features <= 1 << 24:  # one uint32 word per non-zero: half the bytes
            indices, codes = K.pack_rows(d.indices, codes), np.zeros(0, np.int8)
            desc += ", packed with the indices"
        else:
            indices = d.indices
        return ({"indptr": share(d.indptr), "indices": share(indices), "values": share(codes),
                 "y": share(self.y)}, scale, desc)


class DenseLinear(Problem):
    """A linear model on a dense ``X`` (n x d float array) with labels ``y``."""

    kind = "dense"
    chunk = 1024

    def __init__(self, X, y, loss: str = "logistic", **kw):
        X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
        if X.ndim != 2 or X.shape[0] != np.asarray(y).shape[0] or X.shape[0] == 0:
            raise ValueError(f"Invalid X: shape {X.shape} (expected n x d with n = len(y) > 0)")
        if loss not in LINEAR_LOSSES:
            raise ValueError(f"Invalid loss: {loss!r} (must be one of {LINEAR_LOSSES})")
        self.X, self.loss = X, loss
        self.y = _linear_labels(loss, y)
        super().__init__(**{"name": f"dense-{loss}", **kw})

    @property
    def n_items(self) -> int:
        return self.X.shape[0]

    def init_model(self, seed):
        return {"w": np.zeros(self.X.shape[1], np.float32)}

    def objective(self, model):
        return float(K.dense_objective(self.X, self.y, model["w"], K.LOSSES[self.loss], self.lam))

    def _data(self, bits):
        codes, scale = data_codes(self.X, bits)
        desc = "float32" if bits == 32 else f"int{bits} x {scale:.4g}"
        return {"X": share(codes), "y": share(self.y)}, scale, desc


class MatrixCompletion(Problem):
    """Rank-``rank`` factorisation ``L @ R.T`` fitted to the observed entries (squared loss)."""

    kind = "mc"
    default_lr = 0.1
    chunk = 8192
    loss = "squared"

    def __init__(self, data: LowRankData, rank: int | None = None, init_scale: float = 0.3, **kw):
        if not isinstance(data, LowRankData):
            raise TypeError(f"Invalid data: expected LowRankData, got {type(data).__name__}")
        rank = data.rank if rank is None else rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"Invalid rank: {rank!r} (must be a positive int)")
        self.data_, self.rank, self.init_scale = data, rank, float(init_scale)
        super().__init__(**{"name": f"matrix-completion-r{rank}", **kw})

    @property
    def n_items(self) -> int:
        return self.data_.n_examples

    def init_model(self, seed):
        rng = numpy_rng(seed, "matrix factors")
        m, n = self.data_.shape
        s = self.init_scale / self.rank**0.25
        return {"L": (rng.standard_normal((m, self.rank)) * s).astype(np.float32),
                "R": (rng.standard_normal((n, self.rank)) * s).astype(np.float32)}

    def objective(self, model):
        d = self.data_
        return float(K.mc_objective(d.rows, d.cols, d.values, model["L"], model["R"], self.lam))

    def _data(self, bits):
        d = self.data_
        codes, scale = data_codes(d.values, bits)
        desc = "float32" if bits == 32 else f"int{bits} x {scale:.4g}"
        return {"rows": share(d.rows), "cols": share(d.cols), "vals": share(codes)}, scale, desc


class TorchModel(Problem):
    """Any small ``nn.Module`` on tensors ``X`` (n x ...) and ``y``, trained Hogwild-style.

    ``loss``: "cross_entropy" (``y`` class indices) or "mse".  Each update is one
    mini-batch of ``batch_size`` examples.  With a fixed-point signature the
    shared parameters are int8/int16 codes: a worker reads (decodes) them into its
    local copy of the module, computes the gradient and adds the stochastically
    rounded step to the codes in place.  Only parameters are shared; buffers stay
    per worker.
    """

    kind = "torch"
    default_lr = 0.2
    default_epochs = 10

    def __init__(self, module: torch.nn.Module, X, y, loss: str = "cross_entropy", batch_size: int = 32, **kw):
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"Invalid module: expected a torch.nn.Module, got {type(module).__name__}")
        if loss not in TORCH_LOSSES:
            raise ValueError(f"Invalid loss: {loss!r} (must be one of {TORCH_LOSSES})")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size!r} (must be a positive int)")
        self.module = copy.deepcopy(module).cpu().float()
        self.X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        self.y = torch.as_tensor(np.asarray(y)).long() if loss == "cross_entropy" else \
            torch.as_tensor(np.asarray(y, dtype=np.float32))
        if self.X.shape[0] != self.y.shape[0] or self.X.shape[0] == 0:
            raise ValueError(f"Invalid X/y: {tuple(self.X.shape)} vs {tuple(self.y.shape)} (need the same n > 0)")
        self.loss, self.batch_size = loss, batch_size
        self.chunk = batch_size * 4
        super().__init__(**{"name": f"torch-{type(module).__name__.lower()}", **kw})

    @property
    def n_items(self) -> int:
        return int(self.X.shape[0])

    def init_model(self, seed):
        return {n: p.detach().numpy().astype(np.float32).copy() for n, p in self.module.named_parameters()}

    def objective(self, model):
        m = copy.deepcopy(self.module)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.copy_(torch.from_numpy(np.asarray(model[n], dtype=np.float32)).reshape(p.shape))
            out = m(self.X)
            loss = torch.nn.functional.cross_entropy(out, self.y) if self.loss == "cross_entropy" else \
                torch.nn.functional.mse_loss(out.reshape(self.y.shape), self.y)
            reg = 0.5 * self.lam * sum(float(p.pow(2).sum()) for p in m.parameters())
        return float(loss) + reg

    def _data(self, bits):
        codes, scale = data_codes(self.X.numpy(), bits)
        desc = "float32" if bits == 32 else f"int{bits} x {scale:.4g}"
        return {"X": share(codes), "y": share(self.y)}, scale, desc

    def prepare(self, sig, *, seed=0, stale_every=16):
        _check_stale_every(stale_every)
        data, vscale, ddesc = self.data(sig.data)
        formats, model = {}, {}
        for name, arr in self.init_model(seed).items():
            fmt = model_format(sig.model, self.model_range) if sig.fixed_model else None
            formats[name] = fmt
            model[f"param:{name}"] = share(encode(arr, fmt) if fmt is not None else torch.from_numpy(arr))
        module = copy.deepcopy(self.module)
        spec = dict(kind="torch", module=module, loss=self.loss, batch_size=self.batch_size, lr=self.lr,
                    lam=self.lam, vscale=vscale, chunk=self.chunk, stale_mask=stale_every - 1,
                    gradient=sig.gradient, communication=sig.communication,
                    formats={f"param:{n}": f for n, f in formats.items()}, data_names=tuple(data),
                    model_names=tuple(model))
        prepared = Prepared("torch", dict(data, **model), tuple(model), spec, self.n_items,
                            {f"param:{n}": f for n, f in formats.items()}, ddesc)
        return prepared

    def model_dict(self, prepared_float: dict) -> dict:
        return {n[len("param:"):]: v for n, v in prepared_float.items()}
