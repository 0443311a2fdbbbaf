"""Example orders (issue 13): GraB against random reshuffling, figures 1-4.

    python benchmarks/bench_order.py --figure 1 [--seeds 5] [--epochs 100] [--mlp-epochs 50]
    python benchmarks/bench_order.py --figure 2
    python benchmarks/bench_order.py --figure 3 [--reps 7]
    python benchmarks/bench_order.py --figure 4 [--peer-python /work/peer-grab/bin/python]

1. Epochs to random reshuffling's final training loss.  Logistic regression on digits,
   breast cancer and the synthetic set, and the digits MLP (64-128-10, the model of
   ``relaxtorch tradeoff``).  Minibatch SGD with the GraB paper's logistic-regression
   setting (lr 0.01, momentum 0.9, weight decay 1e-4, batch 64; Lu, Guo & De Sa 2022), the
   same for every order; the loss over the whole training set after each epoch, mean over
   seeds (the seed draws the model's init and the order's generator; the first epoch of every
   order is the same random permutation).  Claim: GraB (mean or pair balance) reaches RR's
   final mean loss in at most 0.7x RR's epochs.
2. Sorter memory: ``order.state_bytes`` after one observed epoch (peak: the buffers are
   allocated at init and do not grow) against greedy herding's n x d table, over n and d.
3. Seconds per epoch on the MLP, per-example gradients included, GraB / RR, the runs taking
   turns epoch by epoch, at batch sizes 16, 64 and 256: formed per-example gradients
   (``torch.func``), factored (``LinearGrads``) and sketched (``LinearGrads(sketch=64)``).
   Claim: at most 1.3x.
4. grab-sampler (PyPI) on the same problem (the digits MLP, same setting), run from its own
   virtual environment in a subprocess: loss curves (PNG) and seconds per epoch, next to ours.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.use_repo_src()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _order_train as T  # noqa: E402
import relaxtorch as rt  # noqa: E402
from relaxtorch.jobs._report import figure, format_table, png  # noqa: E402

EPOCH_TARGET = 0.7
TIME_TARGET = 1.3
PEER_SCRIPT = Path(__file__).resolve().parent / "_grab_peer.py"


def epochs_to_reach(curve: list[float], level: float) -> int | None:
    """The first epoch whose loss is at most ``level`` (None if never)."""
    for e, v in enumerate(curve):
        if v <= level:
            return e
    return None


# ----------------------------------------------------------------------------- figure 1

def figure1_table(out: dict) -> str:
    """Per problem and order: the first epoch at which the mean objective is at most RR's final mean
    objective, over RR's epochs (the claim, as the issue words it), and over the epoch at which RR
    itself first got there (stricter: RR's curve may flatten at its noise floor early)."""
    rows = []
    for name, res in out.items():
        mean, level, fstar = res["mean"], res["rr_final"], res.get("optimum")
        epochs = len(mean["rr"]) - 1
        rr_reach = epochs_to_reach(mean["rr"], level)
        for o, m in mean.items():
            reach = epochs_to_reach(m, level)
            ratio = None if reach is None else reach / epochs
            strict = None if reach is None or not rr_reach else reach / rr_reach
            res[f"{o}_epochs_to_rr_final"] = reach
            rows.append([name, o, epochs, f"{m[-1]:.5f}", "-" if fstar is None else f"{m[-1] - fstar:.2e}",
                         "never" if reach is None else reach, C.fmt_ratio(ratio), C.fmt_ratio(strict),
                         "" if o == "rr" else ("met" if ratio is not None and ratio <= EPOCH_TARGET else "not met")])
    return format_table(["problem", "order", "epochs", "final objective (mean)", "minus optimum", "epochs to RR final",
                         "/ RR's epochs", "/ RR's first reach", f"<= {EPOCH_TARGET}x"], rows)


def figure1(args) -> dict:
    orders = args.orders.split(",")
    rows, out = [], {}
    for name in args.problems.split(","):
        epochs = args.mlp_epochs if name.startswith("mlp") else args.epochs
        setting = T.Setting(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, batch=args.batch,
                            epochs=epochs)
        curves = {o: [] for o in orders}
        for seed in range(args.seeds):
            for o in orders:  # orders take turns seed by seed
                losses, _ = T.train(name, o, seed, setting, regularised=True, factored=True)
                curves[o].append(losses)
        mean = {o: np.mean(np.array(curves[o]), axis=0).tolist() for o in orders}
        out[name] = {"setting": vars(setting), "curves": curves, "mean": mean, "rr_final": mean["rr"][-1],
                     "optimum": T.optimum(name, setting.weight_decay)}
        print(f"  {name} done", file=sys.stderr, flush=True)
    table = figure1_table(out)
    fig, axes = figure(len(out), cols=2)
    for ax, (name, res) in zip(np.ravel(axes), out.items()):
        fstar = res["optimum"]
        for o, m in res["mean"].items():
            ax.semilogy(m if fstar is None else np.array(m) - fstar, label=o)
        ax.set_title(f"{name} (mean of {args.seeds} seeds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training objective" + ("" if fstar is None else " minus its optimum"))
        ax.legend()
    (C.RESULTS / f"bench_order_fig1{args.tag}.png").write_bytes(png(fig))
    return {"table": table, "results": out, "orders": orders, "seeds": args.seeds}


# ----------------------------------------------------------------------------- figure 2

def figure2(args) -> dict:
    rows, out = [], []
    g = torch.Generator().manual_seed(0)
    for n in (256, 1024, 4096):
        for d in (64, 1024, 16384):
            entry = {"n": n, "d": d}
            for name in ("grab", "pair", "recursive", "herding"):
                if name == "herding" and n * d > 2**24:
                    entry[name] = None  # the n x d table would not fit comfortably here
                    continue
                order = rt.order.make(name, n=n, d=d)
                state = order.init(torch.Generator().manual_seed(1))
                perm, state = order.epoch(state)
                for start in range(0, n, 64):
                    state = order.observe(state, perm[start:start + 64], torch.randn(min(64, n - start), d, generator=g))
                entry[name] = order.state_bytes(state)
            entry["n_d_float64"] = 8 * n * d  # the sorters keep float64 running sums
            out.append(entry)
            kb = lambda v: "n/a" if v is None else f"{v / 1024:.1f}"  # noqa: E731
            rows.append([n, d, kb(entry["grab"]), kb(entry["pair"]), kb(entry["recursive"]), kb(entry["herding"]),
                         kb(entry["n_d_float64"]), f"{entry['grab'] / (8 * n + 8 * d):.2f}",
                         "n/a" if entry["herding"] is None else f"{entry['herding'] / entry['grab']:.0f}x"])
    table = format_table(["n", "d", "grab KiB", "pair KiB", "recursive KiB", "herding KiB", "8nd KiB",
                          "grab / (8n + 8d)", "herding / grab"], rows)
    return {"table": table, "results": out}


# ----------------------------------------------------------------------------- figure 3

FIGURE3_RUNS = ("rr", "rr+per-example-grads", "grab", "pair", "grab+outer-product-grads", "grab+LinearGrads",
                "pair+LinearGrads", "grab+LinearGrads:sketch=64", "pair+LinearGrads:sketch=64")
FIGURE3_OTHER_BATCHES = ("rr", "grab+LinearGrads", "grab+LinearGrads:sketch=64", "pair+LinearGrads:sketch=64")


def figure3_runs(batch: int, names) -> dict:
    """Per run name ("ORDER[+HOW]"): its epoch function on the digits MLP at ``batch``, each run with
    its own model, optimizer and order state (the same init for all)."""
    setting = T.Setting(batch=batch)
    fns = {}
    for o in names:
        data, model, loss_fn = T.problem("mlp-digits", 0)
        name, _, how = o.partition("+")
        sketch = T.parse_order(f"{name}{how[len('LinearGrads'):]}")[1] if how.startswith("LinearGrads") else None
        recorder = T.make_recorder(model, sketch, 0) if how.startswith("LinearGrads") else None
        order = rt.order.make(name, n=len(data.X_train), d=T.n_params(model) if recorder is None else recorder.dim)
        opt = torch.optim.SGD(model.parameters(), lr=setting.lr, momentum=setting.momentum,
                              weight_decay=setting.weight_decay)
        run = [order.init(torch.Generator().manual_seed(0))]

        def go(data=data, model=model, loss_fn=loss_fn, order=order, opt=opt, recorder=recorder, run=run, o=o):
            run[0] = T.run_epoch(model, loss_fn, data.X_train, data.y_train, order, run[0], opt, batch,
                                 per_example=True if o.endswith("-grads") else None,
                                 grads_fn=T.linear_per_example_grads if "outer" in o else None, recorder=recorder)
        fns[o] = go
    return fns


def figure3(args) -> dict:
    batches = [int(b) for b in args.fig3_batches.split(",")]
    rows, times = [], {}
    for batch in batches:
        names = FIGURE3_RUNS if batch == T.Setting.batch else FIGURE3_OTHER_BATCHES
        t = C.time_interleaved(figure3_runs(batch, names), reps=args.reps, warmup=1)
        times[batch] = t
        for o in names:
            r = C.paired_ratio(t[o], t["rr"])
            rows.append([batch, o, f"{statistics.median(t[o]) * 1e3:.1f}", C.fmt_ratio(r),
                         "" if o.startswith("rr") else ("met" if r <= TIME_TARGET else "not met")])
        print(f"  batch {batch} done", file=sys.stderr, flush=True)
    table = format_table(["batch", "order", "ms / epoch (median)", "ratio to rr (paired median)",
                          f"<= {TIME_TARGET}x"], rows)
    data, model, _ = T.problem("mlp-digits", 0)
    return {"table": table, "times_s": times, "n": len(data.X_train), "d": T.n_params(model),
            "setting": vars(T.Setting()), "batches": batches, "reps": args.reps}


# ----------------------------------------------------------------------------- figure 4

def figure4(args) -> dict:
    setting = T.Setting(epochs=args.mlp_epochs)
    data, model, loss_fn = T.problem("mlp-digits", 0)
    peer = {"status": "not run"}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "problem.npz"
        init = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        np.savez(npz, X=data.X_train.numpy(), y=data.y_train.numpy(), **{f"p:{k}": v for k, v in init.items()})
        result = Path(tmp) / "peer.json"
        cmd = [args.peer_python, str(PEER_SCRIPT), str(npz), str(result), json.dumps(vars(setting)),
               ",".join(args.peer_orders.split(","))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            peer = {"status": "ran", **json.loads(result.read_text())}
        else:
            peer = {"status": "failed", "stderr_tail": proc.stderr.strip().splitlines()[-5:]}
    ours = {}
    for o in ("rr", "grab", "pair"):
        losses, seconds = T.train("mlp-digits", o, 0, setting)
        ours[o] = {"losses": losses, "seconds": seconds}
    rows = []
    for o, r in ours.items():
        rows.append(["relaxtorch", o, f"{r['losses'][-1]:.5f}", f"{statistics.median(r['seconds']) * 1e3:.1f}"])
    if peer["status"] == "ran":
        for o, r in peer["runs"].items():
            rows.append([f"grab-sampler {peer.get('version', '')}", o, f"{r['losses'][-1]:.5f}",
                         f"{statistics.median(r['seconds']) * 1e3:.1f}"])
    table = format_table(["library", "order", f"loss after {setting.epochs} epochs", "ms / epoch (median)"], rows)
    fig, axes = figure(1)
    ax = np.ravel(axes)[0]
    for o, r in ours.items():
        ax.semilogy(r["losses"], label=f"relaxtorch {o}")
    if peer["status"] == "ran":
        for o, r in peer["runs"].items():
            ax.semilogy(r["losses"], "--", label=f"grab-sampler {o}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title("digits MLP 64-128-10, seed 0")
    ax.legend()
    (C.RESULTS / "bench_order_fig4.png").write_bytes(png(fig))
    return {"table": table, "ours": ours, "peer": peer, "setting": vars(setting)}


FIGURES = {"1": figure1, "2": figure2, "3": figure3, "4": figure4}


def main(argv=None) -> None:
    p = C.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--figure", choices=[*FIGURES, "all"], default="all")
    p.add_argument("--retable", action="store_true", help="reprint figure 1's tables from its JSON files")
    p.add_argument("--seeds", type=C.positive_int, default=5)
    p.add_argument("--epochs", type=C.positive_int, default=100)
    p.add_argument("--mlp-epochs", type=C.positive_int, default=50)
    p.add_argument("--orders", default="rr,grab,pair")
    p.add_argument("--problems", default=",".join(T.PROBLEMS), help="figure 1's problems")
    p.add_argument("--tag", default="", help="suffix of the JSON/PNG names (figure 1 run in parts)")
    p.add_argument("--lr", type=float, default=T.Setting.lr, help="figure 1's SGD step size")
    p.add_argument("--momentum", type=float, default=T.Setting.momentum, help="figure 1's momentum")
    p.add_argument("--weight-decay", type=float, default=T.Setting.weight_decay, help="figure 1's weight decay")
    p.add_argument("--batch", type=C.positive_int, default=T.Setting.batch, help="figure 1's batch size")
    p.add_argument("--reps", type=C.positive_int, default=7)
    p.add_argument("--fig3-batches", default="16,64,256", help="figure 3's batch sizes (64: every variant)")
    p.add_argument("--threads", type=C.positive_int, default=1)
    p.add_argument("--peer-python", default="/work/peer-grab/bin/python")
    p.add_argument("--peer-orders", default="rr,mean,pair")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.retable:
        for path in sorted(C.RESULTS.glob("bench_order_fig1*.json")):
            res = json.loads(path.read_text())
            res["table"] = figure1_table(res["results"])
            C.write_json(path, res)
            print(f"\n{path.name}\n{C.describe(res['machine'])}\n{res['table']}")
        return
    info = C.machine(extra_packages=("numba",))
    for key in (FIGURES if args.figure == "all" else [args.figure]):
        t0 = time.perf_counter()
        res = FIGURES[key](args)
        res.update(machine=info, timestamp=C.timestamp(), wall_s=time.perf_counter() - t0,
                   command=" ".join(sys.argv))
        C.write_json(C.RESULTS / f"bench_order_fig{key}{args.tag if key == '1' else ''}.json", res)
        print(f"\nFigure {key}\n{C.describe(info)}\n{res['table']}", flush=True)


if __name__ == "__main__":
    main()
