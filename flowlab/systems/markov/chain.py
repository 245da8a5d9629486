"""Binary first-order Markov chains: validation, stationary law, entropy rate, sampling.

Kernel ``P = [[1-p, p], [q, 1-q]]`` (MODELS.md section 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flowlab.engine.checks import FlowlabInputError, integer, probability

#: |p + q - 1| below this is treated as the degenerate (i.i.d.) chain.
DEGENERATE_TOL = 1e-12
#: Absolute accuracy of a loss value (nats, losses of order 1) in float64: a few hundred ulps.
LOSS_RESOLUTION = 1e-13
#: Loss tolerances are ``min(LOSS_TOL_MAX, LOSS_TOL_REL * gap)`` with gap = h(pi1) - H ...
LOSS_TOL_MAX, LOSS_TOL_REL = 1e-9, 1e-3
#: ... so a chain whose gap is below this has a tolerance under LOSS_RESOLUTION: float64 cannot
#: tell its unigram set from its bigram set, and it is reported as *nearly degenerate*.
NEAR_DEGENERATE_GAP = LOSS_RESOLUTION / LOSS_TOL_REL


def gap_tolerance(gap: float) -> float:
    """Tolerance for "this loss equals a level" when the levels are ``gap`` apart: min(1e-9, 1e-3 gap),
    never below :data:`LOSS_RESOLUTION` (the rule of every chain, binary or k-state)."""
    return max(LOSS_RESOLUTION, min(LOSS_TOL_MAX, LOSS_TOL_REL * gap))


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

    def __str__(self) -> str:
        """``p=..., q=...`` with the digits that matter (the shortest round-trip repr, never rounded)."""
        return f"p={self.p!r}, q={self.q!r}"

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

    @property
    def loss_gap(self) -> float:
        """h(pi1) - H, the loss between the unigram and the bigram model (0 iff p + q = 1).

        Computed as the mutual information sum_x pi_x KL(P(x, .) || pi) of consecutive tokens,
        term by term with log1p, not as the difference of two entropies of order 1.
        """
        if self.degenerate:
            return 0.0
        s = self.p + self.q
        dev = self.p * (self.p + self.q - 1.0) / s  # p - pi1 = (1 - q) - pi1 (up to sign)
        pi1, pi0 = self.pi1, self.pi0

        def kl(d):  # KL(Bernoulli(pi1 + d) || Bernoulli(pi1)); a log(a / pi1) -> 0 as a -> 0 (and at 1)
            a = pi1 + d
            r1, r0 = d / pi1, -d / pi0
            return (a * math.log1p(r1) if r1 > -1 else 0.0) + ((1 - a) * math.log1p(r0) if r0 > -1 else 0.0)

        # next token 1 with probability p after a 0 (= pi1 + dev) and 1 - q after a 1 (= pi1 - dev q / p)
        return max(0.0, pi0 * kl(dev) + pi1 * kl(-dev * self.q / self.p))

    @property
    def loss_tolerance(self) -> float:
        """Tolerance for "this loss equals H" (or h(pi1)): min(1e-9, 1e-3 (h(pi1) - H)), never below
        :data:`LOSS_RESOLUTION`."""
        return gap_tolerance(self.loss_gap)

    @property
    def nearly_degenerate(self) -> bool:
        """p + q != 1 but h(pi1) - H < :data:`NEAR_DEGENERATE_GAP` (1e-10): the gap-scaled loss
        tolerance would fall below float64 resolution, so losses cannot tell unigram from bigram."""
        return not self.degenerate and self.loss_gap < NEAR_DEGENERATE_GAP

    def require_resolvable(self, what: str, hint: str = "") -> None:
        """Like :meth:`require_nondegenerate`, and also refuse a nearly degenerate chain (``hint`` ends the message)."""
        self.require_nondegenerate(what)
        if self.nearly_degenerate:
            raise FlowlabInputError(
                f"the chain ({self}) is nearly degenerate: h(pi1) - H = {self.loss_gap:.3g} is below "
                f"{NEAR_DEGENERATE_GAP:g}, the smallest loss gap float64 resolves (a loss tolerance of "
                f"{LOSS_TOL_REL:g} x gap would be under the loss accuracy {LOSS_RESOLUTION:g}), so {what} "
                f"cannot be decided from losses{hint}"
            )

    def require_nondegenerate(self, what: str) -> None:
        """Raise a clear error when ``what`` cannot be answered for p + q = 1."""
        if self.degenerate:
            raise FlowlabInputError(
                f"p + q = 1 ({self}): the chain is i.i.d., the unigram and bigram "
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
            "loss_gap": self.loss_gap,
            "nearly_degenerate": self.nearly_degenerate,
        }
