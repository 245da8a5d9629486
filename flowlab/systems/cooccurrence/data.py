"""Data of the co-occurrence task (Yang et al. 2024, Def. 2.1 and Assumption 2.3), one-hot words.

Words are 0-based indices into the d orthonormal (one-hot) embeddings: μ_1, μ_2 (the two targets)
are words 0 and 1, μ_3 (the common token) is word 2, the random words are 3..d−1. Types
I_1 (both targets, y = +1), I_2 (only μ_1), I_3 (only μ_2), I_4 (neither), all y = −1 except I_1,
are coded 0..3.

Training set (Assumption 2.3): the type counts are n·(1/2, 1/6, 1/6, 1/6) when 6 divides n;
otherwise they are rounded by largest remainders (ties broken in the order I_1, I_2, I_3, I_4) and
the result carries a warning saying the proportions are not exact. Random words are all distinct
when the training set needs at most d − 3 of them (i.e. n_1(L−3) + (n_2+n_3)(L−2) + n_4(L−1) ≤ d−3,
the exact form of the paper's "nL ≤ d"); otherwise they are drawn i.i.d. uniformly from μ_4..μ_d
as in Def. 2.1 and the result carries a warning (the paper's own experiment, n = 60, L = 5, d = 64,
is in this case).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowlab.engine.checks import integer
from flowlab.engine.errors import FlowlabInputError

#: Type probabilities of Def. 2.1 (I_1..I_4) and labels.
TYPE_PROBABILITIES = (0.5, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0)
TYPE_LABELS = (1.0, -1.0, -1.0, -1.0)
#: Which of μ_1, μ_2 each type contains.
TYPE_TARGETS = ((0, 1), (0,), (1,), ())
#: Upper bounds for the sizes (memory of one-hot embeddings n·d·L stays small).
MAX_N, MAX_L, MAX_D = 100_000, 1_000, 1_000_000


@dataclass(frozen=True)
class CooccurrenceData:
    """A data set: ``tokens`` (n, L) word indices, ``y`` (n,) ±1, ``types`` (n,) in 0..3."""

    tokens: np.ndarray
    y: np.ndarray
    types: np.ndarray
    d: int
    seed: int
    distinct: bool
    warnings: tuple = ()

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def L(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def counts(self) -> tuple:
        return tuple(int(c) for c in np.bincount(self.types, minlength=4))

    def embeddings(self) -> np.ndarray:
        """The sample matrices X^{(i)} ∈ R^{d×L} as an (n, d, L) array of one-hot columns."""
        return one_hot(self.tokens, self.d)

    def as_dict(self) -> dict:
        return {"n": self.n, "L": self.L, "d": self.d, "seed": self.seed,
                "counts": list(self.counts), "distinct_random_words": self.distinct,
                "warnings": list(self.warnings)}


def one_hot(tokens: np.ndarray, d: int) -> np.ndarray:
    """(n, d, L) one-hot embedding matrices of word indices (n, L)."""
    tokens = np.asarray(tokens)
    X = np.zeros((tokens.shape[0], d, tokens.shape[1]))
    sample_idx, pos = np.meshgrid(np.arange(tokens.shape[0]), np.arange(tokens.shape[1]),
                                  indexing="ij")
    X[sample_idx, tokens, pos] = 1.0
    return X


def _check_sizes(n, L, d, seed):
    n = integer(n, "n", 1, MAX_N)
    L = integer(L, "L", 3, MAX_L)
    d = integer(d, "d", 4, MAX_D)
    seed = integer(seed, "seed", 0, 2**63 - 1)
    if n * L * d > 2e8:
        raise FlowlabInputError(
            f"n·L·d = {n * L * d:.3g} is too large for the one-hot embeddings (limit 2e8)")
    return n, L, d, seed


def type_counts(n: int) -> tuple:
    """Counts of I_1..I_4 for n samples: exact n·(1/2, 1/6, 1/6, 1/6), else largest remainders."""
    ideal = np.array(TYPE_PROBABILITIES) * n
    counts = np.floor(ideal + 1e-9).astype(int)
    order = sorted(range(4), key=lambda k: (-(ideal[k] - counts[k]), k))
    for k in order[: n - int(counts.sum())]:
        counts[k] += 1
    return tuple(int(c) for c in counts)


def _fill(types: np.ndarray, L: int, d: int, rng, distinct: bool) -> np.ndarray:
    """Token matrix for the given types: μ_3 at a uniform position, targets at two others."""
    n = types.size
    tokens = np.full((n, L), -1, dtype=np.int64)
    for i, kind in enumerate(types):
        positions = rng.permutation(L)
        tokens[i, positions[0]] = 2
        for slot, word in enumerate(TYPE_TARGETS[kind]):
            tokens[i, positions[1 + slot]] = word
    free = tokens < 0
    need = int(free.sum())
    if distinct:
        tokens[free] = 3 + rng.permutation(d - 3)[:need]
    else:
        tokens[free] = rng.integers(3, d, size=need)
    return tokens


def training_set(n: int = 60, L: int = 5, d: int = 64, seed: int = 0) -> CooccurrenceData:
    """A training set satisfying Assumption 2.3 as far as (n, L, d) allow (see module docstring).

    Samples are ordered by type (I_1 first); ``n ≥ 6`` so that every type occurs.
    """
    n, L, d, seed = _check_sizes(n, L, d, seed)
    if n < 6:
        raise FlowlabInputError(f"n must be >= 6 so that every type I_1..I_4 occurs, got {n}")
    counts = type_counts(n)
    types = np.repeat(np.arange(4), counts)
    need = sum(c * (L - 1 - len(t)) for c, t in zip(counts, TYPE_TARGETS))
    distinct = need <= d - 3
    warnings = []
    if n % 6:
        warnings.append(f"n = {n} is not divisible by 6: type counts {list(counts)} (largest "
                        "remainders), so the proportions 1/2, 1/6, 1/6, 1/6 are not exact")
    if not distinct:
        warnings.append(f"the training set needs {need} random words but only d − 3 = {d - 3} "
                        "exist: random words are drawn i.i.d. and repeat (Assumption 2.3(ii) "
                        "does not hold)")
    rng = np.random.default_rng(seed)
    tokens = _fill(types, L, d, rng, distinct)
    return CooccurrenceData(tokens=tokens, y=np.array(TYPE_LABELS)[types], types=types, d=d,
                            seed=seed, distinct=distinct, warnings=tuple(warnings))


def sample(n: int, L: int = 5, d: int = 64, seed: int = 0) -> CooccurrenceData:
    """n i.i.d. draws from the distribution D of Def. 2.1 (types with probabilities 1/2, 1/6 ×3)."""
    n, L, d, seed = _check_sizes(n, L, d, seed)
    rng = np.random.default_rng(seed)
    types = rng.choice(4, size=n, p=TYPE_PROBABILITIES)
    tokens = _fill(types, L, d, rng, distinct=False)
    return CooccurrenceData(tokens=tokens, y=np.array(TYPE_LABELS)[types], types=types, d=d,
                            seed=seed, distinct=False, warnings=())
