"""grab-sampler (PyPI) on the digits MLP, run by bench_order.py --figure 4 in the peer's venv.

    /work/peer-grab/bin/python benchmarks/_grab_peer.py PROBLEM.npz OUT.json SETTING_JSON ORDERS

Imports no relaxtorch: the problem (training set and the model's initial weights) comes in an
.npz written by the benchmark, so both libraries start from the same weights.  The loop is
grab-sampler's README loop (vmap per-sample gradients, ``sampler.step``), with torch.optim.SGD
in place of torchopt and the benchmark's setting.  Seconds per epoch include the per-sample
gradients, as ours do.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap


def torch_sparse_status() -> str:
    """grab-sampler imports torch_sparse eagerly (utils/random_projection/JLVerySparseRP.py:
    ``from torch_sparse import SparseTensor``) though only its very-sparse JL projection uses it.
    torch-sparse 0.6.18 is a source distribution whose C++ build needs torch at build time (and
    takes hours on 2 loaded cores).  Where it is not installed, an empty stand-in module lets
    the import pass; mean and pair balance without projection never touch it."""
    try:
        import torch_sparse  # noqa: F401
        return "installed"
    except ImportError:
        import types
        stub = types.ModuleType("torch_sparse")
        stub.SparseTensor = None  # never used by the sorters run here
        sys.modules["torch_sparse"] = stub
        return "absent: an empty stand-in module was put in sys.modules for the eager import"


def sampler_init_status() -> str:
    """grab-sampler's ``GraBSampler.__init__`` calls ``Sampler.__init__(self, data_source)``; torch
    dropped that argument (torch 2.2 deprecated it; in 2.13 Sampler has no __init__, so the call
    is ``object.__init__`` with an argument: TypeError).  Where that is so, the peer process gives
    ``Sampler`` an ``__init__`` that accepts and ignores it."""
    from torch.utils.data import Sampler
    try:
        Sampler.__init__(object.__new__(Sampler), None)
        return "accepts data_source"
    except TypeError:
        Sampler.__init__ = lambda self, data_source=None: None
        return "torch.utils.data.Sampler.__init__ takes no data_source in this torch: shimmed to ignore it"


def main(npz_path: str, out_path: str, setting_json: str, orders: str) -> None:
    sparse = torch_sparse_status()
    sampler_init = sampler_init_status()
    import grabsampler
    from grabsampler import GraBSampler

    torch.set_num_threads(1)
    setting = json.loads(setting_json)
    z = np.load(npz_path)
    X, y = torch.from_numpy(z["X"]), torch.from_numpy(z["y"])
    init = {k[2:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("p:")}
    dataset = torch.utils.data.TensorDataset(X, y)
    runs = {}
    for balance in orders.split(","):
        torch.manual_seed(0)  # grab-sampler draws from the global RNG
        model = nn.Sequential(nn.Linear(X.shape[1], 128), nn.ReLU(), nn.Linear(128, int(y.max()) + 1))
        model.load_state_dict(init)
        params = {k: v for k, v in model.named_parameters()}
        buffers = dict(model.named_buffers())
        sampler = GraBSampler(dataset, params, balance_type=balance, device="cpu")
        loader = torch.utils.data.DataLoader(dataset, batch_size=setting["batch"], sampler=sampler)
        opt = torch.optim.SGD(model.parameters(), lr=setting["lr"], momentum=setting["momentum"],
                              weight_decay=setting["weight_decay"])

        def loss_of(p, xb, yb):
            return F.cross_entropy(functional_call(model, (p, buffers), (xb.unsqueeze(0),)), yb.unsqueeze(0))

        per_sample = vmap(grad_and_value(loss_of), in_dims=(None, 0, 0))
        with torch.no_grad():
            losses = [float(F.cross_entropy(model(X), y))]
        seconds = []
        for _ in range(setting["epochs"]):
            t0 = time.perf_counter()
            for xb, yb in loader:
                detached = {k: v.detach() for k, v in params.items()}
                grads, _ = per_sample(detached, xb, yb)
                sampler.step(grads)
                for k, p in params.items():
                    p.grad = grads[k].mean(0)
                opt.step()
            seconds.append(time.perf_counter() - t0)
            with torch.no_grad():
                losses.append(float(F.cross_entropy(model(X), y)))
        runs[balance] = {"losses": losses, "seconds": seconds}
    with open(out_path, "w") as f:
        json.dump({"version": grabsampler.__version__ if hasattr(grabsampler, "__version__") else "0.1.3",
                   "torch": torch.__version__, "torch_sparse": sparse,
                   "sampler_init": sampler_init, "runs": runs}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
