"""Tables, JSON and plots of Hogwild!/Buckwild! runs."""
from __future__ import annotations

from ..._files import atomic_write
from ...parallel.runner import RunResult
from .. import _report
from .._report import format_table, machine

FULL = "D32M32G32C32"
FILES = ("hogwild.json", "hogwild.png", "model-*.pt")  # what a run writes into --out


def _baselines(results: list[RunResult]):
    one = {r.signature: r for r in results if r.workers == 1 and r.replication == "shared"}
    seq = one.get(FULL)
    return one, seq


def _name(r: RunResult) -> str:
    return "shared" if r.replication == "shared" else f"per-worker/{r.sync_every}"


def time_to_seq_loss(r: RunResult, seq: RunResult | None) -> float | None:
    """Seconds until ``r`` reaches the sequential float32 run's final loss (None: never)."""
    return r.time_to_loss(seq.final_loss) if seq is not None else None


def table(results: list[RunResult]) -> str:
    """One row per run: hardware efficiency (updates/s and its speed-ups), statistical efficiency
    (final loss over the sequential run's after the same epochs) and both together (time to the
    sequential run's final loss)."""
    one, seq = _baselines(results)
    f32 = {(r.workers, r.replication, r.sync_every): r for r in results if r.signature == FULL}
    rows = []
    for r in results:
        base = one.get(r.signature)
        ref = f32.get((r.workers, r.replication, r.sync_every))
        ttl = time_to_seq_loss(r, seq)
        # CPU time (sync / the workers' epochs): the same share on a busy machine as on a quiet one
        sync = f"{100 * r.sync['cpu_seconds'] / sum(r.cpu_seconds):.1f}%" if r.sync and sum(r.cpu_seconds) else "-"
        rows.append([
            r.signature, r.workers, _name(r), r.epochs, r.final_loss,
            f"{r.final_loss / seq.final_loss:.4f}" if seq and seq.final_loss else "-",
            f"{r.updates_per_s:,.0f}",
            f"{r.updates_per_s / base.updates_per_s:.2f}x" if base and base.updates_per_s else "-",
            f"{r.updates_per_s / ref.updates_per_s:.2f}x" if ref and ref.updates_per_s and r.signature != FULL else "-",
            "never" if ttl is None else f"{ttl:.2f}",
            f"{r.staleness.get('mean', 0):.2f}", r.staleness.get("max", 0), sync,
            f"{r.writes.get('nonzero_fraction', 0):.2f}", f"{r.seconds:.2f}",
        ])
    return format_table(["signature", "workers", "replication", "epochs", "final loss", "loss / seq", "updates/s",
                         "vs 1 worker", "vs float32", "s to seq loss", "stale mean", "stale max", "in sync",
                         "writes", "seconds"], rows, "llllrrrrrrrrrrr")


def write_json(path, results: list[RunResult], extra: dict | None = None) -> str:
    """The runs as JSON; each run also carries ``time_to_seq_loss`` (seconds, or null)."""
    _, seq = _baselines(results)
    runs = [{**r.to_dict(), "time_to_seq_loss": time_to_seq_loss(r, seq)} for r in results]
    _report.write_json(path, {"machine": machine(), "runs": runs, **(extra or {})})
    return path


def plot(path, results: list[RunResult], title: str = "") -> str:
    """PNG of loss against wall-clock seconds, one line per signature and worker count."""
    fig, (ax,) = _report.figure(1, 7.0, 4.5)
    styles = ["-", "--", ":", "-."]
    sigs = sorted({r.signature for r in results}, key=lambda s: (s != FULL, s))
    for r in results:
        if not r.curve:
            continue
        t, _, loss = zip(*r.curve)
        ax.plot(t, loss, styles[sigs.index(r.signature) % len(styles)], marker="o", markersize=2.5,
                label=f"{r.signature}, {r.workers} worker{'s' if r.workers > 1 else ''}"
                      + (f", {_name(r)}" if r.replication != "shared" else ""))
    ax.set_xlabel("wall-clock seconds")
    ax.set_ylabel("training objective")
    ax.set_title(title or "Hogwild! / Buckwild!: loss vs time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    atomic_write(path, _report.png(fig, dpi=120))
    return path
