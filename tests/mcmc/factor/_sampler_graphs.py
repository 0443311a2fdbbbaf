"""The small graphs every sampler test uses, and a chi-square test of samples against exact enumeration."""
from __future__ import annotations

import numpy as np
import torch

import relaxtorch.mcmc.factor as fg
from relaxtorch.mcmc.factor.functions import FactorFunction as F


def mixed_boolean():
    """(a) 12 boolean variables, mixed factors (with features), 4 evidence variables."""
    factors = [(F.EQUAL, 0, [0, 1]), (F.EQUAL, 0, [1, 2]), (F.ISTRUE, 1, [3]), (F.ISTRUE, 2, [4], None, 0.5),
               (F.IMPLY_NATURAL, 3, [0, 5]), (F.OR, 4, [2, 6, 7]), (F.AND, 5, [3, 8]), (F.LINEAR, 6, [4, 5, 9]),
               (F.EQUAL, 0, [9, 10]), (F.ISTRUE, 1, [11], [0]), (F.IMPLY_MLN, 3, [10, 11]),
               (F.EQUAL, 7, [6, 8], None, 1.5), (F.ISTRUE, 1, [7]), (F.RATIO, 6, [1, 3, 10])]
    return fg.from_factors([2] * 12, [0.6, 0.4, -0.3, 0.8, 0.5, -0.7, 0.35, 0.45], factors,
                           evidence=[-1, -1, 1, -1, -1, 0, -1, -1, -1, 1, -1, 0])


def potts6():
    """(b) 6 variables with D = 3: pairwise Potts tables on a ring plus chords, unary preferences, POTTS factors."""
    d = 3
    eq = 0.8 * np.eye(d)
    factors = [(F.TABLE, 0, [i, (i + 1) % 6], None, 1.0, eq) for i in range(6)]
    factors += [(F.TABLE, 0, [0, 3], None, 1.0, -0.5 * np.eye(d)), (F.TABLE, 0, [1, 4], None, 1.0, eq[::-1])]
    factors += [(F.EQUAL_CAT_CONST, 1, [0], [2]), (F.EQUAL_CAT_CONST, 2, [2], [1]), (F.AND_CAT, 1, [4, 5], [0, 0])]
    factors += [(F.POTTS, 1, [1, 2]), (F.POTTS, 2, [3, 4, 5])]  # the builders' Potts factors
    return fg.from_factors([d] * 6, [1.0, 0.7, -0.4], factors)


def deepdive_logical():
    """(c) a DeepDive-style graph of logical rules over 9 boolean variables, 2 evidence."""
    factors = [(F.IMPLY_NATURAL, 0, [0, 1, 2]), (F.IMPLY_MLN, 1, [2, 3]), (F.LOGICAL, 2, [3, 4, 5]),
               (F.RATIO, 3, [0, 5, 6]), (F.LINEAR, 2, [6, 7, 8]), (F.OR, 4, [1, 8]), (F.AND, 5, [4, 7]),
               (F.ISTRUE, 6, [0]), (F.ISTRUE, 6, [3]), (F.IMPLY_MLN, 1, [5, 8]), (F.EQUAL, 4, [2, 7])]
    return fg.from_factors([2] * 9, [1.2, 0.9, -0.8, 0.7, 0.5, -0.6, 0.3], factors, evidence=[-1, -1, -1, -1, 1, -1,
                                                                                               -1, 0, -1])


GRAPHS = {"mixed": mixed_boolean, "potts": potts6, "logical": deepdive_logical}


def chi_square_pvalue(graph, samples) -> float:
    """p-value of the samples (int32[N, n]) against the exact joint of the free variables (bins with
    expected count < 5 pooled)."""
    states, probs = fg.exact_distribution(graph)
    free = np.flatnonzero(graph.evidence < 0)
    cards = graph.cardinality[free]
    index = np.ravel_multi_index(tuple(samples[:, free].T), tuple(int(c) for c in cards))
    observed = np.bincount(index, minlength=probs.size).astype(float)
    expected = probs * samples.shape[0]
    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = obs.size - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))
