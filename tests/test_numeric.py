"""Compiled numerics against MODELS.md closed forms, an independent bias minimisation and
finite differences."""

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from conftest import CHAINS, CHAINS_ABOVE, CHAINS_BELOW, ref_entropy_rate, ref_unigram_loss
from flowlab import FlowlabInputError, MarkovChain, NumericModel, get_model


def _points_on_global_curve(p, q, n=7):
    """(e, w) with e^2 (1 + 2 w|w|) = D*, w on the side MODELS.md gives."""
    Dstar = math.log((1 - p) * (1 - q) / (p * q))
    ws = np.linspace(-0.6, 2.0, n) if p + q < 1 else np.linspace(-3.0, -0.8, n)
    pts = []
    for w in ws:
        s = 1 + 2 * w * abs(w)
        assert s * Dstar > 0
        pts.append((math.sqrt(Dstar / s), w))
    return np.array(pts)


@pytest.mark.parametrize("p,q", CHAINS)
def test_loss_is_entropy_rate_on_global_curve_and_unigram_on_e0(p, q):
    nm = NumericModel(get_model("ew"), MarkovChain(p, q))
    H, _ = ref_entropy_rate(p, q)
    pts = _points_on_global_curve(p, q)
    np.testing.assert_allclose(nm.loss(pts), H, rtol=1e-12)
    np.testing.assert_allclose(nm.gradient(pts), 0.0, atol=1e-12)
    line = np.column_stack([np.zeros(9), np.linspace(-3, 3, 9)])
    np.testing.assert_allclose(nm.loss(line), ref_unigram_loss(p, q), rtol=1e-12)
    np.testing.assert_allclose(nm.gradient(line), 0.0, atol=0)


def _free_loss(p, q, z0, z1):
    """sum_x pi_x CE(P(x->1), sigma(z_x)), written directly."""
    pi1 = p / (p + q)
    pi0 = 1 - pi1
    ce = lambda t, z: -t * math.log(1 / (1 + math.exp(-z))) - (1 - t) * math.log(1 - 1 / (1 + math.exp(-z)))
    return pi0 * ce(p, z0) + pi1 * ce(1 - q, z1)


@pytest.mark.parametrize("p,q", [(0.1, 0.1), (0.5, 0.8), (0.3, 0.2), (0.8, 0.6)])
def test_profiled_loss_equals_numerical_minimum_over_the_bias(p, q):
    nm = NumericModel(get_model("ew"), MarkovChain(p, q))
    rng = np.random.default_rng(0)
    for e, w in rng.uniform(-1.5, 1.5, size=(6, 2)):
        D = e * e * (1 + 2 * w * abs(w))
        f0 = -e * e / 2
        best = minimize_scalar(lambda b, f0=f0, D=D: _free_loss(p, q, f0 + b, f0 + D + b), bracket=(-5, 5), tol=1e-12)
        assert float(nm.loss([e, w])) == pytest.approx(best.fun, rel=1e-10)


def test_ewb_at_the_optimal_bias_equals_ew():
    chain = MarkovChain(0.5, 0.8)
    ew, ewb = NumericModel(get_model("ew"), chain), NumericModel(get_model("ewb"), chain)
    for e, w in [(0.3, -1.2), (1.0, 0.5), (0.7, -0.2)]:
        best = minimize_scalar(lambda b, e=e, w=w: float(ewb.loss([e, w, b])), bracket=(-3, 3), tol=1e-12)
        assert best.fun == pytest.approx(float(ew.loss([e, w])), rel=1e-10)


@pytest.mark.parametrize("name", ["ew", "ewb"])
@pytest.mark.parametrize("p,q", [(0.1, 0.1), (0.5, 0.8), (0.9, 0.9)])
def test_gradient_and_hessian_match_finite_differences(name, p, q):
    nm = NumericModel(get_model(name), MarkovChain(p, q))
    n = len(nm.params)
    x = np.random.default_rng(1).normal(scale=1.2, size=(20, n))
    h = 1e-5
    eye = np.eye(n)
    fd_grad = np.stack([(nm.loss(x + h * eye[i]) - nm.loss(x - h * eye[i])) / (2 * h) for i in range(n)], -1)
    np.testing.assert_allclose(nm.gradient(x), fd_grad, rtol=1e-6, atol=1e-8)
    fd_hess = np.stack([(nm.gradient(x + h * eye[i]) - nm.gradient(x - h * eye[i])) / (2 * h) for i in range(n)], -2)
    np.testing.assert_allclose(nm.hessian(x), fd_hess, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(nm.hessian(x), np.swapaxes(nm.hessian(x), -1, -2), atol=1e-14)


@pytest.mark.parametrize("name", ["ew", "ewb"])
def test_finite_and_warning_free_far_out(name):
    nm = NumericModel(get_model(name), MarkovChain(0.5, 0.8))
    n = len(nm.params)
    grid = np.random.default_rng(2).uniform(-50, 50, size=(4000, n))
    grid[:3, :2] = [[50, 50], [50, -50], [-50, 0.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in (nm.loss, nm.gradient, nm.hessian, nm.gap):
            assert np.all(np.isfinite(f(grid)))
        D = np.array([-1e3, -700.0, 0.0, 700.0, 1e3, 1e7])
        ell, ell1 = nm.profiled_loss(D)
    assert np.all(np.isfinite(ell)) and np.all(np.isfinite(ell1))


@pytest.mark.parametrize("p,q", CHAINS_BELOW[:2] + CHAINS_ABOVE[:2] + [(0.9, 0.3)])
def test_profiled_loss_asymptotes(p, q):
    """|D| -> inf: D -> +inf forces sigma(z0) -> 0, sigma(z1) -> 1, so ell' -> pi1 q; D -> -inf
    forces sigma(z1) -> max(0, (pi1 - pi0)/pi1) by the stationarity condition, so
    ell' -> max(0, pi1 - pi0) - pi1 (1 - q). ell grows linearly with those slopes."""
    nm = NumericModel(get_model("ew"), MarkovChain(p, q))
    pi0, pi1 = q / (p + q), p / (p + q)
    slopes = np.array([pi1 * q, max(0.0, pi1 - pi0) - pi1 * (1 - q)])
    ell, ell1 = nm.profiled_loss(np.array([1e3, -1e3]))
    ell2, _ = nm.profiled_loss(np.array([2e3, -2e3]))
    np.testing.assert_allclose(ell1, slopes, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose((ell2 - ell) / np.array([1e3, -1e3]), slopes, rtol=1e-9)


def test_evaluate_payload_and_errors():
    nm = NumericModel(get_model("ew"), MarkovChain(0.5, 0.8))
    out = nm.evaluate([0.3, -1.2])
    assert out["params"] == ["e", "w"]
    assert set(out["gradient"]) == {"e", "w"}
    assert np.array(out["hessian"]).shape == (2, 2)
    assert out["gap"] == pytest.approx(0.09 * (1 - 2 * 1.44))
    assert out["energy"] == pytest.approx(0.09 - 1.44 + math.log(1.2))
    assert nm.evaluate([0.3, 0.0])["energy"] is None  # E is undefined on w = 0
    with pytest.raises(FlowlabInputError, match="shape"):
        nm.loss([1.0, 2.0, 3.0])
    with pytest.raises(FlowlabInputError, match="NaN"):
        nm.loss([float("nan"), 1.0])
