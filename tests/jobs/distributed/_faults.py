"""Algorithm factories that fail on purpose (rank 1, third step): the launcher must name the rank.

(A rank that exits without a word is covered by test_launch.py's table of ``_blame`` cases.)

Module-level functions, so the launcher can pickle them by reference into spawned ranks.
"""
import os
import time

from relaxtorch.jobs.distributed.algorithms import build

FAULT_RANK, FAULT_STEP = 1, 3


def _faulty(spec, model, ctx, fault):
    opt = build(spec, model, ctx)
    step, calls = opt.step, [0]

    def faulty_step(*args, **kwargs):
        calls[0] += 1
        if ctx.rank == FAULT_RANK and calls[0] == FAULT_STEP:
            log = os.environ.get("RELAXTORCH_TEST_FAULT_LOG")
            if log:  # when the fault happened, so the test can time the launcher's reaction
                with open(log, "w") as f:
                    f.write(repr(time.time()))
            fault()
        return step(*args, **kwargs)

    opt.step = faulty_step
    return opt


def _raise():
    raise ValueError("injected fault")


def raising(spec, model, ctx):
    return _faulty(spec, model, ctx, _raise)


def hanging(spec, model, ctx):
    return _faulty(spec, model, ctx, lambda: time.sleep(3600))
