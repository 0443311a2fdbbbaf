"""Compressed or decentralized training in your own loop: DataParallel, CocktailSGD, DDP hook, DeTAG.

    R="--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:29500"   # one machine: the ranks meet on loopback
    torchrun $R --nproc-per-node 4 examples/comm_api.py                  # CocktailSGD
    torchrun $R --nproc-per-node 4 examples/comm_api.py --algo sign      # 1-bit SGD + error feedback
    torchrun $R --nproc-per-node 4 examples/comm_api.py --algo allreduce # the float32 baseline
    torchrun $R --nproc-per-node 4 examples/comm_api.py --algo ddp-topk  # DDP with a top-K hook
    torchrun $R --nproc-per-node 4 examples/comm_api.py --algo detag     # gossip on a ring, no all-reduce

(``PYTHONPATH=src`` from a source checkout; torchrun itself, torch 2.13, still listens on
every interface, with this endpoint as with ``--standalone``.)  Each rank trains an MLP on
its shard of the embedded digits set over gloo; rank 0 prints test accuracy and what went over the wire,
with the time a 500 Mbps / 1 ms link would have taken.  The only lines that differ from
a single-process loop are the wrapper around the optimizer and the process group.
"""
import argparse
import datetime

import torch
import torch.distributed as dist
import torch.nn.functional as F

from relaxtorch.comm import (CocktailSGD, DataParallel, DeTAG, ErrorFeedback, Sign, TopK, ddp_comm_hook,
                             parse_link, ring)
from relaxtorch.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["cocktail", "sign", "allreduce", "ddp-topk", "detag"], default="cocktail")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--link", default="500Mbps,1ms")
    args = parser.parse_args()

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # torchrun sets rank/world
    rank, world = dist.get_rank(), dist.get_world_size()
    link = parse_link(args.link)

    data = load_dataset("digits", seed=0)
    X, y = data.X_train[rank::world], data.y_train[rank::world]  # this rank's shard
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    net, opt, stats = model, sgd, None
    if args.algo == "cocktail":
        opt = CocktailSGD(sgd, link=link)  # 10% random -> top 20% -> 4-bit buckets, overlapped
        stats = opt.stats
    elif args.algo == "sign":
        opt = DataParallel(sgd, ErrorFeedback(Sign()), link=link)
        stats = opt.stats
    elif args.algo == "allreduce":
        opt = DataParallel(sgd, link=link)
        stats = opt.stats
    elif args.algo == "detag":
        opt = DeTAG(sgd, topology=ring(world), link=link)  # each rank keeps its own model (same start)
        stats = opt.stats
    else:
        net = torch.nn.parallel.DistributedDataParallel(model)
        state, hook = ddp_comm_hook(ErrorFeedback(TopK(0.05)), link=link)
        net.register_comm_hook(state, hook)
        stats = state.stats

    g = torch.Generator().manual_seed(rank)
    for _ in range(args.steps):
        idx = torch.randint(0, len(y), (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net(X[idx]), y[idx]).backward()
        opt.step()
    if hasattr(opt, "synchronize"):
        opt.synchronize()  # apply the update still in flight

    with torch.no_grad():
        acc = (model(data.X_test).argmax(1) == data.y_test).float().mean().item()
    if rank == 0:
        print(f"{args.algo}: test accuracy {acc:.3f} | {stats.bytes_per_step:,.0f} bytes/step/rank | "
              f"{stats.compression_ratio:,.1f}x fewer than float32 all-reduce | "
              f"{stats.simulated_comm_s / max(stats.steps, 1) * 1e3:.2f} ms/step at {link}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
