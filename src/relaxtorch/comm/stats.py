"""What a rank spent on communication: exact bytes and messages, and where the time went."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, ClassVar

from .link import LinkModel


@dataclass
class CommStats:
    """Counters one rank keeps; every algorithm in ``relaxtorch.comm`` owns one as ``.stats``.

    ``bytes_sent`` counts the exact payload this rank put on the wire (indices, scales
    and values; no transport headers). ``simulated_comm_s`` is what the :class:`LinkModel`
    says those messages would take; ``comm_s`` is the measured wall-clock of the real
    transfers. ``float32_bytes`` is what an uncompressed float32 exchange of the same
    tensors would have sent, so ``compression_ratio`` is exact, not estimated.

    ``clock`` times compute and compression: wall-clock (``time.perf_counter``) by default;
    a job that runs more ranks than it has cores sets ``stats.clock = time.thread_time``, the
    CPU seconds of the rank's own thread, so that waiting for a core shared with another rank
    is not counted as the rank's work.  ``comm_s`` is always wall-clock (waiting is its point).
    """

    clock: ClassVar[Callable[[], float]] = time.perf_counter

    steps: int = 0
    bytes_sent: int = 0
    messages_sent: int = 0
    float32_bytes: int = 0
    compute_s: float = 0.0
    compress_s: float = 0.0
    comm_s: float = 0.0
    simulated_comm_s: float = 0.0

    def record_send(self, nbytes: int, link: LinkModel | None = None, *, messages: int = 1,
                    float32_bytes: int = 0, rounds: int | None = None) -> None:
        """Account for ``messages`` messages of ``nbytes`` bytes in total sent by this rank (in
        ``rounds`` rounds of concurrent messages to different peers; None: one after another)."""
        self.bytes_sent += int(nbytes)
        self.messages_sent += int(messages)
        self.float32_bytes += int(float32_bytes)
        if link is not None:
            self.simulated_comm_s += link.seconds(nbytes, messages, rounds)

    @contextmanager
    def timing(self, what: str):
        """``with stats.timing("compress"):`` adds the block's seconds (``clock``) to ``compress_s``."""
        field = f"{what}_s"
        if field not in ("compute_s", "compress_s", "comm_s"):
            raise ValueError(f"Invalid timing: {what!r} (one of compute, compress, comm)")
        clock = time.perf_counter if field == "comm_s" else self.clock
        t0 = clock()
        try:
            yield
        finally:
            setattr(self, field, getattr(self, field) + clock() - t0)

    @property
    def compression_ratio(self) -> float:
        """float32 bytes / bytes actually sent (``inf`` when nothing was sent)."""
        return self.float32_bytes / self.bytes_sent if self.bytes_sent else float("inf")

    @property
    def bytes_per_step(self) -> float:
        return self.bytes_sent / self.steps if self.steps else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["compression_ratio"] = self.compression_ratio
        d["bytes_per_step"] = self.bytes_per_step
        return d
