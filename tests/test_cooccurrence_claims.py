"""Reduced phase model (SymPy-derived), phases and claims, CLI of the co-occurrence system."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from flowlab.systems.cooccurrence import claims as cl
from flowlab.systems.cooccurrence import reduced as rd
from flowlab.systems.cooccurrence.trajectory import Trajectory

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the derived reduced ODE


def test_derivation_proves_its_identities_at_two_parameter_sizes():
    a, b = rd.derive_reduced(2, 2), rd.derive_reduced(3, 1)
    assert a.verified and b.verified
    assert [str(x) for x in a.rhs] == [str(x) for x in b.rhs]


def test_a_wrong_right_hand_side_is_refuted():
    import sympy as sp

    d = rd.derive_reduced()
    wrong = list(d.rhs)
    wrong[1] = wrong[1] + d.symbols["c"][1] * d.symbols["S"]  # an extra coupling in dG_1
    checks = {i.name: i.verified for i in rd._check_models_md(d.symbols, wrong)}
    assert not checks["models_md"]
    assert sp.expand(wrong[1] - d.rhs[1]) != 0


def _reduced_loss(theta, a, m1, m, pi):
    """The reduced loss of the parameters, written out independently (NumPy)."""
    W = theta[: m1 * m].reshape(m1, m)
    V = theta[m1 * m:].reshape(m, 3)
    G = a @ W @ V
    F = np.array([G.sum(), G[0] + G[2], G[1] + G[2], G[2]])
    y = np.array([1.0, -1.0, -1.0, -1.0])
    return float(np.sum(pi * np.log1p(np.exp(-y * F))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_rhs_equals_finite_difference_flow_of_the_parameters(seed):
    """θ̇ = −∇L by central differences; the Gram scalars' derivatives by the product rule."""
    rng = np.random.default_rng(seed)
    m1, m = 5, 4
    a = rng.choice([-1.0, 1.0], m1)
    theta = rng.normal(0, 0.7, m1 * m + 3 * m)
    pi = np.array([0.5, 1 / 6, 1 / 6, 1 / 6])
    h = 1e-6
    grad = np.array([(_reduced_loss(theta + h * e, a, m1, m, pi) - _reduced_loss(theta - h * e, a, m1, m, pi))
                     / (2 * h) for e in np.eye(theta.size)])
    W, V = theta[: m1 * m].reshape(m1, m), theta[m1 * m:].reshape(m, 3)
    Wd, Vd = -grad[: m1 * m].reshape(m1, m), -grad[m1 * m:].reshape(m, 3)
    u, ud = W.T @ a, Wd.T @ a
    K, Kd = V.T @ V, Vd.T @ V + V.T @ Vd
    state = np.r_[u @ u, V.T @ u, [K[i, j] for i, j in rd.K_INDEX]]
    expected = np.r_[2 * u @ ud, Vd.T @ u + V.T @ ud, [Kd[i, j] for i, j in rd.K_INDEX]]
    got = rd.compiled_rhs()(state, pi, m1)
    assert np.allclose(got, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())


def test_reduced_rhs_equals_the_gram_flow_with_frozen_attention():
    """At a Gram state with A = B_K = B_Q = 0 (attention uniform and frozen: Ȧ = 0) on data whose
    other words have h = 0 and no value Gram, part A's Gram right-hand side restricted to
    (S, h_1..3, C_1..3) is the reduced one."""
    from flowlab.systems.cooccurrence.gram import GramState, gram_rhs

    rng = np.random.default_rng(5)
    data = rd.reduced_data(12, 5)
    m1 = 7
    for _ in range(3):
        Z = rng.normal(size=(6, 4))
        gram = Z.T @ Z
        y = np.r_[gram[0, 0], gram[0, 1:], [gram[1 + i, 1 + j] for i, j in rd.K_INDEX]]
        h, A, C, S = rd._grams(y)
        state = GramState(S, h, C, A, np.zeros((4, 4)), np.zeros((4, 4)))
        dot = gram_rhs(data, state, 64, m1)
        pi = np.bincount(data.types, minlength=4) / data.n
        expected = np.r_[dot.S, dot.h[:3], [dot.C[i, j] for i, j in rd.K_INDEX]]
        assert np.allclose(rd.compiled_rhs()(y, pi, m1), expected, rtol=1e-12, atol=1e-13)
        assert np.all(dot.A == 0) and np.all(dot.BK == 0) and np.all(dot.BQ == 0)


def test_reduced_flow_conserves_its_invariant_and_reaches_small_loss():
    traj = rd.reduced_flow(seed=1, t_max=50.0, points=150)
    assert traj.status == "ok" and traj.engine == "reduced"
    assert max(traj.invariant_drift()) < 1e-9
    assert traj.loss[-1] < 1e-2 < traj.loss[0]
    assert np.all(traj.attention == 0) and np.all(traj.attention_deviation == 0)


def test_initial_state_has_the_wishart_means():
    """E[S] = m m1 σ_1², E[G] = 0, E[K] = m σ_0² I (averaged over seeds)."""
    m, m1, L = 50, 9, 5
    draws = np.array([rd.initial_state(m, m1, L, s) for s in range(2000)])
    assert draws[:, 0].mean() == pytest.approx(m, rel=0.02)
    assert np.abs(draws[:, 1:4].mean(axis=0)).max() < 0.05
    assert draws[:, 4].mean() == pytest.approx(1 / L, rel=0.02)
    assert abs(draws[:, 5].mean()) < 0.01


def test_reduced_input_errors():
    from flowlab.engine.errors import FlowlabInputError

    with pytest.raises(FlowlabInputError, match="n"):
        rd.reduced_flow(n=3)
    with pytest.raises(FlowlabInputError, match="t_max"):
        rd.reduced_flow(t_max=0.0)
    with pytest.raises(FlowlabInputError, match="state0"):
        rd.reduced_flow(state0=[1.0, 2.0])
    with pytest.raises(FlowlabInputError, match="state0"):
        rd.reduced_flow(state0=[np.nan] * 10)


def test_committed_derivation_is_regenerated_byte_for_byte():
    committed = (ROOT / rd.DERIVATION_FILE).read_bytes()
    assert rd.to_markdown().encode() == committed, (
        f"{rd.DERIVATION_FILE} is stale: run python -c 'from flowlab.systems.cooccurrence.reduced import "
        "write_derivation; write_derivation(\".\")'")


# ---------------------------------------------------------------- constructed trajectories


def ideal(T=400, T1_index=100):
    """A synthetic run on which every claim holds (types of the 6 samples: 0, 0, 0, 1, 2, 3)."""
    t = np.r_[0.0, np.geomspace(1e-3, 1000.0, T - 1)]
    T1 = t[T1_index]
    after = np.clip(t - T1, 0, None)
    margins = np.tile(np.where(t < T1, -0.1, 0.1 + after)[:, None], (1, 6))
    margins[:, :3] = 0.5  # only sample 3 is misclassified before T1
    peak = np.exp(-((np.log(t + 1e-9) - np.log(T1 / 3)) ** 2))
    loss = 1.0 / (1.0 + t)
    loss_by_type = np.stack([loss, loss * (1 + peak), loss * (1 + peak), loss], axis=1)
    s = np.exp(-t / 1000)
    g_by_type = np.stack([3 * s, s, s, 4 * s], axis=1)  # R = 1.5, gap 0
    ramp = np.log1p(after)
    attention = np.zeros((T, 3, 3))
    value = np.zeros((T, 3, 3))
    for arr in (attention, value):
        arr[:, 1, 0] = arr[:, 0, 1] = ramp
        arr[:, 2, 0] = arr[:, 0, 2] = arr[:, 2, 1] = arr[:, 1, 2] = -ramp
    G = np.tile([1.0, 1.0, -1.5], (T, 1))
    return Trajectory(engine="test_flow", settings={"L": 5, "m": 128}, t=t, loss=loss, loss_by_type=loss_by_type,
                      G=G, attention=attention, value_gram=value, attention_deviation=np.full(T, 0.01),
                      g_by_type=g_by_type, margins=margins, invariants=np.ones((T, 2)))


def holds(traj):
    return {c["id"]: c["holds"] for c in cl.evaluate_claims(traj).claims}


def test_every_claim_holds_on_the_ideal_run():
    traj = ideal()
    result = cl.evaluate_claims(traj)
    assert result.T1 == traj.t[100]
    assert all(v is True for v in holds(traj).values()), holds(traj)
    json.dumps(result.as_dict(), allow_nan=False)


def _set(name, fn):
    def mutate(traj):
        arr = getattr(traj, name).copy()
        fn(arr, traj)
        return dataclasses.replace(traj, **{name: arr})
    return mutate


def _late(traj):
    return traj.t > traj.t[100]


MUTATIONS = {
    "signs_G_T1": _set("G", lambda G, tr: G.__setitem__((slice(None), 1), -0.2)),
    "loss_T1": _set("loss", lambda x, tr: x.__setitem__(slice(None), x * 0.01)),
    "attention_uniform_phase1": _set("attention_deviation", lambda x, tr: x.__setitem__(50, 0.05)),
    "loss_I1_falls": _set("loss_by_type", lambda x, tr: x.__setitem__((60, 0), x[59, 0] * 1.01)),
    "loss_I2_I3_hump": _set("loss_by_type", lambda x, tr: x.__setitem__((slice(None), 2), x[:, 0])),
    "attn_21_up": _set("attention", lambda x, tr: x.__setitem__((slice(None), 1, 0), -x[:, 1, 0])),
    "attn_12_up": _set("attention", lambda x, tr: x.__setitem__((slice(None), 0, 1), -x[:, 0, 1])),
    "attn_31_down": _set("attention", lambda x, tr: x.__setitem__((slice(None), 2, 0), -x[:, 2, 0])),
    "attn_32_down": _set("attention", lambda x, tr: x.__setitem__((slice(None), 2, 1), -x[:, 2, 1])),
    "value_12_up": _set("value_gram", lambda x, tr: x.__setitem__((slice(None), 0, 1), -x[:, 0, 1])),
    "value_13_down": _set("value_gram", lambda x, tr: x.__setitem__((slice(None), 0, 2), -x[:, 0, 2])),
    "value_23_down": _set("value_gram", lambda x, tr: x.__setitem__((slice(None), 1, 2), -x[:, 1, 2])),
    "balancing_gap": _set("g_by_type", lambda x, tr: x.__setitem__((slice(None), 2), 1.5 * x[:, 1])),
    "balancing_ratio": _set("g_by_type", lambda x, tr: x.__setitem__((slice(None), 3), 6 * x[:, 1])),
    "margins_phase2": _set("margins", lambda x, tr: x.__setitem__((300, 4), -0.01)),
    "inverse_loss_linear": _set("loss", lambda x, tr: x.__setitem__(slice(None), np.exp(-np.sqrt(tr.t)) + 1e-3)),
    "final_loss": _set("loss", lambda x, tr: x.__setitem__(slice(None), 0.5 + 0.5 / (1 + tr.t))),
    "attention_final_form": _set("attention", lambda x, tr: x.__setitem__((-1, 0, 1), -1.0)),
    "invariants": _set("invariants", lambda x, tr: x.__setitem__((-1, 0), 1.0 + 1e-6)),
    "T1": _set("margins", lambda x, tr: x.__setitem__((slice(None), 5), -1.0)),
}


@pytest.mark.parametrize("claim_id", sorted(MUTATIONS))
def test_each_claim_flips_when_the_data_violate_it(claim_id):
    assert holds(ideal())[claim_id] is True
    assert holds(MUTATIONS[claim_id](ideal()))[claim_id] is False


def test_T1_detection_and_undecidable_claims():
    traj = ideal()
    assert cl.first_correct_time(traj.t, traj.margins) == traj.t[100]
    never = MUTATIONS["T1"](traj)
    result = cl.evaluate_claims(never)
    assert result.T1 is None
    undecided = {c["id"] for c in result.claims if c["holds"] is None}
    assert {"signs_G_T1", "loss_T1", "attn_21_up", "balancing_ratio", "inverse_loss_linear"} <= undecided
    short = dataclasses.replace(traj, **{n: getattr(traj, n)[:105] for n in
                                         ("t", "loss", "loss_by_type", "G", "attention", "value_gram",
                                          "attention_deviation", "g_by_type", "margins", "invariants")})
    assert holds(short)["value_12_up"] is None  # Phase 2 too short to decide
    frozen = dataclasses.replace(traj, attention=np.zeros_like(traj.attention),
                                 attention_deviation=np.zeros_like(traj.attention_deviation))
    h = holds(frozen)
    assert h["attn_21_up"] is None and h["attention_uniform_phase1"] is None and h["attention_final_form"] is None


def test_still_falling_loss_is_undecided_and_gd_invariants_are_not_judged():
    traj = ideal()
    slow = dataclasses.replace(traj, loss=0.02 + np.exp(-traj.t / 300.0))
    assert holds(slow)["final_loss"] is None  # 0.056 at the end, still falling by 20 % over the last 10 %
    flat = dataclasses.replace(traj, loss=0.05 + 1.0 / (1.0 + traj.t))
    assert holds(flat)["final_loss"] is False
    gd = dataclasses.replace(traj, engine="full_gd")
    assert holds(gd)["invariants"] is None


def test_balancing_ratio_and_inverse_loss_fit_on_known_values():
    g = np.array([[3.0, 1.0, 1.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    R = cl.balancing_ratio(g)
    assert R[0] == pytest.approx(1.5) and np.isnan(R[1])
    t = np.linspace(1, 10, 50)
    fit = cl.inverse_loss_fit(t, 1.0 / (2.0 * t + 3.0))
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(3.0) and fit["r2"] == pytest.approx(1)


# ---------------------------------------------------------------- CLI


def test_cli_claims_json_and_outputs(tmp_path, capsys):
    from flowlab.cli.app import main

    out = tmp_path / "run"
    code = main(["cooccurrence", "claims", "--engine", "reduced", "--t-max", "20", "--points", "60", "--json",
                 "--quiet", "--out", str(out)])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(payload) == {"settings", "engine", "T1", "final_loss", "claims", "status", "message"}
    assert payload["engine"] == "reduced" and payload["status"] == "ok"
    assert all(set(c) == {"id", "statement", "holds", "measured", "expected"} for c in payload["claims"])
    names = {p.name for p in out.iterdir()}
    assert {"claims.json", "trajectory.npz", "figure1.png", "figure1.pdf", "balancing.png"} <= names
    with np.load(out / "trajectory.npz", allow_pickle=False) as z:
        assert z["G"].shape[1] == 3 and str(z["engine"]) == "reduced"


@pytest.mark.parametrize("argv, word", [
    (["--n", "3"], "n"), (["--t-max", "-1"], "t_max"), (["--engine", "bogus"], "engine"), (["--m", "0"], "m")])
def test_cli_bad_input_exits_2(argv, word, capsys):
    from flowlab.cli.app import main

    assert main(["cooccurrence", "claims", "--engine", "reduced", "--quiet", *argv]) == 2
    assert word in capsys.readouterr().err


def test_cli_offers_every_engine_of_the_library():
    from flowlab.cli.app import build_parser

    parser = build_parser()
    for engine in cl.ENGINES:
        assert parser.parse_args(["cooccurrence", "claims", "--engine", engine]).engine == engine
