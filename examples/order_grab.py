"""GraB in a plain PyTorch loop: the same MLP on digits, random reshuffling against GraB.

    PYTHONPATH=src python examples/order_grab.py [--epochs 20] [--sketch 64]

The only lines that differ from an ordinary loop are the sampler, built from an order, the
``with LinearGrads(model)`` around the step's own forward and backward pass (it records each
layer's input and output gradient: the per-example gradients in factored form, never formed)
and ``sampler.observe``.  GraB (Lu, Guo & De Sa,
NeurIPS 2022) reorders the next epoch so that the running sum of the centred gradients
stays small; random reshuffling ignores them.  Prints the training loss after each epoch.
``--sketch K`` balances per-layer Kronecker sketches of K numbers instead of the exact
gradients: the sorter's work per step shrinks from O(b·d) to O(b (o + in) √K) a layer.
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import relaxtorch as rt
from relaxtorch.data import load_dataset
from relaxtorch.order import LinearGrads, OrderSampler, WithIndices


def train(order_name: str, epochs: int, seed: int = 0, sketch: int | None = None) -> list[float]:
    data = load_dataset("digits")
    dataset = WithIndices(torch.utils.data.TensorDataset(data.X_train, data.y_train))
    torch.manual_seed(seed)  # the same initial weights for both orders
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    params = [p for p in model.parameters()]
    recorder = LinearGrads(model, sketch=sketch, generator=torch.Generator().manual_seed(seed))
    order = rt.order.make(order_name, n=len(dataset), d=recorder.dim)  # d: the parameters, or the sketch
    sampler = OrderSampler(order, torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=64, sampler=sampler)
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        for idx, x, y in loader:
            opt.zero_grad()
            with recorder:                                  # the step's own forward and backward
                F.cross_entropy(model(x), y).backward()
            sampler.observe(idx, recorder.grads())          # ignored by orders that do not balance
            opt.step()
        with torch.no_grad():
            losses.append(F.cross_entropy(model(data.X_train), data.y_train).item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sketch", type=int, default=None, help="numbers per layer of GraB's sketches (default: exact)")
    args = parser.parse_args()
    if args.sketch is not None and args.sketch < 1:
        parser.error(f"--sketch: {args.sketch} is not a positive integer")
    runs = {name: train(name, args.epochs, sketch=args.sketch) for name in ("rr", "grab")}
    print("epoch  loss rr    loss grab")
    for e, (a, b) in enumerate(zip(runs["rr"], runs["grab"]), start=1):
        print(f"{e:5d}  {a:.5f}  {b:.5f}")


if __name__ == "__main__":
    main()
