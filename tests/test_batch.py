"""integrate_batch against exact solutions, an independent solver, and exact facts about the flows."""

import json
import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from flowlab.engine.batch import UNDECIDED, BatchResult, integrate_batch
from flowlab.engine.errors import FlowlabInputError

LINEAR = {
    "decay": np.array([[-1.0, 0.0], [0.0, -3.0]]),
    "rotation-decay": np.array([[-0.5, 2.0], [-2.0, -0.5]]),
    "coupled": np.array([[-2.0, 1.0], [0.0, -0.3]]),
}


def linear(A):
    return lambda y: y @ A.T


def double_well(y):
    """-grad V for V(x, y) = (x^2 - 1)^2 + y^2."""
    x, v = y[:, 0], y[:, 1]
    return np.stack([-4.0 * x * (x * x - 1.0), -2.0 * v], axis=1)


def double_well_exact(y0, t):
    """u = x^2 solves the logistic u' = 8u(1 - u); y decays as exp(-2t)."""
    x0, v0 = y0[:, 0], y0[:, 1]
    u = 1.0 / (1.0 + (1.0 / x0**2 - 1.0) * np.exp(-8.0 * t))
    return np.stack([np.sign(x0) * np.sqrt(u), v0 * np.exp(-2.0 * t)], axis=1)


def twist(y):
    """z' = i |z|^2 z: nonlinear, neither contracting nor expanding."""
    r2 = y[:, 0] ** 2 + y[:, 1] ** 2
    return np.column_stack([-r2 * y[:, 1], r2 * y[:, 0]])


def twist_exact(y0, t):
    """|z| is conserved, so z turns at the constant rate |z0|^2."""
    angle = (y0[:, 0] ** 2 + y0[:, 1] ** 2) * t
    c, s = np.cos(angle), np.sin(angle)
    return np.column_stack([c * y0[:, 0] - s * y0[:, 1], s * y0[:, 0] + c * y0[:, 1]])


def basin(y, f):
    """1 near the minimum (1, 0), 0 near (-1, 0), undecided elsewhere."""
    settled = np.hypot(f[:, 0], f[:, 1]) < 0.1
    return np.where(settled & (y[:, 0] > 0.9), 1, np.where(settled & (y[:, 0] < -0.9), 0, UNDECIDED))


def assert_same(a: BatchResult, b: BatchResult):
    for name in ("y", "t", "label", "status", "steps", "rejected"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_linear_systems_match_the_matrix_exponential(name, rng):
    A = LINEAR[name]
    y0 = rng.normal(size=(300, 2)) * 10.0 ** rng.uniform(-2, 2, size=(300, 1))
    res = integrate_batch(linear(A), y0, t_max=2.0, rtol=1e-8, atol=1e-12)
    exact = y0 @ expm(2.0 * A).T
    assert np.all(res.status == 0) and np.all(res.t == 2.0)
    err = np.linalg.norm(res.y - exact, axis=1) / np.linalg.norm(exact, axis=1)
    assert err.max() < 1e-6
    assert np.all(res.label == UNDECIDED)


def test_each_point_has_its_own_step_size():
    # y' = A y is scale invariant, so only atol can tell points apart: a point far below atol
    # needs few steps, a large one many, whatever else shares the batch.
    A = LINEAR["rotation-decay"]
    scales = np.array([1e-12, 1e-9, 1e-6, 1e-3, 1.0, 1e3])
    y0 = np.column_stack([scales, -0.5 * scales])
    res = integrate_batch(linear(A), y0, t_max=5.0, rtol=1e-8, atol=1e-10)
    assert np.all(np.diff(res.steps) >= 0) and res.steps[0] < res.steps[-1] / 3
    for i in range(len(y0)):  # a point's trajectory does not depend on the batch
        alone = integrate_batch(linear(A), y0[i : i + 1], t_max=5.0, rtol=1e-8, atol=1e-10)
        assert alone.steps[0] == res.steps[i] and alone.rejected[0] == res.rejected[i]
        np.testing.assert_array_equal(alone.y[0], res.y[i])


def test_fixed_steps_converge_with_order_five():
    y0 = np.array([[1.0, 0.5], [-0.3, 1.2], [1.5, -0.2]])
    exact = twist_exact(y0, 1.0)
    hs = 2.0 ** -np.arange(4, 8)  # t_max / h is exact in binary: no clipped last step
    errors = []
    for h in hs:  # huge tolerances: every step is accepted and grows to max_step = h
        res = integrate_batch(twist, y0, t_max=1.0, rtol=1e6, atol=1e6, first_step=h, max_step=h)
        assert np.all(res.steps == round(1.0 / h)) and np.all(res.rejected == 0)
        errors.append(np.abs(res.y - exact).max())
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert 4.5 < slope < 5.5, (slope, errors)


def test_double_well_agrees_with_dop853_and_the_exact_solution(rng):
    y0 = rng.uniform(-2, 2, size=(50, 2))
    res = integrate_batch(double_well, y0, t_max=2.0, rtol=1e-9, atol=1e-12)
    ref = np.array([
        solve_ivp(lambda _t, y: double_well(y[None])[0], (0, 2.0), p, method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1]
        for p in y0
    ])
    assert np.abs(res.y - ref).max() < 1e-6
    assert np.abs(res.y - double_well_exact(y0, 2.0)).max() < 1e-6


def test_every_point_lands_exactly_on_t_max_and_max_step_caps_the_step(rng):
    y0 = rng.uniform(-2, 2, size=(20, 2))
    t_max = 0.7  # not a multiple of anything in binary
    res = integrate_batch(double_well, y0, t_max=t_max, max_step=0.01)
    assert np.all(res.t == t_max) and np.all(res.status == 0)
    assert np.all(res.steps >= 70)


# --------------------------------------------------------------------------- decisions


def test_labels_are_the_sign_of_the_initial_x(rng):
    y0 = rng.uniform(-2, 2, size=(400, 2))
    y0[:20, 0] = 0.0  # x = 0 is invariant: these can never be decided
    y0[20:40, 0] = rng.choice([-1, 1], size=20) * 10.0 ** rng.uniform(-6, -1, size=20)
    res = integrate_batch(double_well, y0, t_max=30.0, decide=basin)
    on_line = y0[:, 0] == 0
    assert np.all(res.status[on_line] == 0) and np.all(res.label[on_line] == UNDECIDED)
    assert np.all(res.t[on_line] == 30.0) and np.all(res.y[on_line, 0] == 0.0)
    off = ~on_line
    assert np.all(res.status[off] == 1)
    np.testing.assert_array_equal(res.label[off], (y0[off, 0] > 0).astype(np.int8))
    assert np.all(res.t[off] < 30.0)
    # each decided point stopped where the predicate holds, close to its minimum
    assert np.all(np.abs(np.abs(res.y[off, 0]) - 1) < 0.1)
    assert res.counts() == {"decided": 380, "t_max": 20, "failed": 0,
                            "label_0": int(np.sum(y0[:, 0] < 0)), "label_1": int(np.sum(y0[:, 0] > 0))}


def test_a_short_horizon_gives_undecided_never_a_wrong_label(rng):
    y0 = rng.uniform(-2, 2, size=(300, 2))
    y0[:3] = [[1.0, 0.0], [-1.0, 0.0], [1.0, 0.01]]  # at (or next to) a minimum: decided at t = 0
    res = integrate_batch(double_well, y0, t_max=1e-3, decide=basin)
    decided = res.status == 1
    np.testing.assert_array_equal(res.label[decided], (y0[decided, 0] > 0).astype(np.int8))
    assert decided[:3].all() and np.all(res.t[:3] == 0.0) and np.all(res.steps[:3] == 0)
    assert np.all(res.status[~decided] == 0) and np.all(res.label[~decided] == UNDECIDED)
    assert np.all(res.t[~decided] == 1e-3)
    assert decided.sum() < 10  # only points that started at a minimum


def test_decide_is_called_every_m_accepted_steps(rng):
    y0 = rng.uniform(-2, 2, size=(100, 2))
    y0[0] = [0.0, 1.0]
    seen = []

    def decide(y, f):
        seen.append(len(y))
        return basin(y, f)

    res = integrate_batch(double_well, y0, t_max=30.0, decide=decide, decide_every=4)
    later = (res.status == 1) & (res.steps > 0)
    assert later.sum() > 90 and np.all(res.steps[later] % 4 == 0)
    assert seen[0] == 100  # the initial points
    assert res.status[0] == 0


# --------------------------------------------------------------------------- failures


def test_rows_where_the_rhs_is_nan_fail_alone(rng):
    def rhs(y):  # the sign of the second component is invariant; NaN below zero
        f = double_well(y)
        f[y[:, 1] < 0] = np.nan
        return f

    y0 = rng.uniform(-2, 2, size=(200, 2))
    res = integrate_batch(rhs, y0, t_max=3.0, decide=basin)
    bad = y0[:, 1] < 0
    assert np.all(res.status[bad] == -1) and np.all(res.label[bad] == UNDECIDED) and np.all(res.t[bad] == 0)
    good = integrate_batch(double_well, y0[~bad], t_max=3.0, decide=basin)
    for name in ("y", "t", "label", "status", "steps", "rejected"):
        np.testing.assert_array_equal(getattr(res, name)[~bad], getattr(good, name), err_msg=name)


def test_a_nan_region_met_during_the_flow_fails_the_point_at_its_boundary(rng):
    def rhs(y):  # x' = 1, v' = -v; undefined for x > 1
        f = np.column_stack([np.ones(len(y)), -y[:, 1]])
        f[y[:, 0] > 1.0] = np.nan
        return f

    x0 = np.concatenate([rng.uniform(-3, -1.1, 30), rng.uniform(-0.9, 0.9, 30)])
    y0 = np.column_stack([x0, rng.uniform(-1, 1, 60)])
    res = integrate_batch(rhs, y0, t_max=2.0, rtol=1e-9, atol=1e-12)
    safe = x0 < -1.0
    assert np.all(res.status[safe] == 0)
    np.testing.assert_allclose(res.y[safe], np.column_stack([x0[safe] + 2.0, y0[safe, 1] * math.exp(-2.0)]), atol=1e-9)
    assert np.all(res.status[~safe] == -1)
    np.testing.assert_allclose(res.t[~safe], 1.0 - x0[~safe], atol=1e-6)
    assert np.all(res.y[~safe, 0] <= 1.0) and np.all(np.isfinite(res.y))


def test_max_steps_exhaustion_fails_only_the_points_that_need_more(rng):
    y0 = rng.uniform(-2, 2, size=(50, 2))
    y0[0] = [1.0, 0.0]  # already at a minimum: decided before any step
    res = integrate_batch(double_well, y0, t_max=100.0, decide=basin, max_steps=5)
    assert res.status[0] == 1 and res.label[0] == 1
    assert np.all(res.status[1:] == -1) and np.all(res.steps[1:] == 5) and np.all(res.t[1:] < 100.0)
    assert np.all(res.label[1:] == UNDECIDED)
    assert res.counts()["failed"] == 49


def test_compaction_does_not_change_any_result(rng):
    y0 = rng.uniform(-2, 2, size=(600, 2))
    y0[:10, 0] = 0.0
    runs = [integrate_batch(double_well, y0, t_max=10.0, decide=basin, compact_below=c) for c in (0.0, 0.5, 0.9, 1.0)]
    for other in runs[1:]:
        assert_same(runs[0], other)
        assert other.n_rhs_rows == runs[0].n_rhs_rows and other.n_rhs_calls == runs[0].n_rhs_calls
    # only active points are evaluated: rows evaluated = initial call + initial step + 6 per step attempt
    r = runs[0]
    alive = r.status != 1
    alive |= r.steps > 0
    assert r.n_rhs_rows == len(y0) + alive.sum() + 6 * int((r.steps + r.rejected).sum())


# --------------------------------------------------------------------------- interface


def test_counts_are_json_ready_and_progress_reaches_m(rng):
    y0 = rng.uniform(-2, 2, size=(64, 2))
    y0[0, 0] = 0.0
    seen = []
    res = integrate_batch(double_well, y0, t_max=20.0, decide=basin, progress=seen.append)
    counts = res.counts()
    assert json.loads(json.dumps(counts)) == counts
    assert counts["decided"] + counts["t_max"] + counts["failed"] == 64
    assert counts["label_0"] + counts["label_1"] == counts["decided"] == 63
    assert seen == sorted(seen) and seen[-1] == 64 and all(type(s) is int for s in seen)
    assert res.label.dtype == np.int8 and res.status.dtype == np.int8 and res.y.dtype == np.float64


def test_an_empty_batch_is_fine():
    res = integrate_batch(double_well, np.zeros((0, 2)), t_max=1.0)
    assert res.y.shape == (0, 2) and res.n_rhs_calls == 0 and res.counts() == {"decided": 0, "t_max": 0, "failed": 0}


GOOD_Y0 = np.array([[0.5, 0.5]])


@pytest.mark.parametrize(
    "args, kwargs, word",
    [
        ((double_well, [0.5, 0.5]), {"t_max": 1.0}, "y0"),
        ((double_well, [[0.5, np.nan]]), {"t_max": 1.0}, "y0"),
        ((double_well, [[0.5, 1j]]), {"t_max": 1.0}, "y0"),
        ((double_well, [["a", "b"]]), {"t_max": 1.0}, "y0"),
        ((double_well, np.zeros((3, 0))), {"t_max": 1.0}, "y0"),
        ((double_well, GOOD_Y0), {"t_max": 0.0}, "t_max"),
        ((double_well, GOOD_Y0), {"t_max": -1.0}, "t_max"),
        ((double_well, GOOD_Y0), {"t_max": np.inf}, "t_max"),
        ((double_well, GOOD_Y0), {"t_max": np.nan}, "t_max"),
        ((double_well, GOOD_Y0), {"t_max": "1"}, "t_max"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "rtol": 0.0}, "rtol"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "atol": -1e-9}, "atol"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "decide_every": 0}, "decide_every"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "decide_every": 1.5}, "decide_every"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "max_steps": 0}, "max_steps"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "first_step": 0.0}, "first_step"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "max_step": -1.0}, "max_step"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "compact_below": 1.5}, "compact_below"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "decide": "x > 0"}, "decide"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "progress": 3}, "progress"),
        (("not callable", GOOD_Y0), {"t_max": 1.0}, "rhs"),
        ((lambda y: y[:, :1], GOOD_Y0), {"t_max": 1.0}, "rhs"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "decide": lambda y, f: y[:, 0] > 0}, "decide"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "decide": lambda y, f: np.zeros(len(y) + 1, int)}, "decide"),
        ((double_well, GOOD_Y0), {"t_max": 1.0, "decide": lambda y, f: np.full(len(y), -2)}, "decide"),
    ],
)
def test_invalid_input_raises_a_clear_error(args, kwargs, word):
    with pytest.raises(FlowlabInputError, match=word):
        integrate_batch(*args, **kwargs)
