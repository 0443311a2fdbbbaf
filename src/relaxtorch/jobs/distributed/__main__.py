"""``python -m relaxtorch.jobs.distributed``: one rank of a ``torchrun`` job, or the one-machine shortcut.

Under torchrun (RANK and WORLD_SIZE set)::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        -m relaxtorch.jobs.distributed --config job.toml                      # HOST: the first node
    torchrun --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:29500 \
        -m relaxtorch.jobs.distributed --config job.toml                      # one machine

every rank runs the job and rank 0 prints the table and writes the report.  On one
machine give the loopback endpoint, so the ranks meet over 127.0.0.1.  It does not
make torchrun private: torch 2.13's torchrun binds its rendezvous store (and the store
it hands the ranks) to every interface, whatever endpoint is given (``--standalone``
and ``--master-addr 127.0.0.1`` too), and its c10d rendezvous keeps pickled state in
that store; ``GLOO_SOCKET_IFNAME=lo`` keeps gloo's own sockets on loopback.  Without
torchrun it does what ``relaxtorch dist`` does, which listens on 127.0.0.1 only.

A user error (a bad option) is one line from rank 0 (``relaxtorch dist: error: ...``), printed
first; the ranks exit with code 2 and record no error file, so torchrun shows no rank's
traceback.  torchrun (torch 2.13) still ends every job whose ranks exit non-zero with its
own ``ChildFailedError`` summary and a traceback of its launcher: that cannot be turned off
from a rank, so read the first ``relaxtorch`` line for the cause.
"""
import sys

from ...cli import main

sys.exit(main(["dist", *sys.argv[1:]]))
