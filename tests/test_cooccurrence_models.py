"""The cooccurrence system's data, full model, Gram flow and experiments (issue 13, part A).

Facts checked against independent references: Def. 2.1 / Assumption 2.3 by counting, gradients by
central finite differences of the sample-by-sample Eq. 1, the Gram right-hand side by the chain rule
on the weights' velocity, the Gram flow against the full gradient flow, conserved quantities,
Wishart moments by Monte Carlo, and gradient descent converging to the flow at first order in lr.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.io import to_json
from flowlab.systems.cooccurrence import data as D
from flowlab.systems.cooccurrence import experiments as X
from flowlab.systems.cooccurrence import full as FM
from flowlab.systems.cooccurrence import gram as GR
from flowlab.systems.cooccurrence.trajectory import Trajectory


@pytest.fixture(scope="module")
def small():
    """12 samples, L = 4, d = 40: all random words distinct; m = 6, m1 = 10."""
    data = D.training_set(12, 4, 40, seed=3)
    weights = FM.init_weights(40, 6, 10, L=4, seed=5, init="paper", sigma0=0.3)
    return data, weights


# ---------------------------------------------------------------- data

def test_training_set_follows_definition_and_assumption():
    data = D.training_set(60, 5, 400, seed=1)
    assert data.counts == (30, 10, 10, 10)
    assert data.distinct and data.warnings == ()
    tok = data.tokens
    for row, kind, y in zip(tok, data.types, data.y):
        assert np.sum(row == 2) == 1                               # μ_3 exactly once
        assert np.sum(row == 0) == (kind in (0, 1))                # μ_1 in I_1, I_2
        assert np.sum(row == 1) == (kind in (0, 2))                # μ_2 in I_1, I_3
        assert y == (1.0 if kind == 0 else -1.0)
    random_words = tok[tok >= 3]
    assert random_words.size == 30 * 2 + 20 * 3 + 10 * 4
    assert np.unique(random_words).size == random_words.size      # Assumption 2.3 (ii)
    assert random_words.max() < 400


def test_training_set_warns_when_words_must_repeat_and_when_6_does_not_divide_n():
    paper = D.training_set(60, 5, 64, seed=0)                      # the paper's own experiment
    assert not paper.distinct
    assert any("repeat" in w for w in paper.warnings)
    odd = D.training_set(11, 5, 1000, seed=0)
    assert sum(odd.counts) == 11 and odd.counts[1] == odd.counts[2]
    assert any("not divisible by 6" in w for w in odd.warnings)
    assert D.type_counts(8) == (4, 2, 1, 1)                        # largest remainders


def test_sampled_types_have_the_definition_probabilities():
    data = D.sample(6000, 5, 64, seed=2)
    freq = np.bincount(data.types, minlength=4) / data.n
    p = np.array(D.TYPE_PROBABILITIES)
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / data.n))
    # μ_3's position is uniform over the L positions
    pos = np.argmax(data.tokens == 2, axis=1)
    counts = np.bincount(pos, minlength=5)
    assert np.all(np.abs(counts / data.n - 0.2) < 5 * math.sqrt(0.16 / data.n))


def test_one_hot_embeddings_are_the_token_columns():
    data = D.training_set(6, 4, 30, seed=0)
    X_all = data.embeddings()
    assert X_all.shape == (6, 30, 4)
    assert np.array_equal(X_all.argmax(axis=1), data.tokens) and np.all(X_all.sum(axis=1) == 1)


@pytest.mark.parametrize("kwargs", [dict(n=5), dict(L=2), dict(d=3), dict(n=2.5), dict(seed=-1),
                                    dict(n=10**5, L=1000, d=10**4)])
def test_training_set_rejects_bad_sizes(kwargs):
    args = dict(n=12, L=4, d=40, seed=0) | kwargs
    with pytest.raises(FlowlabInputError):
        D.training_set(**args)


# ---------------------------------------------------------------- full model

def test_fast_gradient_matches_direct_eq1_and_finite_differences(small):
    data, weights = small
    loss, grad = FM.loss_and_grad(data, weights)
    ref_loss, ref_grad = FM.direct_loss_and_grad(data, weights)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    assert np.allclose(grad.flat(), ref_grad.flat(), rtol=1e-10, atol=1e-14)
    theta, g = weights.flat(), grad.flat()
    rng = np.random.default_rng(0)
    cuts = np.cumsum([0, weights.W.size, weights.WV.size, weights.WK.size, weights.WQ.size])
    for lo, hi in zip(cuts[:-1], cuts[1:]):                  # a few entries of every matrix
        for k in rng.choice(np.arange(lo, hi), 4, replace=False):
            e = np.zeros_like(theta)
            e[k] = 1e-5
            fd = (FM.direct_loss_and_grad(data, weights.with_flat(theta + e))[0]
                  - FM.direct_loss_and_grad(data, weights.with_flat(theta - e))[0]) / 2e-5
            assert fd == pytest.approx(g[k], rel=1e-6, abs=1e-10)


def test_per_type_losses_average_to_the_loss(small):
    data, weights = small
    per_type = FM.per_type_losses(data, weights)
    counts = np.array(data.counts)
    assert per_type @ counts / data.n == pytest.approx(FM.loss_and_grad(data, weights)[0], rel=1e-13)


def test_initialisations_have_the_stated_scales():
    w = FM.init_weights(64, 400, 300, L=5, seed=0, init="paper")
    assert np.all(np.abs(w.a) == 1)
    assert w.WV.std() == pytest.approx(1 / math.sqrt(5 * 400), rel=0.02)
    assert w.W.std() == pytest.approx(1 / math.sqrt(300), rel=0.02)
    k = FM.init_weights(64, 400, 300, seed=0, init="kaiming")
    assert k.WQ.std() == pytest.approx(math.sqrt(2 / 64), rel=0.02)
    assert k.W.std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    u = FM.init_weights(64, 400, 300, seed=0, init="kaiming_uniform")
    assert np.abs(u.WK).max() <= 1 / 8 and np.abs(u.W).max() <= 1 / 20
    assert u.WK.std() == pytest.approx(1 / math.sqrt(3 * 64), rel=0.02)


def test_full_model_inputs_are_validated(small):
    data, weights = small
    with pytest.raises(FlowlabInputError, match="init"):
        FM.init_weights(40, 6, 10, init="xavier")
    with pytest.raises(FlowlabInputError, match="exceed"):
        FM.init_weights(64, 10**5, 10**4)
    with pytest.raises(FlowlabInputError, match="a must"):
        FM.check_weights(FM.Weights(weights.W, weights.WV, weights.WK, weights.WQ, 0.5 * weights.a))
    with pytest.raises(FlowlabInputError, match="NaN"):
        FM.check_weights(FM.Weights(weights.W * np.nan, weights.WV, weights.WK, weights.WQ,
                                    weights.a))
    with pytest.raises(FlowlabInputError, match="would take"):
        FM.gradient_descent(data, weights, epochs=10**8)
    with pytest.raises(FlowlabInputError, match="lr"):
        FM.gradient_descent(data, weights, lr=0.0)


# ---------------------------------------------------------------- Gram flow

def test_gram_rhs_is_the_chain_rule_of_the_weight_flow(small):
    data, weights = small
    _, grad = FM.loss_and_grad(data, weights)
    W, WV, WK, WQ, a = weights.W, weights.WV, weights.WK, weights.WQ, weights.a
    dW, dWV, dWK, dWQ = -grad.W, -grad.WV, -grad.WK, -grad.WQ
    u, du = W.T @ a, dW.T @ a
    expected = {"S": 2 * u @ du, "h": dWV.T @ u + WV.T @ du, "C": dWV.T @ WV + WV.T @ dWV,
                "A": dWK.T @ WQ + WK.T @ dWQ, "BK": dWK.T @ WK + WK.T @ dWK,
                "BQ": dWQ.T @ WQ + WQ.T @ dWQ}
    rhs = GR.gram_rhs(data, GR.grams_from_weights(weights), weights.m, weights.m1)
    for name, value in expected.items():
        got = getattr(rhs, name)
        assert np.allclose(got, value, rtol=1e-10, atol=1e-13 * max(1, np.abs(value).max())), name


def test_gram_flow_equals_full_flow_from_the_same_weights():
    result = X.compare(12, 20, n=12, L=4, d=40, seed=1, t_units=300.0, n_out=25)
    assert result.status == "ok"
    assert result.max_rel_diff["loss"] <= 1e-6
    assert max(v for k, v in result.max_rel_diff.items()) <= 1e-6
    assert max(result.invariant_drift["full_flow"]) <= 1e-8
    assert max(result.invariant_drift["gram_flow"]) <= 1e-8
    assert result.reference.engine == "full_flow" and result.other.engine == "gram_flow"
    assert result.reference.loss[-1] < 0.5 * result.reference.loss[0]   # the run really trains
    json.loads(to_json(result.as_dict()))


def test_gram_flow_conserves_invariants_and_finds_T1_at_large_width():
    data = D.training_set(24, 5, 64, seed=0)
    state = GR.wishart_grams(64, 10**6, 10**4, L=5, seed=4)
    traj = GR.gram_flow(data, state, 10**6, 10**4, loss_target=1e-3, n_out=60)
    assert traj.status == "ok" and traj.extra["loss_target_reached"]
    assert traj.loss[-1] == pytest.approx(1e-3, rel=1e-6)
    assert max(traj.invariant_drift()) <= 1e-8
    t1 = traj.extra["T1_event"]
    before, after = traj.t < t1, traj.t > t1
    assert np.any(traj.margins[before] <= 0, axis=1).all()          # someone wrong before T₁
    assert np.all(traj.margins[after] > 0)                         # nobody wrong after (this run)
    assert traj.T1 is not None and traj.T1 >= t1


def test_wishart_draws_match_their_law_by_monte_carlo():
    """E[G] = m Σ and Var(G_ij) = m (Σ_ij² + Σ_ii Σ_jj) for Σ diagonal, both draw branches."""
    scale, draws = np.array([2.0, 0.5, 0.5, 1.0, 0.25]), 6000
    for m in (9, 3):                                               # Bartlett (m ≥ p) and direct
        rng = np.random.default_rng(m)
        G = np.array([GR.wishart(5, m, scale, rng) for _ in range(draws)])
        mean = m * np.diag(scale)
        var = m * (np.outer(scale, scale) + np.diag(scale ** 2))
        assert np.all(np.abs(G.mean(axis=0) - mean) < 5 * np.sqrt(var / draws)), m
        # relative s.e. of a variance estimate is about √(2(1+κ)/draws) ≲ 4 % here
        assert np.allclose(G.var(axis=0), var, rtol=0.15), m


def test_wishart_grams_have_the_initialisation_means():
    d, m, m1, L, draws = 4, 12, 30, 5, 600
    s0, s1 = 1 / math.sqrt(L * m), 1 / math.sqrt(m1)
    states = [GR.wishart_grams(d, m, m1, L=L, seed=k) for k in range(draws)]
    S = np.array([st.S for st in states])
    assert abs(S.mean() - m * m1 * s1 ** 2) < 5 * math.sqrt(2 * m / draws) * m1 * s1 ** 2
    for name, expected in (("C", m * s0 ** 2 * np.eye(d)), ("A", np.zeros((d, d))),
                           ("BK", m * s0 ** 2 * np.eye(d)), ("BQ", m * s0 ** 2 * np.eye(d))):
        mean = np.mean([getattr(st, name) for st in states], axis=0)
        assert np.all(np.abs(mean - expected) < 5 * math.sqrt(2 * m / draws) * s0 ** 2), name
    h = np.array([st.h for st in states])
    assert np.all(np.abs(h.mean(axis=0)) < 5 * math.sqrt(m / draws) * math.sqrt(m1) * s1 * s0)


def test_wishart_refuses_a_non_gaussian_init_and_huge_vocabularies():
    with pytest.raises(FlowlabInputError, match="Gaussian"):
        GR.wishart_grams(64, 100, 100, init="kaiming_uniform")
    with pytest.raises(FlowlabInputError, match="d must"):
        GR.wishart_grams(10**4, 100, 100)
    data, state = D.training_set(12, 4, 40), GR.wishart_grams(40, 100, 100)
    with pytest.raises(FlowlabInputError, match="rtol"):
        GR.gram_flow(data, state, 100, 100, rtol=0.5)
    with pytest.raises(FlowlabInputError, match="t_eval"):
        GR.gram_flow(data, state, 100, 100, t_eval=[0.0, 2.0, 1.0])
    with pytest.raises(FlowlabInputError, match="data has d"):
        GR.gram_flow(D.training_set(12, 4, 41), state, 100, 100)


# ---------------------------------------------------------------- gradient descent

def test_gradient_descent_converges_to_the_flow_at_first_order(small):
    data, weights = small
    state = GR.grams_from_weights(weights)
    t_end = 20 * GR.time_unit(state, weights.m1)
    errors = []
    for epochs in (200, 400):
        lr = t_end / epochs
        gd, _ = FM.gradient_descent(data, weights, lr=lr, epochs=epochs, record_every=50)
        flow = GR.gram_flow(data, state, weights.m, weights.m1, t_eval=gd.t, rtol=1e-11,
                            record_events=False)
        errors.append(X.max_rel_diff(flow, gd)["loss"])
        drift = gd.invariant_drift()
        assert drift[0] < 50 * lr                                  # O(lr) drift of GD
    assert errors[1] < 0.01 and 1.6 < errors[0] / errors[1] < 2.4


def test_trajectory_outputs_are_json_and_npz_ready(small):
    data, weights = small
    traj, _ = FM.gradient_descent(data, weights, lr=0.01, epochs=30, record_every=10)
    assert isinstance(traj, Trajectory) and traj.t.tolist() == pytest.approx([0, .1, .2, .3])
    summary = json.loads(to_json(traj.as_dict()))
    assert summary["engine"] == "full_gd" and summary["n_times"] == 4
    buf = io.BytesIO()
    np.savez(buf, **traj.columns())
    buf.seek(0)
    loaded = np.load(buf, allow_pickle=False)
    assert loaded["attention"].shape == (4, 3, 3) and str(loaded["engine"]) == "full_gd"
    assert np.array_equal(loaded["margins"], traj.margins)
    with pytest.raises(FloatingPointError):
        Trajectory.from_records("x", {}, [0.0], [dict(FM.weight_observables(data, weights),
                                                      loss=float("nan"))])


def test_power_fit_recovers_an_exact_power_law():
    m = np.array([64.0, 256.0, 1024.0, 4096.0])
    alpha, b, r2 = X.power_fit(m, 3.0 * m ** -0.9)
    assert alpha == pytest.approx(-0.9, abs=1e-12) and b == pytest.approx(math.log(3.0))
    assert r2 == pytest.approx(1.0)
