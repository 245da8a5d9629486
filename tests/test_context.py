"""Finite context: the quadrature path against the per-term sums and against independent facts (issue 16)."""

import math

import numpy as np
import pytest
from scipy.special import expit

from flowlab import MarkovChain, NumericModel, get_model
from flowlab.systems.markov import context_quadrature as cq
from flowlab.systems.markov.context import ContextModel, context_terms
from flowlab.systems.markov.models import user_model

#: p + q < 1, > 1, = 1 (i.i.d.), p = q
CHAINS = [(0.2, 0.3), (0.6, 0.7), (0.4, 0.6), (0.3, 0.3)]
NS = [1, 2, 7, 64, 256]


def breakpoint_a(m_star):
    """The a that puts the breakpoint of token x = 0 (m* = 1/2 + 1/(2a)) at m_star."""
    return 1.0 / (2.0 * m_star - 1.0)


def hostile_points():
    """(e, w, a) rows: random, |a| < 1 and > 1, a = 0, a = +-1, e = 0, huge e and w, a up to +-10, and
    breakpoints at a finest bin's edge, just beside it, and exactly at a term's m."""
    rng = np.random.default_rng(11)
    rand = rng.uniform(-2, 2, size=(12, 3))
    wide = np.column_stack([rng.uniform(-3, 3, 8), rng.uniform(-3, 3, 8), rng.uniform(-10, 10, 8)])
    edge = 0.25
    special = [
        [1.3, 0.7, 0.0], [0.0, 1.5, 3.0], [0.0, 0.0, 0.0], [1.1, -0.8, 1.0], [0.9, 1.2, -1.0],
        [1.2, 0.4, 0.5], [0.7, -1.9, -0.99], [6.0, 0.8, 2.5], [2.0, 9.0, -1.7], [1.0, -20.0, 4.0],
        [30.0, 3.0, 10.0], [1e-8, 2.0, -6.0], [1.5, 0.6, -10.0],
        [1.4, 0.9, breakpoint_a(edge)],  # breakpoint on a finest bin's edge: a window of two bins
        [1.4, 0.9, breakpoint_a(edge + 3e-9)], [1.4, 0.9, breakpoint_a(edge - 3e-9)],
        [0.8, -1.1, breakpoint_a(1 / 3)], [1.6, 1.3, breakpoint_a(2 / 7)], [1.2, -0.5, breakpoint_a(100 / 251)],
        [1.2, 0.5, breakpoint_a(1 / 2048 + 1e-8)],
    ]
    return np.vstack([rand, wide, np.array(special)])


def gradient_tolerance(theta, terms, b):
    """Per (e, w, a, b): 1e-12 of sum_k w_k |sigma_k - t_k| |df_k/dtheta| plus the rounding both paths share: z_k + b is rounded
    to about eps (1 + |b| + Z_k), Z_k = e^2 (1 + 4 w^2)(|x - 1/2| + |a| |m - 1/2|) the size of the logit's parts
    (the cancellation in s near the breakpoint), so sigma_k - t_k is known to that much only. The ewa logit and
    its gradient are written out (MODELS.md section 4)."""
    e, w, a = (theta[:, i : i + 1] for i in range(3))
    x, m = terms.x[None], terms.m[None]
    s = (x - 0.5) + a * (m - 0.5)
    relu = np.maximum(s, 0.0)
    f = e * e * (s + 4 * w * np.abs(w) * relu)
    size = e * e * (1 + 4 * w * w) * (np.abs(x - 0.5) + np.abs(a) * np.abs(m - 0.5))
    r = 1e-12 * np.abs(expit(f + b[:, None]) - terms.target) + 8 * np.finfo(float).eps * (1 + np.abs(b)[:, None] + size)
    df = [2 * e * (s + 4 * w * np.abs(w) * relu), 8 * e * e * np.abs(w) * relu,
          e * e * (m - 0.5) * (1 + 4 * w * np.abs(w) * (s > 0)), np.ones_like(f)]  # the last: d/db
    return np.stack([(r * np.abs(d)) @ terms.weight for d in df], axis=1)


def bias_slope(theta, terms, b):
    """sum_k w_k sigma'(z_k + b) for ewa: how well b* is determined by its equation (written out)."""
    e, w, a = (theta[:, i : i + 1] for i in range(3))
    s = (terms.x[None] - 0.5) + a * (terms.m[None] - 0.5)
    z = e * e * (s + 4 * w * np.abs(w) * np.maximum(s, 0.0)) + b[:, None]
    sig = expit(z)
    return np.sum(terms.weight * sig * (1 - sig), axis=1)


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("p,q", CHAINS)
def test_quadrature_equals_the_per_term_sums(p, q, n):
    model, chain = get_model("ewa"), MarkovChain(p, q)
    fast = ContextModel(model, chain, n, method="quadrature")  # also where the per-term sums are cheaper
    direct = ContextModel(model, chain, n, method="direct")
    assert fast.path == "quadrature" and direct.path == "direct"
    th = hostile_points()
    paths = fast.point_paths(th)
    assert np.mean(paths == "quadrature") > 0.8
    assert set(paths[-7:]) == {"quadrature"}  # breakpoints on a finest edge, beside it, at a term
    loss, grad = fast.loss_and_gradient(th)
    ref_loss, ref_grad = direct.loss_and_gradient(th)
    b, ref_b = fast.optimal_bias(th), direct.optimal_bias(th)
    assert np.all(np.abs(loss - ref_loss) <= 1e-12 * np.abs(ref_loss))
    assert np.all(np.abs(grad - ref_grad) <= gradient_tolerance(th, direct.terms, ref_b)[:, :3] + 1e-300)
    # both solvers stop at |g(b)| <= 1e-15, which fixes b* to 1e-15 / g'(b*) only (g' = sum w sigma' is tiny
    # where every term saturates)
    tol = 1e-12 * (1 + np.abs(ref_b)) + 2.5e-15 / np.maximum(bias_slope(th, direct.terms, ref_b), 1e-300)
    assert np.all(np.abs(b - ref_b) <= tol)


@pytest.mark.parametrize("n", [3, 256])
def test_free_bias_quadrature_equals_the_per_term_sums(n):
    model, chain = get_model("ewab"), MarkovChain(0.5, 0.8)
    th = np.column_stack([hostile_points(), np.random.default_rng(5).uniform(-4, 4, len(hostile_points()))])
    fast = ContextModel(model, chain, n, method="quadrature")
    direct = ContextModel(model, chain, n, method="direct")
    assert fast.path == "quadrature"
    loss, grad = fast.loss_and_gradient(th)
    ref_loss, ref_grad = direct.loss_and_gradient(th)
    np.testing.assert_array_less(np.abs(loss - ref_loss), 1e-12 * np.abs(ref_loss))
    tol = gradient_tolerance(th[:, :3], direct.terms, th[:, 3])
    np.testing.assert_array_less(np.abs(grad - ref_grad), tol + 1e-300)


@pytest.mark.parametrize("n", [5, 256])
def test_gradient_matches_finite_differences(n):
    cm = ContextModel(get_model("ewa"), MarkovChain(0.3, 0.45), n)
    assert cm.path == "quadrature"
    # a with no term exactly at a breakpoint (a = 2.4 puts m* = 17/24, a term at N >= 24: a kink of the loss)
    for th in ([0.8, 1.3, -0.7137], [1.1, -0.6, 2.4137], [0.9, 0.7, -3.1291], [1.2, -1.4, 0.4173]):
        th = np.array(th)
        h = 1e-6
        fd = [(cm.loss(th + h * d) - cm.loss(th - h * d)) / (2 * h) for d in np.eye(3)]
        np.testing.assert_allclose(cm.gradient(th), fd, rtol=1e-7, atol=1e-8)


def test_profiled_bias_solves_its_equation():
    chain, n = MarkovChain(0.5, 0.8), 256
    cm = ContextModel(get_model("ewa"), chain, n)
    th = np.random.default_rng(4).uniform(-2, 2, size=(40, 3))
    b = cm.optimal_bias(th)
    t = context_terms(chain, n)
    e, w, a = (th[:, i : i + 1] for i in range(3))
    s = (t.x - 0.5) + a * (t.m - 0.5)
    z = e * e * (s + 4 * w * np.abs(w) * np.maximum(s, 0.0)) + b[:, None]
    residual = (expit(z) - t.target) @ t.weight
    assert np.max(np.abs(residual)) < 1e-14


@pytest.mark.parametrize("p,q", CHAINS)
def test_one_position_is_the_cross_entropy_at_m_equal_x(p, q):
    """N = 1: m_1 = x_1, so the loss is the profiled cross-entropy of the logits f(theta; x, m = x)."""
    chain = MarkovChain(p, q)
    pi1 = p / (p + q)
    pi0 = 1 - pi1
    th = np.random.default_rng(6).uniform(-2, 2, size=(20, 3))
    e, w, a = th.T
    f = [e * e * (s + 4 * w * np.abs(w) * np.maximum(s, 0)) for s in (-0.5 - a / 2, 0.5 + a / 2)]
    ref = []
    for d in f[1] - f[0]:  # min over z0 of pi0 CE(p, sigma(z0)) + pi1 CE(1 - q, sigma(z0 + d)): bisection on g
        lo, hi = -60.0, 60.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            g = pi0 * (expit(mid) - p) + pi1 * (expit(mid + d) - (1 - q))
            lo, hi = (mid, hi) if g < 0 else (lo, mid)
        z0 = 0.5 * (lo + hi)
        ce = [math.log1p(math.exp(-abs(z))) + max(z, 0) - t * z for z, t in ((z0, p), (z0 + d, 1 - q))]
        ref.append(pi0 * ce[0] + pi1 * ce[1])
    np.testing.assert_allclose(ContextModel(get_model("ewa"), chain, 1).loss(th), ref, rtol=1e-13)


def test_long_contexts_approach_the_long_context_loss():
    model, chain = get_model("ewa"), MarkovChain(0.5, 0.8)
    th = np.random.default_rng(8).uniform(-2, 2, size=(30, 3))
    limit = NumericModel(model, chain).loss(th)
    gaps = np.array([np.abs(ContextModel(model, chain, n).loss(th) - limit) for n in (16, 64, 256)])
    # the average over positions 1..N closes in like log(N) / N: a factor about 0.13 from N = 16 to 256
    for stat in (np.max(gaps, axis=1), np.median(gaps, axis=1)):
        assert stat[2] < stat[1] < stat[0] and stat[2] < 0.2 * stat[0]
    assert np.median(gaps[2]) < 1e-3


@pytest.mark.parametrize("logit,params", [
    ("e*Abs(m - a) + w*(x - 1/2)", "e,w,a"),  # a kink of Abs
    ("e*Heaviside(m - a) + w*(x - 1/2)", "e,w,a"),  # a jump
    ("e*(m - 1/2) + w*Min(a*m + x - 1, 0)", "e,w,a"),  # Min, breakpoint depending on x
    ("e*m + w*x", "e,w"),  # affine in m, no breakpoint
])
def test_other_piecewise_affine_logits_take_the_quadrature(logit, params):
    model, chain = user_model(logit, params), MarkovChain(0.35, 0.8)
    k = len(model.params)
    th = np.random.default_rng(9).uniform(-3, 3, size=(30, k))
    if k == 3:
        th[:4, 2] = [1 / 3, 0.25, 0.25 + 3e-9, 0.0]  # breakpoints at a term, on an edge, beside it
    for n in (2, 64):
        fast = ContextModel(model, chain, n, method="quadrature")
        direct = ContextModel(model, chain, n, method="direct")
        assert fast.path == "quadrature"
        loss, grad = fast.loss_and_gradient(th)
        ref_loss, ref_grad = direct.loss_and_gradient(th)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-12 * (1 + np.abs(ref_grad).max()))
        np.testing.assert_allclose(fast.optimal_bias(th), direct.optimal_bias(th), rtol=0, atol=1e-11)


@pytest.mark.parametrize("logit", [
    "e*exp(a*m)*x + w",  # not affine in m
    "e*Max(m - 1/4, 0) + w*Max(m - 3/4, 0) + a*x",  # two breakpoints
    "e*Max(a*m*m - 1/4, 0) + w*x",  # kink argument not affine in m
])
def test_logits_without_the_structure_take_the_direct_path(logit):
    model = user_model(logit, "e,w,a")
    cm = ContextModel(model, MarkovChain(0.35, 0.8), 16)
    assert cm.path == "direct" and cq.piecewise_structure(model) is None
    th = np.random.default_rng(10).uniform(-1, 1, size=(5, 3))
    assert set(cm.point_paths(th)) == {"direct"}
    np.testing.assert_array_equal(cm.loss(th), ContextModel(model, MarkovChain(0.35, 0.8), 16, method="direct").loss(th))


def test_a_logit_without_m_is_summed_per_token():
    cm = ContextModel(get_model("ew"), MarkovChain(0.35, 0.8), 64)
    assert cm.path == "by_token" and cm.terms.x.size == 2


def test_quadrature_weights_integrate_polynomials_exactly():
    """Per bin, sum_i q_i P(node_i) = sum_k w_k P(m_k) for P of degree < NODES (here degree 7)."""
    t = context_terms(MarkovChain(0.3, 0.6), 40)
    sel = t.x == 1
    table = cq.token_table(1.0, 0.4, t.m[sel], t.weight[sel])
    poly = np.polynomial.Polynomial([0.3, -1.0, 2.0, 0.5, -3.0, 1.0, 0.25, -2.0])
    for level in (0, 3, cq.FINEST):
        nodes = cq.chebyshev_nodes(level)
        got = np.sum(table.whole[level] * poly(nodes), axis=1)
        j = cq.bin_of(table.m, level)
        ref = np.bincount(j, weights=table.weight * poly(table.m), minlength=2**level)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-15)


def test_bad_method_is_refused():
    from flowlab.engine.errors import FlowlabInputError

    with pytest.raises(FlowlabInputError, match="method must be one of"):
        ContextModel(get_model("ewa"), MarkovChain(0.3, 0.6), 4, method="fast")
