"""Gradient flows: conserved energy, end points on the right critical set, honest verdicts."""

import math

import numpy as np
import pytest

from conftest import CHAINS_ABOVE, CHAINS_BELOW, SADDLE_W, SEPARATRIX, ref_basin, ref_energy
from flowlab import FlowlabInputError, MarkovChain, NumericModel, get_model, gradient_flow

INITS = [(0.1, 0.1), (1.0, -2.0), (1.5, -0.5), (0.3, 0.8), (0.5, -0.3), (2.0, 1.0), (0.05, -1.0)]


def _far_from_separatrix(e, w):
    return abs(ref_energy(e, w) - SEPARATRIX) > 0.05 and abs(w - SADDLE_W) > 0.05


@pytest.mark.parametrize("p,q", CHAINS_BELOW[:2] + CHAINS_ABOVE[:2])
def test_energy_is_conserved_and_the_verdict_matches_the_analytic_basin(p, q):
    chain = MarkovChain(p, q)
    nm = NumericModel(get_model("ew"), chain)
    for e, w in INITS:
        assert _far_from_separatrix(e, w)
        res = gradient_flow(get_model("ew"), chain, [e, w])
        assert res.status == "converged", res.message
        assert res.energy_drift < 1e-6
        assert res.invariants["E"][0] == pytest.approx(ref_energy(e, w), rel=1e-12)
        expected = ref_basin(p, q, e, w)
        assert res.reached == expected, (e, w, res.message)
        ef, wf = res.theta[-1]
        if expected == "global":
            assert float(nm.gap([ef, wf])) == pytest.approx(chain.optimal_gap, abs=1e-6)
            assert res.final_loss == pytest.approx(chain.entropy_rate, abs=1e-9)
        else:
            assert abs(ef) < 1e-5
            assert res.final_loss == pytest.approx(chain.unigram_loss, abs=1e-9)
            # the unigram line is made of minima only on the side MODELS.md gives
            assert (wf < SADDLE_W) == (p + q < 1)
        # w never changes sign (w = 0 is invariant)
        assert np.all(np.sign(res.theta[:, 1]) == np.sign(w))


def test_w_zero_is_invariant():
    res = gradient_flow(get_model("ew"), MarkovChain(0.2, 0.3), [0.7, 0.0])
    assert np.all(res.theta[:, 1] == 0.0)
    assert res.energy_drift is None  # E is undefined on w = 0


@pytest.mark.parametrize("p,q", [(0.2, 0.3), (0.5, 0.8)])
def test_free_bias_energy_rate_along_the_flow(p, q):
    """dE/dt = 2 e^2 dL/db (MODELS.md): integrate the right side along the trajectory."""
    chain = MarkovChain(p, q)
    model = get_model("ewb")
    nm = NumericModel(model, chain)
    fine = gradient_flow(model, chain, [1.2, -0.6, 0.3], t_max=5.0, grad_tol=1e-14, method="RK45", rtol=1e-10)
    tf, thf = fine.t, fine.theta
    ratef = 2 * thf[:, 0] ** 2 * nm.gradient(thf)[:, 2]  # 2 e^2 dL/db at the solver nodes
    integral = np.sum(0.5 * (ratef[1:] + ratef[:-1]) * np.diff(tf))
    E = fine.invariants["E"]
    assert abs(E[-1] - E[0]) > 1e-3  # E really moves with a free bias
    assert E[-1] - E[0] == pytest.approx(integral, rel=1e-3)


def test_tiny_time_limit_is_undetermined_not_a_guess():
    res = gradient_flow(get_model("ew"), MarkovChain(0.5, 0.8), [0.1, 0.1], t_max=1e-3)
    assert res.status == "t_max" and res.reached == "undetermined" and not res.success


def test_start_on_a_critical_point():
    chain = MarkovChain(0.5, 0.8)
    res = gradient_flow(get_model("ew"), chain, [0.0, 1.0])
    assert res.status == "converged" and res.reached == "local" and res.t.size == 1
    res = gradient_flow(get_model("ew"), chain, [0.0, -2.0])  # the maximum half-line for p+q>1
    assert res.reached == "undetermined" and "saddle" in res.message


def test_degenerate_chain_is_refused_unless_allowed():
    chain = MarkovChain(0.4, 0.6)
    with pytest.raises(FlowlabInputError, match="p \\+ q = 1"):
        gradient_flow(get_model("ew"), chain, [0.5, 0.5])
    res = gradient_flow(get_model("ew"), chain, [0.5, 0.5], allow_degenerate=True, t_max=100)
    # near D* = 0 the convergence is only polynomial: not converged is reported, not guessed
    assert res.reached in ("global", "undetermined") and "p + q = 1" in res.message
    assert res.final_loss - chain.entropy_rate < 1e-2 * (res.loss[0] - chain.entropy_rate)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [({"t_max": -1}, "t_max"), ({"method": "Euler"}, "unknown method"), ({"grad_tol": 0}, "grad_tol")],
)
def test_bad_options(kwargs, fragment):
    with pytest.raises(FlowlabInputError, match=fragment):
        gradient_flow(get_model("ew"), MarkovChain(0.2, 0.3), [0.5, 0.5], **kwargs)


def test_bad_initial_points():
    with pytest.raises(FlowlabInputError, match="needs 2 values"):
        gradient_flow(get_model("ew"), MarkovChain(0.2, 0.3), [0.5, 0.5, 0.0])
    with pytest.raises(FlowlabInputError, match="NaN"):
        gradient_flow(get_model("ew"), MarkovChain(0.2, 0.3), [math.nan, 0.5])


@pytest.mark.parametrize("p,q", [(0.1, 0.1), (0.9, 0.9)])
def test_the_saddle_is_not_called_a_local_minimum(p, q):
    """(0, -1/sqrt2) has a PSD Hessian (zero in w, and ell'(0) 2 (1 + 2w|w|) = 0 in e) but is a saddle
    (MODELS.md): L - L(saddle) takes both signs on a small circle, computed here from the loss."""
    chain = MarkovChain(p, q)
    nm = NumericModel(get_model("ew"), chain)
    x0 = np.array([0.0, SADDLE_W])
    ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    d = nm.loss(x0 + 1e-2 * np.stack([np.cos(ang), np.sin(ang)], -1)) - nm.loss(x0)
    assert d.max() > 0 > d.min()  # the independent fact: not a minimum
    assert np.linalg.eigvalsh(nm.hessian(x0)).min() > -1e-12  # and yet PSD
    res = gradient_flow(get_model("ew"), chain, list(x0))
    assert res.reached == "undetermined" and "saddle" in res.message, res.message
    b_star = math.log(p / q)  # the lifted saddle of ewb, (0, -1/sqrt2, b*)
    res = gradient_flow(get_model("ewb"), chain, [0.0, SADDLE_W, b_star])
    assert res.reached == "undetermined", res.message


def test_small_gap_verdicts_scale_with_the_gap():
    """q = 0.50003: h(pi1) - H = 4.5e-10 is below an absolute 1e-9, yet the unigram line is not global."""
    chain = MarkovChain(0.5, 0.50003)
    res = gradient_flow(get_model("ew"), chain, [0.0, 1.0])  # on the unigram line, minima for p + q > 1
    assert res.final_loss - chain.entropy_rate > 4e-10  # the independent fact: the loss is h(pi1), not H
    assert res.reached == "local", res.message


def test_nearly_degenerate_chain_is_undetermined_and_says_so():
    res = gradient_flow(get_model("ew"), MarkovChain(0.5, 0.5 + 1e-12), [0.0, 1.0])
    assert res.reached == "undetermined" and "nearly degenerate" in res.message
