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


def _gap_mp(p, q):
    """h(pi1) - H at 60 digits (mpmath), from the entropies themselves."""
    import mpmath as mp

    with mp.workdps(60):
        p, q = mp.mpf(p), mp.mpf(q)
        pi1 = p / (p + q)

        def h(t):
            return -t * mp.log(t) - (1 - t) * mp.log(1 - t)

        return float(h(pi1) - (q / (p + q) * h(p) + pi1 * h(q)))


@pytest.mark.parametrize("p,q", [*CHAINS, (0.5, 0.501), (0.5, 0.50003), (0.5, 0.5 + 1e-12), (0.3, 0.7 + 3e-12)])
def test_loss_gap_is_accurate_down_to_tiny_gaps(p, q):
    chain = MarkovChain(p, q)
    ref = _gap_mp(p, q)
    assert chain.loss_gap == pytest.approx(ref, rel=1e-3 if ref < 1e-20 else 1e-9)
    # tolerances scale with the gap: never above a thousandth of it, unless float64 cannot resolve it
    assert chain.loss_tolerance <= max(1.001e-3 * ref, 1e-13) and chain.loss_tolerance <= 1e-9
    assert chain.nearly_degenerate == (ref < 1e-10)
    d = chain.as_dict()
    assert d["loss_gap"] == chain.loss_gap and d["nearly_degenerate"] == chain.nearly_degenerate


def test_nearly_degenerate_chain_is_named_plainly():
    near = MarkovChain(0.5, 0.5 + 1e-12)  # p + q = 1 + 1e-12: gap ~ 5e-25
    assert near.nearly_degenerate and not near.degenerate
    with pytest.raises(FlowlabInputError, match="nearly degenerate"):
        near.require_resolvable("the basin")
    resolvable = MarkovChain(0.5, 0.50003)  # gap 4.5e-10: small, but float64 resolves it
    assert not resolvable.nearly_degenerate
    resolvable.require_resolvable("the basin")
    assert resolvable.loss_tolerance == pytest.approx(4.5e-13, rel=1e-3)


def test_extreme_probabilities_are_exact_or_refused():
    """Found by the hostile sweep: a subnormal p crashed loss_gap; p = q = 1e-300 has the gap log 2
    (the chain is then deterministic up to 1e-300: h(pi1) = log 2 and H ~ 0)."""
    with pytest.raises(FlowlabInputError, match="subnormal"):
        MarkovChain(5e-324, 0.3)
    for v in (1e-300, 1 - 2**-53):
        assert MarkovChain(v, v).loss_gap == pytest.approx(math.log(2), rel=1e-12)
