"""Train a 64-128-10 MLP on scikit-learn's digits with 8-bit numbers everywhere, next to float32.

    python examples/train_digits_lp.py [--epochs 20] [--seed 0]

The 8-bit run converts the model with ``quantize_model`` and wraps SGD in
``OptimLP``.  The formats follow the FP8 training recipe (Micikevicius et al.
2022, "FP8 Formats for Deep Learning"; QPyTorch and SWALP's 8-bit setups):

- weights and activations in FP8 E4M3 (OCP e4m3fn, max 448): their range is
  moderate and known, so a mantissa bit is worth more than an exponent bit;
- errors, gradients and momentum in FP8 E5M2: they are small (1e-4..1e-1 for a
  mean loss over 32 examples) and span a wide range, so exponent bits matter
  more than mantissa; all three use stochastic rounding, so small values are
  kept on average instead of flushed to zero;
- an FP16 accumulator holds the weights the optimizer updates (the weight the
  model uses is the accumulator rounded to E4M3), rounded stochastically:
  updates smaller than half an E4M3 step would otherwise be lost, FP16 halves
  the accumulator's memory against FP32, and late in training the updates fall
  below half an FP16 step too, which nearest rounding loses (measured, mean of
  seeds 0-7, 20 epochs: final train loss 0.0026 float32, 0.0029 FP16-nearest,
  0.0026 FP16-stochastic, 0.0026 FP32-nearest accumulator).

Digits is an easy problem: every 8-bit variant tried (no accumulator, E4M3
errors/gradients/momentum, FP16 or FP32 accumulators) ends within a few test
images of float32 (mean test accuracy over seeds 0-7: float32 97.47%, the
variants 97.47-97.58%; one test image is 0.22%).

Both runs start from the same initial weights, see the same batches and use the
same hyper-parameters; both are wrapped in OptimLP (with no formats it is the
plain optimizer, bit for bit) so that their memory is counted the same way.
"""
from __future__ import annotations

import argparse
import copy
import time

import numba
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from tqdm import tqdm

from relaxtorch.numbers import presets as P
from relaxtorch.quant import OptimLP, quantize_model

LP = dict(weight=P.FP8_E4M3, activation=P.FP8_E4M3, error=P.FP8_E5M2, grad=P.FP8_E5M2,
          momentum=P.FP8_E5M2, acc=P.FP16)
ACC_ROUNDING = "stochastic"  # OptimLP's default for the accumulator is nearest (right for FP32)


def load():
    """Standardized digits, one fixed stratified 75/25 split (1347 train, 450 test images)."""
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return (as_t(scaler.transform(X_tr)), torch.tensor(y_tr), as_t(scaler.transform(X_te)), torch.tensor(y_te))


@torch.no_grad()
def accuracy(model, X, y) -> float:
    model.eval()
    acc = (model(X).argmax(1) == y).float().mean().item()
    model.train()
    return acc


def train(name, model, opt, data, args) -> dict:
    X_tr, y_tr, X_te, y_te = data
    order = torch.Generator().manual_seed(args.seed)  # the same batches for every run
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    bar = tqdm(range(1, args.epochs + 1), desc=f"{name:>8}", unit="epoch", leave=True)
    for _ in bar:
        perm = torch.randperm(len(X_tr), generator=order)
        total = 0.0
        for i in range(0, len(X_tr), args.batch_size):
            idx = perm[i:i + args.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(X_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(X_tr):.4f}", test_acc=f"{accuracy(model, X_te, y_te):.2%}")
    return dict(run=name, train_loss=total / len(X_tr), test_acc=accuracy(model, X_te, y_te),
                seconds=time.perf_counter() - start, bits=opt.bits_per_param())


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="initial weights, batch order and rounding")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch and the numba rounding kernels (default 1: for tensors "
                             "this small, threads only add synchronisation, and stall when cores are busy)")
    args = parser.parse_args(argv)
    for flag in ("epochs", "batch_size", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    data = load()
    torch.manual_seed(args.seed)
    init = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    fp32 = copy.deepcopy(init)
    results = [train("float32", fp32, OptimLP(sgd(fp32)), data, args)]
    lp = quantize_model(init, weight=LP["weight"], activation=LP["activation"], error=LP["error"],
                        generator=args.seed)
    opt = OptimLP(sgd(lp), weight=LP["weight"], grad=LP["grad"], momentum=LP["momentum"], acc=LP["acc"],
                  acc_rounding=ACC_ROUNDING, generator=args.seed + 1)
    results.append(train("8-bit", lp, opt, data, args))

    headers = ["run", *(k.replace("acc", "accumulator") for k in LP), "bits/param", "train loss", "test acc",
               "seconds"]
    fmts = {"float32": ["float32"] * len(LP), "8-bit": [repr(f) for f in LP.values()]}
    rows = [[r["run"], *fmts[r["run"]], f"{r['bits']:.0f}", f"{r['train_loss']:.4f}", f"{r['test_acc']:.2%}",
             f"{r['seconds']:.1f}"] for r in results]
    print()
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    for row in (headers, ["-" * w for w in widths], *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print("bits/param: stored weight + accumulator + momentum bits per parameter (OptimLP.bits_per_param)")
    return results


if __name__ == "__main__":
    main()
