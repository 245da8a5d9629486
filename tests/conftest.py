"""Shared fixtures and independent reference formulas (MODELS.md), written without flowlab."""

import math
import os

import numpy as np
import pytest

#: (p, q) pairs on both sides of p + q = 1.
CHAINS_BELOW = [(0.1, 0.1), (0.2, 0.3), (0.05, 0.6), (0.45, 0.5)]
CHAINS_ABOVE = [(0.9, 0.9), (0.5, 0.8), (0.7, 0.4), (0.95, 0.2)]
CHAINS = CHAINS_BELOW + CHAINS_ABOVE

SADDLE_W = -1 / math.sqrt(2)
SEPARATRIX = -(1 + math.log(2)) / 2


def ref_entropy_rate(p, q):
    """sum_x pi_x H(P(x, .)) from the kernel rows, with pi the left eigenvector of P."""
    P = np.array([[1 - p, p], [q, 1 - q]])
    vals, vecs = np.linalg.eig(P.T)
    pi = np.real(vecs[:, np.argmin(abs(vals - 1))])
    pi = pi / pi.sum()
    return float(-np.sum(pi[:, None] * P * np.log(P))), pi


def ref_unigram_loss(p, q):
    pi1 = p / (p + q)
    return -pi1 * math.log(pi1) - (1 - pi1) * math.log(1 - pi1)


def ref_energy(e, w):
    return e * e - w * w - math.copysign(1.0, w) * math.log(abs(w))


def ref_basin(p, q, e, w):
    """'global' or 'local' from MODELS.md section 3 (for e != 0, w != 0)."""
    E = ref_energy(e, w)
    if p + q < 1:
        stuck = w < SADDLE_W and E < SEPARATRIX
    else:
        stuck = w > 0 or (SADDLE_W < w < 0 and E < SEPARATRIX)
    return "local" if stuck else "global"


@pytest.fixture(scope="session")
def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
