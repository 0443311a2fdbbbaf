"""Hogwild! and Buckwild! from Python: a sparse problem, a torch model, and a LIBSVM file.

    PYTHONPATH=src python examples/hogwild_api.py

Worker processes are started with the fork server (spawn elsewhere), so the code
that starts runs must sit under ``if __name__ == "__main__":``.
"""
import os
import tempfile

import torch
from sklearn.datasets import load_digits

from relaxtorch.data.libsvm import load_libsvm, save_libsvm
from relaxtorch.data.sparse import make_bag_of_words
from relaxtorch.parallel import SparseLinear, TorchModel, WorkerError, hogwild, load_checkpoint
from relaxtorch.jobs.hogwild.report import table

if __name__ == "__main__":
    # 1. Sparse logistic regression: float32 Hogwild! and 8-bit Buckwild!, 1 and 2 workers.
    problem = SparseLinear(make_bag_of_words(200_000, 20_000, nnz=50, seed=0), loss="logistic")
    results = [hogwild(problem, workers=n, signature=sig, epochs=3, order="shuffle")
               for sig in ("D32M32G32C32", "D8M8G32C8") for n in (1, 2)]
    print(table(results))

    # 2. Any small torch model, PyTorch-Hogwild style (shared parameters, in place updates).
    digits = load_digits()
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    tm = TorchModel(mlp, digits.data / 16.0, digits.target, loss="cross_entropy", batch_size=32)
    r = hogwild(tm, workers=2, signature="D8M16G16C16", epochs=5)
    print(f"\ndigits MLP, 16-bit shared model: loss {r.initial_loss:.3f} -> {r.final_loss:.3f}, "
          f"{r.updates_per_s:,.0f} steps/s, staleness mean {r.staleness['mean']:.2f}")

    # 3. Bring your own data (LIBSVM/SVMlight text), keep the model, survive a failing worker.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.svm")
        save_libsvm(make_bag_of_words(20_000, 5000, 20, seed=1), path)
        svm = SparseLinear(load_libsvm(path), loss="hinge", lam=1e-4)
        ckpt = os.path.join(tmp, "svm.pt")
        try:  # worker 1 is made to crash: the run ends at once and keeps the last consistent model
            hogwild(svm, workers=2, epochs=20, checkpoint=ckpt, _fault={"worker": 1, "after": 10_000})
        except WorkerError as exc:
            print(f"\n{exc}")
            print(f"checkpoint holds {load_checkpoint(ckpt)['meta']['updates']} updates")
