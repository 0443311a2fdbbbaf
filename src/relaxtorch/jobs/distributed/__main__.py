"""``python -m relaxtorch.jobs.distributed``: one rank of a ``torchrun`` job, or the one-machine shortcut.

Under torchrun (RANK and WORLD_SIZE set)::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:29500 -m relaxtorch.jobs.distributed --config job.toml

every rank runs the job and rank 0 prints the table and writes the report; on one
machine give ``--rdzv-endpoint 127.0.0.1:PORT`` so the rendezvous listens on loopback
only.  Without torchrun it does what ``relaxtorch dist`` does.
"""
import sys

from ...cli import main

sys.exit(main(["dist", *sys.argv[1:]]))
