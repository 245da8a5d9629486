"""Model ewa (attention scalar a), the finite-context loss and the derived invariants (MODELS.md section 4)."""

import math

import numpy as np
import pytest
import sympy as sp
from scipy.optimize import minimize_scalar

from conftest import CHAINS_ABOVE, CHAINS_BELOW, ref_energy
from flowlab import MarkovChain, NumericModel, get_model
from flowlab.systems.markov.context import ContextModel, context_terms
from flowlab.systems.markov.flow import gradient_flow
from flowlab.systems.markov.invariants import derive_invariants
from flowlab.systems.markov.models import param_symbol

CHAINS = CHAINS_BELOW[:2] + CHAINS_ABOVE[:2]


def ref_long_context_loss(p, q, e, w, a):
    """MODELS.md section 4 written out: D with the clip, then min over the bias of the cross-entropy."""
    pi1 = p / (p + q)
    pi0 = 1 - pi1
    c = a * (pi1 - 0.5)
    D = e * e * (1 + 4 * w * abs(w) * min(max(0.5 + c, 0.0), 1.0))

    def ce(b):
        z0, z1 = b, b + D
        return (pi0 * (math.log1p(math.exp(-abs(z0))) + max(z0, 0) - p * z0)
                + pi1 * (math.log1p(math.exp(-abs(z1))) + max(z1, 0) - (1 - q) * z1))

    return minimize_scalar(ce, bounds=(-60, 60), method="bounded", options={"xatol": 1e-12}).fun


@pytest.mark.parametrize("p,q", CHAINS)
def test_ewa_at_a0_is_ew(p, q):
    chain = MarkovChain(p, q)
    ewa, ew = NumericModel(get_model("ewa"), chain), NumericModel(get_model("ew"), chain)
    th = np.random.default_rng(0).uniform(-3, 3, size=(200, 3))
    th[:, 2] = 0.0
    np.testing.assert_allclose(ewa.loss(th), ew.loss(th[:, :2]), rtol=0, atol=1e-14)
    np.testing.assert_allclose(ewa.gradient(th)[:, :2], ew.gradient(th[:, :2]), rtol=0, atol=1e-13)


@pytest.mark.parametrize("p,q", CHAINS)
def test_long_context_loss_matches_models_md(p, q):
    nm = NumericModel(get_model("ewa"), MarkovChain(p, q))
    rng = np.random.default_rng(1)
    th = np.column_stack([rng.uniform(-2, 2, 40), rng.uniform(-2, 2, 40), rng.uniform(-8, 8, 40)])  # clip active too
    ref = [ref_long_context_loss(p, q, *t) for t in th]
    np.testing.assert_allclose(nm.loss(th), ref, atol=1e-9)


def test_direction_a_is_flat_when_p_equals_q():
    nm = NumericModel(get_model("ewa"), MarkovChain(0.3, 0.3))
    th = np.random.default_rng(2).uniform(-2, 2, size=(50, 3))
    assert np.max(np.abs(nm.gradient(th)[:, 2])) == 0.0


def test_context_weights_are_the_law_of_x_and_m():
    chain = MarkovChain(0.2, 0.7)
    t = context_terms(chain, 6)
    assert abs(t.weight.sum() - 1) < 1e-15
    # the marginal of x is pi at every position (the chain starts from pi)
    assert abs(t.weight[t.x == 1].sum() - chain.pi1) < 1e-15
    # E[m_n] = pi1 for every n, so the average over positions too
    assert abs(t.weight @ t.m - chain.pi1) < 1e-14


@pytest.mark.parametrize("name", ["ew", "ewb"])
def test_finite_context_equals_long_context_for_ew(name):
    model, chain = get_model(name), MarkovChain(0.5, 0.8)
    th = np.random.default_rng(3).uniform(-2, 2, size=(30, len(model.params)))
    nm = NumericModel(model, chain)
    for n in (1, 2, 7, 40):
        loss, grad = ContextModel(model, chain, n).loss_and_gradient(th)
        np.testing.assert_allclose(loss, nm.loss(th), atol=1e-14)
        np.testing.assert_allclose(grad, nm.gradient(th), atol=1e-13)


def test_finite_context_matches_monte_carlo_and_tends_to_the_limit():
    model, chain = get_model("ewab"), MarkovChain(0.5, 0.8)
    theta = np.array([1.1, -0.9, 1.6, 0.3])  # e, w, a, b
    e, w, a, b = theta
    n = 10
    x = chain.sample(100_000, n + 1, seed=7).astype(float)
    m = np.cumsum(x[:, :n], axis=1) / np.arange(1, n + 1)
    s = (x[:, :n] - 0.5) + a * (m - 0.5)
    z = e * e * (s + 4 * w * abs(w) * np.maximum(s, 0)) + b
    per_seq = (np.logaddexp(0, z) - x[:, 1:] * z).mean(axis=1)
    exact = float(ContextModel(model, chain, n).loss(theta))
    se = per_seq.std() / math.sqrt(per_seq.size)
    assert abs(per_seq.mean() - exact) < 4 * se
    limit = float(NumericModel(model, chain).loss(theta))
    gaps = [abs(float(ContextModel(model, chain, k).loss(theta)) - limit) for k in (4, 16, 64, 256)]
    assert all(g2 < g1 for g1, g2 in zip(gaps, gaps[1:])) and gaps[-1] < 0.02


def test_finite_context_gradient_and_profiled_bias():
    model, chain = get_model("ewa"), MarkovChain(0.3, 0.45)
    cm = ContextModel(model, chain, 12)
    th = np.array([0.8, 1.3, -0.7])
    g = cm.gradient(th)
    h = 1e-6
    fd = [(cm.loss(th + h * d) - cm.loss(th - h * d)) / (2 * h) for d in np.eye(3)]
    np.testing.assert_allclose(g, fd, atol=1e-7)
    # b* minimises the free-bias loss at the same point
    free = ContextModel(get_model("ewab"), chain, 12)
    b = float(cm.optimal_bias(th))
    vals = [float(free.loss(np.append(th, b + d))) for d in (-1e-3, 0.0, 1e-3)]
    assert vals[1] < vals[0] and vals[1] < vals[2]
    assert abs(float(free.gradient(np.append(th, b))[-1])) < 1e-12


def test_invariant_derivation_recovers_the_energy_of_ew():
    res = derive_invariants(get_model("ew"))
    assert res.complete
    (inv,) = res.invariants
    e, w = param_symbol("e"), param_symbol("w")
    assert inv.verified and inv.matches == "E"
    f = sp.lambdify((e, w), inv.expr)
    for ee, ww in [(0.3, 1.2), (1.5, -0.4), (-2.0, -1.7)]:
        assert abs(f(ee, ww) - ref_energy(ee, ww)) < 1e-12


def test_ewa_invariant_is_conserved_along_flows():
    res = derive_invariants(get_model("ewa"))
    assert len(res.invariants) >= 1 and all(i.verified for i in res.invariants)
    e, w, a, p, q = (*(param_symbol(n) for n in ("e", "w", "a")), *sp.symbols("p q", positive=True))
    for pq, start in (((0.5, 0.8), [0.4, 0.6, 0.3]), ((0.2, 0.3), [0.3, -0.9, -0.5])):
        chain = MarkovChain(*pq)
        flow = gradient_flow(get_model("ewa"), chain, start, t_max=50.0)
        pi1 = chain.pi1
        assert np.all(np.abs(flow.theta[:, 2] * (pi1 - 0.5)) < 0.5)  # inside |c| < 1/2
        for inv in res.invariants:
            f = sp.lambdify((e, w, a, p, q), inv.expr)
            vals = f(*flow.theta.T, *pq)
            assert np.max(np.abs(vals - vals[0])) < 1e-7, inv.expr



@pytest.mark.parametrize("p,q", [(0.2, 0.3), (0.5, 0.8)])
def test_ewa_critical_sets_surface_plane_and_split_curve(p, q):
    from flowlab.systems.markov.critical import critical_sets

    res = critical_sets(get_model("ewa"), MarkovChain(p, q), {"a": (-2, 2)}, starts=512, samples=40)
    assert res.complete and res.agreement["agree"], res.message
    kinds = sorted((s.kind, s.dimension) for s in res.sets)
    assert kinds == [("global_min", 2), ("local_max", 2), ("local_min", 2), ("saddle", 1)]
    pi1 = p / (p + q)
    clip = lambda a: np.clip(0.5 + a * (pi1 - 0.5), 0, 1)
    glob = next(s for s in res.sets if s.kind == "global_min")
    e, w, a = glob.points.T
    Dstar = math.log((1 - p) * (1 - q) / (p * q))
    np.testing.assert_allclose(e**2 * (1 + 4 * w * np.abs(w) * clip(a)), Dstar, atol=1e-8)
    curve = next(s for s in res.sets if s.kind == "saddle")
    e, w, a = curve.points.T
    assert np.all(e == 0)
    np.testing.assert_allclose(1 + 4 * w * np.abs(w) * clip(a), 0, atol=1e-9)  # MODELS.md: the split curve
    lmin = next(s for s in res.sets if s.kind == "local_min")
    side = 1 + 4 * lmin.points[:, 1] * np.abs(lmin.points[:, 1]) * clip(lmin.points[:, 2])
    assert np.all(side < 0) if p + q < 1 else np.all(side > 0)


def test_ewa_basin_slice_and_gaussian_contrast():
    from flowlab.systems.markov.basins import basin_grid, gaussian_basin

    for (p, q), below in (((0.2, 0.3), True), ((0.5, 0.8), False)):
        chain = MarkovChain(p, q)
        g = basin_grid(get_model("ewa"), chain, {"e": (-2, 2), "w": (-2, 2)}, 20, fixed={"a": 0.6}, cross_check=False)
        assert g.label.shape == (20, 20, 1) and g.axes["a"].tolist() == [0.6]
        assert g.counts()["undetermined"] == 0 and 0.05 < g.fractions()["global"] < 0.95
        r = gaussian_basin(get_model("ewa"), chain, 0.02, 150, seed=2).as_dict()
        assert (r["prob_global"] > 0.95) if below else (r["prob_global"] < 0.05)
