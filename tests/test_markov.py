import math

import numpy as np
import pytest

from conftest import CHAINS, ref_entropy_rate, ref_unigram_loss
from flowlab import FlowlabInputError, MarkovChain


@pytest.mark.parametrize("p,q", CHAINS)
def test_stationary_law_entropy_rate_unigram(p, q):
    chain = MarkovChain(p, q)
    H, pi = ref_entropy_rate(p, q)
    np.testing.assert_allclose(chain.stationary, pi, rtol=1e-12)
    np.testing.assert_allclose(chain.stationary @ chain.kernel, chain.stationary, rtol=1e-12)
    assert chain.entropy_rate == pytest.approx(H, rel=1e-12)
    assert chain.unigram_loss == pytest.approx(ref_unigram_loss(p, q), rel=1e-12)
    assert chain.unigram_loss > chain.entropy_rate
    assert (chain.optimal_gap > 0) == (p + q < 1)
    assert chain.optimal_gap == pytest.approx(math.log((1 - p) * (1 - q) / (p * q)), rel=1e-12)


def test_paper_numbers():
    chain = MarkovChain(0.5, 0.8)
    assert round(chain.unigram_loss, 4) == 0.6663
    assert round(chain.entropy_rate, 4) == 0.6190
    assert chain.regime == "p+q>1"


@pytest.mark.parametrize(
    "p,q,fragment",
    [
        (0.0, 0.5, "strictly between 0 and 1"),
        (1.0, 0.5, "strictly between 0 and 1"),
        (1.2, 0.5, "strictly between 0 and 1"),
        (0.5, -0.1, "q must lie"),
        (float("nan"), 0.5, "finite"),
        (float("inf"), 0.5, "finite"),
        ("0.5", 0.5, "real number"),
        (True, 0.5, "real number"),
    ],
)
def test_invalid_probabilities(p, q, fragment):
    with pytest.raises(FlowlabInputError, match=fragment):
        MarkovChain(p, q)


def test_degenerate_is_flagged_not_rejected():
    chain = MarkovChain(0.3, 0.7)
    assert chain.degenerate and chain.regime == "p+q=1"
    assert chain.optimal_gap == pytest.approx(0.0, abs=1e-12)
    assert chain.unigram_loss == pytest.approx(chain.entropy_rate, rel=1e-12)
    with pytest.raises(FlowlabInputError, match="p \\+ q = 1"):
        chain.require_nondegenerate("the basin")


def test_sampler_is_seeded_and_has_the_right_law():
    chain = MarkovChain(0.2, 0.7)
    x = chain.sample(4000, 60, seed=3)
    assert x.shape == (4000, 60) and x.dtype == np.int8
    np.testing.assert_array_equal(x, chain.sample(4000, 60, seed=3))
    assert not np.array_equal(x, chain.sample(4000, 60, seed=4))
    prev, nxt = x[:, :-1].ravel(), x[:, 1:].ravel()
    for state, target in ((0, chain.p), (1, 1 - chain.q)):
        sel = nxt[prev == state]
        se = math.sqrt(target * (1 - target) / sel.size)
        assert abs(sel.mean() - target) < 5 * se
    first = x[:, 0]
    assert abs(first.mean() - chain.pi1) < 5 * math.sqrt(chain.pi1 * chain.pi0 / first.size)


@pytest.mark.parametrize("args", [(0, 5, 1), (3, 0, 1), (3, 5, 1.5), (2.0, 5, 1)])
def test_sampler_rejects_bad_sizes(args):
    with pytest.raises(FlowlabInputError):
        MarkovChain(0.2, 0.3).sample(*args)
