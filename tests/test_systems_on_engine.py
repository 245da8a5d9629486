"""The cooccurrence and ntp_order systems on the engine's System protocol.

Independent facts: central differences of the loss, each system's own gradient flow (full.py's
solve_ivp, ntp_order's ``flow`` option), conservation laws (and a quantity that is not conserved
moving), explicit weights that approach the reference's optimal loss, and a critical set.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import numpy as np
import pytest

from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.system import System
from flowlab.engine.trajectory import gradient_flow
from flowlab.systems.cooccurrence import full
from flowlab.systems.cooccurrence.data import CooccurrenceData, training_set
from flowlab.systems.cooccurrence.system import CooccurrenceSystem
from flowlab.systems.ntp_order import generate, model, ov_target, run_stage
from flowlab.systems.ntp_order.system import NtpOrderSystem


@pytest.fixture(scope="module")
def cooc():
    return CooccurrenceSystem(training_set(n=12, L=4, d=16, seed=0), m=3, m1=4, seed=1)


@pytest.fixture(scope="module")
def order_data():
    return generate(vocab=5, sentences=12, seed=0, max_len=4)


def ntp_systems(data):
    W_ov = 3.0 * ov_target(data.collocation)
    return {"stage1": NtpOrderSystem(data, 1), "stage2_ce": NtpOrderSystem(data, 2, W_ov=W_ov),
            "stage2_attention": NtpOrderSystem(data, 2, W_ov=W_ov, loss="attention"),
            "both": NtpOrderSystem(data, "both")}


def central_difference(system, theta, h=1e-6):
    steps = np.eye(theta.size) * h
    return (system.loss(theta + steps) - system.loss(theta - steps)) / (2 * h)


def test_protocol_and_vectorised_shapes(cooc, order_data):
    rng = np.random.default_rng(0)
    for system in [cooc, *ntp_systems(order_data).values()]:
        assert isinstance(system, System)
        n = len(system.params)
        assert len(set(system.params)) == n
        thetas = 0.3 * rng.standard_normal((2, 3, n))
        loss, grad = system.loss(thetas), system.gradient(thetas)
        assert loss.shape == (2, 3) and grad.shape == (2, 3, n)
        assert loss[1, 2] == system.loss(thetas[1, 2]) and np.array_equal(grad[0, 1], system.gradient(thetas[0, 1]))
        for values in [*system.invariants(thetas).values(), *system.observables(thetas).values()]:
            assert values.shape == (2, 3)
        assert system.describe()["system"] == system.name
    assert cooc.params[0] == "W[0,0]" and cooc.params[-1] == "W_Q[2,15]" and len(cooc.params) == 4 * 3 + 3 * 3 * 16


def test_gradients_match_finite_differences(cooc, order_data):
    rng = np.random.default_rng(1)
    for system in [cooc, *ntp_systems(order_data).values()]:
        theta = 0.5 * rng.standard_normal(len(system.params))
        fd = central_difference(system, theta)
        np.testing.assert_allclose(system.gradient(theta), fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())


def relative_drift(result, scale):
    return {name: float(np.max(np.abs(v - v[0]))) / max(1.0, scale[name]) for name, v in result.invariants.items()}


def test_cooccurrence_engine_flow_equals_full_flow_and_conserves(cooc):
    result = gradient_flow(cooc, cooc.theta0, t_max=20.0)
    assert result.status == "t_max" and result.loss[-1] < 0.5 * result.loss[0]
    traj, _ = full.gradient_flow(cooc.data, cooc.weights0, result.t)  # full.py's own solve_ivp, same times
    np.testing.assert_allclose(result.loss, traj.loss, rtol=1e-6)
    w = cooc.weights0
    u = w.W.T @ w.a
    scale = {"S-m1*trC": u @ u + w.m1 * np.sum(w.WV**2), "trBK-trBQ": np.sum(w.WK**2) + np.sum(w.WQ**2),
             "|W|^2-|W_V|^2": np.sum(w.W**2) + np.sum(w.WV**2), "|W_K 1|^2": np.sum(w.WK.sum(axis=1) ** 2)}
    assert max(relative_drift(result, scale).values()) <= 1e-8
    key_norm = np.array([np.sum(cooc.weights(th).WK ** 2) for th in result.theta[[0, -1]]])
    assert abs(key_norm[1] - key_norm[0]) > 1e-3 * key_norm[0]  # what the invariants balance does move
    assert result.observables["margin_min"][-1] > 0 > result.observables["margin_min"][0]


def test_cooccurrence_reference_is_approached_and_h_zero_is_critical(cooc):
    ref = cooc.reference()
    assert ref.optimal_loss == 0.0 and "not attained" in ref.source and not ref.complete
    w = cooc.weights0
    c = 200.0
    h = np.zeros(w.d)
    h[:3] = (1.0, 1.0, -1.5)
    W = np.outer(w.a, np.eye(w.m)[0]) / w.m1                 # Wᵀa = e_0
    WV = np.zeros_like(w.WV)
    WV[0] = c * h                                            # h = W_Vᵀ Wᵀ a = c h
    sep = full.Weights(W, WV, np.zeros_like(w.WK), np.zeros_like(w.WQ), w.a).flat()
    assert 0 < cooc.loss(sep) < 1e-30
    rng = np.random.default_rng(2)
    W0 = rng.standard_normal(w.W.shape)
    W0 -= np.outer(w.a, w.a @ W0) / w.m1                     # Wᵀa = 0
    crit = full.Weights(W0, np.zeros_like(w.WV), rng.standard_normal(w.WK.shape), rng.standard_normal(w.WQ.shape),
                        w.a).flat()
    assert cooc.loss(crit) == pytest.approx(math.log(2), rel=1e-14) and ref.levels["h_zero"] == math.log(2)
    assert np.abs(cooc.gradient(crit)).max() < 1e-14
    assert np.linalg.eigvalsh(cooc.hessian(crit)).min() < -1e-3   # h = W_Vᵀ Wᵀ a is bilinear: a saddle set


def test_cooccurrence_reference_unknown_off_definition():
    data = training_set(n=12, L=4, d=16, seed=0)
    tokens = data.tokens.copy()
    i = int(np.nonzero(data.types == 3)[0][0])               # an I_4 sample (y = -1): put both targets in it
    tokens[i, :2] = (0, 1)
    odd = CooccurrenceData(tokens, data.y, data.types, data.d, data.seed, data.distinct)
    assert CooccurrenceSystem(odd, m=2, m1=2).reference().optimal_loss is None


def test_ntp_engine_flow_equals_training_flow(order_data):
    rng = np.random.default_rng(3)
    W0 = 0.1 * rng.standard_normal((5, 5))
    W_ov = 3.0 * ov_target(order_data.collocation)
    batch = model.make_batch(order_data.sentences, order_data.labels(), order_data.optima(), 5)
    cases = [(NtpOrderSystem(order_data, 1), lambda W: model.collocation_loss(W, order_data.collocation)),
             (NtpOrderSystem(order_data, 2, W_ov=W_ov),
              lambda W: model.loss_and_grads(W_ov, W, batch, need_ov=False)[::2])]
    for system, fn in cases:
        trace = run_stage("s", fn, W0, steps=4, lr=0.5, method="flow")
        for t, loss in zip(trace.t[1:], trace.loss[1:]):
            result = gradient_flow(system, W0.ravel(), t_max=float(t))
            assert result.t[-1] == t
            assert result.loss[-1] == pytest.approx(loss, rel=1e-6)


def test_ntp_invariants_conserved_and_references_approached(order_data):
    rng = np.random.default_rng(4)
    closure = order_data.closure
    rank = closure.sum(axis=2).T.astype(float)              # rank[v, q]: tokens below v under query q
    for key, system in ntp_systems(order_data).items():
        theta0 = 0.3 * rng.standard_normal(len(system.params))
        result = gradient_flow(system, theta0, t_max=10.0)
        scale = np.abs(theta0).sum()
        assert max(result.invariant_drift().values()) <= 1e-8 * max(1.0, scale), key
        assert np.abs(result.theta[-1] - theta0).max() > 1e-2, key   # the weights themselves move
        ref = system.reference()
        assert ref.optimal_loss is not None and "infimum" in ref.source, key
        c = 60.0
        W_ov_far = c * ov_target(order_data.collocation)
        far = {"stage1": W_ov_far.ravel(), "stage2_ce": c * rank.ravel(), "stage2_attention": c * rank.ravel(),
               "both": np.concatenate([W_ov_far.ravel(), c * rank.ravel()])}[key]
        assert 0 <= system.loss(far) - ref.optimal_loss < 1e-8, key
        assert system.loss(theta0) > ref.optimal_loss


def test_ntp_stage2_reference_unknown_when_another_token_is_better(order_data):
    batch = model.make_batch(order_data.sentences, order_data.labels(), order_data.optima(), 5)
    sentence, x_star, label = order_data.sentences[0], batch.optimal[0], batch.labels[0]
    other = next(v for v in sentence if v != x_star)
    W_ov = np.zeros((5, 5))
    W_ov[label, other] = 10.0                                 # attending to `other` predicts the label
    ref = NtpOrderSystem(order_data, 2, W_ov=W_ov).reference()
    assert ref.optimal_loss is None and "unknown" in ref.source


def test_bad_input_is_refused_by_name(cooc, order_data):
    with pytest.raises(FlowlabInputError, match="shape"):
        cooc.loss(np.zeros(5))
    with pytest.raises(FlowlabInputError, match="stage must be"):
        NtpOrderSystem(order_data, 3)
    with pytest.raises(FlowlabInputError, match="needs the fixed W_ov"):
        NtpOrderSystem(order_data, 2)
    with pytest.raises(FlowlabInputError, match="stage-2 option"):
        NtpOrderSystem(order_data, 1, loss="attention")
    with pytest.raises(FlowlabInputError, match="W_ov must have shape"):
        NtpOrderSystem(order_data, 2, W_ov=np.zeros((4, 4)))
    stage1 = NtpOrderSystem(order_data, 1)
    W = np.full((5, 5), 1e308)
    W[list(order_data.collocation), np.arange(5)] = -1e308  # the label logit overflows below the others
    with np.errstate(all="ignore"), pytest.raises(FlowlabInputError, match="collocation loss is not finite"):
        gradient_flow(stage1, W.ravel(), t_max=1.0)


def test_results_and_systems_pickle(cooc, order_data):
    for system in [cooc, ntp_systems(order_data)["both"]]:
        theta0 = getattr(system, "theta0", np.full(len(system.params), 0.1))
        result = gradient_flow(system, theta0, t_max=0.5)
        back = pickle.loads(pickle.dumps(result))
        assert np.array_equal(back.loss, result.loss) and back.reference == result.reference
        assert pickle.loads(pickle.dumps(system)).loss(theta0) == system.loss(theta0)


def test_no_markov_module_is_imported():
    code = ("import sys, numpy as np\n"
            "from flowlab.systems.cooccurrence import CooccurrenceSystem, training_set\n"
            "from flowlab.systems.ntp_order import NtpOrderSystem, generate\n"
            "from flowlab.engine.trajectory import gradient_flow\n"
            "s = CooccurrenceSystem(training_set(n=6, L=4, d=12), m=2, m1=2)\n"
            "gradient_flow(s, s.theta0, t_max=0.1)\n"
            "n = NtpOrderSystem(generate(vocab=4, sentences=4, max_len=4), 'both')\n"
            "gradient_flow(n, np.full(len(n.params), 0.1), t_max=0.1)\n"
            "print([m for m in sys.modules if 'markov' in m])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
