"""Asynchronous lock-free training on shared memory: Hogwild! and low-precision Buckwild!.

``hogwild(problem, workers=2, signature="D8M8G32C8")`` runs worker processes that
update one shared model without locks and reports loss, updates per second and
staleness; ``signature`` is the DMGC precision (see :mod:`.signature`).
"""
from .problems import DenseLinear, MatrixCompletion, Prepared, Problem, SparseLinear, TorchModel
from .runner import RunInterrupted, RunResult, WorkerError, hogwild
from .shared import load_checkpoint, save_checkpoint
from .signature import Signature, parse_signature

__all__ = ["DenseLinear", "MatrixCompletion", "Prepared", "Problem", "RunInterrupted", "RunResult", "Signature",
           "SparseLinear", "TorchModel", "WorkerError", "hogwild", "load_checkpoint", "parse_signature",
           "save_checkpoint"]
