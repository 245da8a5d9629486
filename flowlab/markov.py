"""Binary first-order Markov chains: validation, stationary law, entropy rate, sampling.

Kernel ``P = [[1-p, p], [q, 1-q]]`` (MODELS.md section 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._checks import FlowlabInputError, integer, probability

#: |p + q - 1| below this is treated as the degenerate (i.i.d.) chain.
DEGENERATE_TOL = 1e-12


def binary_entropy(t):
    """h(t) = -t log t - (1-t) log(1-t) in nats (vectorised, h(0) = h(1) = 0)."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -(np.where(t > 0, t * np.log(t), 0.0) + np.where(t < 1, (1 - t) * np.log1p(-t), 0.0))
    return out if out.ndim else float(out)


@dataclass(frozen=True)
class MarkovChain:
    """A binary Markov chain with switching probabilities ``p = P(0->1)`` and ``q = P(1->0)``.

    >>> chain = MarkovChain(0.5, 0.8)
    >>> round(chain.unigram_loss, 4), round(chain.entropy_rate, 4)
    (0.6663, 0.619)
    >>> chain.degenerate
    False
    """

    p: float
    q: float

    def __post_init__(self):
        object.__setattr__(self, "p", probability(self.p, "p"))
        object.__setattr__(self, "q", probability(self.q, "q"))

    @property
    def kernel(self) -> np.ndarray:
        return np.array([[1 - self.p, self.p], [self.q, 1 - self.q]])

    @property
    def switching(self) -> float:
        """The switching factor p + q (< 1: persistent, > 1: alternating)."""
        return self.p + self.q

    @property
    def degenerate(self) -> bool:
        """True when p + q = 1: the chain is i.i.d. and unigram = bigram."""
        return abs(self.p + self.q - 1.0) < DEGENERATE_TOL

    @property
    def regime(self) -> str:
        """'p+q<1', 'p+q=1' or 'p+q>1' (the paper's case split)."""
        if self.degenerate:
            return "p+q=1"
        return "p+q<1" if self.p + self.q < 1 else "p+q>1"

    @property
    def stationary(self) -> np.ndarray:
        """pi = (q, p) / (p + q)."""
        return np.array([self.q, self.p]) / (self.p + self.q)

    @property
    def pi0(self) -> float:
        return self.q / (self.p + self.q)

    @property
    def pi1(self) -> float:
        return self.p / (self.p + self.q)

    @property
    def entropy_rate(self) -> float:
        """Bigram (optimal) loss H = pi0 h(p) + pi1 h(q)."""
        return self.pi0 * binary_entropy(self.p) + self.pi1 * binary_entropy(self.q)

    @property
    def unigram_loss(self) -> float:
        """Loss of predicting pi1 whatever the past: h(pi1)."""
        return binary_entropy(self.pi1)

    @property
    def optimal_gap(self) -> float:
        """D* = log((1-p)(1-q) / (p q)); positive iff p + q < 1."""
        return (math.log1p(-self.p) + math.log1p(-self.q)) - (math.log(self.p) + math.log(self.q))

    def require_nondegenerate(self, what: str) -> None:
        """Raise a clear error when ``what`` cannot be answered for p + q = 1."""
        if self.degenerate:
            raise FlowlabInputError(
                f"p + q = 1 (p={self.p}, q={self.q}): the chain is i.i.d., the unigram and bigram "
                f"models coincide (D* = 0), so {what} is not defined; choose p + q != 1"
            )

    def sample(self, n_sequences: int, length: int, seed: int) -> np.ndarray:
        """Sample sequences started from pi: an int8 array of shape (n_sequences, length)."""
        n_sequences, length = integer(n_sequences, "n_sequences"), integer(length, "length")
        seed = integer(seed, "seed", None)
        rng = np.random.default_rng(seed)
        uniforms = rng.random((n_sequences, length))
        x = np.empty((n_sequences, length), dtype=np.int8)
        x[:, 0] = uniforms[:, 0] < self.pi1
        # P(next = 1 | current): p from 0, 1 - q from 1.
        to_one = np.array([self.p, 1 - self.q])
        for n in range(1, length):
            x[:, n] = uniforms[:, n] < to_one[x[:, n - 1]]
        return x

    def as_dict(self) -> dict:
        return {
            "p": self.p,
            "q": self.q,
            "switching": self.switching,
            "regime": self.regime,
            "degenerate": self.degenerate,
            "stationary": self.stationary.tolist(),
            "entropy_rate": self.entropy_rate,
            "unigram_loss": self.unigram_loss,
            "optimal_gap": self.optimal_gap,
        }
