"""The engine's flow on a system with no Markov chain: the tilted double well of tests/toy_systems.py.

Independent facts: the critical points are the real roots of 4x^3 - 4x + a (checked by substitution
and against the cubic's discriminant), the basins of the flow are the half-planes either side of the
saddle's x (dx/dt = -(4x^3 - 4x + a) does not depend on y, so x cannot cross a root), y(t) = y0 e^{-t}
exactly, and the loss of a gradient flow never increases.
"""

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from toy_systems import TiltedDoubleWell

from flowlab.engine.system import System
from flowlab.engine.trajectory import FlowResult, gradient_flow

TILT = 0.3


@pytest.fixture(scope="module")
def well():
    return TiltedDoubleWell(TILT)


def test_the_toy_is_a_system_with_exact_derivatives(well):
    assert isinstance(well, System)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-2, 2, size=(20, 2))
    h = 1e-6
    for x in pts:
        fd = [(well.loss(x + h * e) - well.loss(x - h * e)) / (2 * h) for e in np.eye(2)]
        assert np.allclose(well.gradient(x), fd, atol=1e-8)
        fdh = np.stack([(well.gradient(x + h * e) - well.gradient(x - h * e)) / (2 * h) for e in np.eye(2)])
        assert np.allclose(well.hessian(x), fdh, atol=1e-6)
    assert well.loss(pts).shape == (20,) and well.gradient(pts).shape == (20, 2) and well.hessian(pts).shape == (20, 2, 2)


def test_the_reference_comes_from_the_roots(well):
    left, mid, right = well.roots()
    for r in (left, mid, right):
        assert abs(4 * r**3 - 4 * r + TILT) < 1e-12
    # three real roots iff the discriminant of 4x^3 - 4x + a is positive: 16 (16 * 4 - 27 a^2) > 0
    assert 16 * 4 - 27 * TILT**2 > 0 and left < mid < right
    ref = well.reference()
    assert ref.optimal_loss == pytest.approx((left**2 - 1) ** 2 + TILT * left, abs=1e-15)
    assert ref.levels["right_well"] == pytest.approx((right**2 - 1) ** 2 + TILT * right, abs=1e-15)
    assert ref.optimal_loss < ref.levels["right_well"] < ref.levels["saddle"] and ref.complete


@pytest.mark.parametrize("x0,y0", [(-2.0, 1.0), (-0.5, -0.3), (0.0, 0.7), (0.07, 2.0)])
def test_left_of_the_saddle_the_flow_reaches_the_global_minimum(well, x0, y0):
    assert x0 < well.roots()[1]
    res = gradient_flow(well, [x0, y0])
    assert res.status == "converged" and res.reached == "global", res.message
    assert res.final["x"] == pytest.approx(well.roots()[0], abs=1e-7)
    assert res.final_loss == pytest.approx(well.reference().optimal_loss, abs=1e-12)


@pytest.mark.parametrize("x0,y0", [(0.08, 0.5), (0.5, -1.0), (2.0, 0.0), (1.5, 3.0)])
def test_right_of_the_saddle_the_flow_reaches_the_local_minimum(well, x0, y0):
    assert x0 > well.roots()[1]
    res = gradient_flow(well, [x0, y0])
    assert res.reached == "local", res.message
    assert res.final["x"] == pytest.approx(well.roots()[2], abs=1e-7)
    assert "right_well" in res.message and "positive definite" in res.message
    # y(t) = y0 exp(-t) exactly, whatever x does
    assert np.allclose(res.theta[:, 1], y0 * np.exp(-res.t), rtol=1e-7, atol=1e-12)


def test_the_saddle_is_undetermined_and_says_saddle(well):
    res = gradient_flow(well, well.critical_points()["saddle"])
    assert res.reached == "undetermined" and res.t.size == 1
    mid = well.roots()[1]
    assert "saddle-type" in res.message and f"eigenvalue {12 * mid**2 - 4:.3g}" in res.message  # d2L/dx2 < 0


def test_the_loss_decreases_and_nothing_is_conserved(well):
    res = gradient_flow(well, [1.7, -2.0])
    assert np.all(np.diff(res.loss) <= 1e-14)  # a gradient flow never increases the loss
    assert res.loss[0] - res.loss[-1] > 1.0
    assert res.invariants == {} and res.observables == {} and res.energy_drift is None
    assert res.invariant_drift() == {}


def test_tight_budget_and_time_limit_are_undetermined(well):
    res = gradient_flow(well, [-2.0, 1.0], max_steps=3)
    assert res.status == "budget" and res.reached == "undetermined"
    res = gradient_flow(well, [-2.0, 1.0], t_max=1e-3)
    assert res.status == "t_max" and res.reached == "undetermined"


def test_bad_start_points_are_refused(well):
    from flowlab import FlowlabInputError

    with pytest.raises(FlowlabInputError, match="needs 2 values"):
        gradient_flow(well, [0.0, 0.0, 0.0])
    with pytest.raises(FlowlabInputError, match="NaN"):
        gradient_flow(well, [np.nan, 0.0])
    with pytest.raises(FlowlabInputError, match="not finite at x=1e\\+200"):  # x^4 overflows: the loss is inf
        gradient_flow(well, [1e200, 0.0])


def test_the_result_is_json_ready_and_pickles(well):
    res = gradient_flow(well, [0.5, 0.5])
    d = res.as_dict()
    assert d["system"] == "tilted_double_well" and d["tilt"] == TILT and d["status"] == "converged"
    assert abs(d["reference"]["levels"]["right_well"] - d["loss"]) < 1e-12 and d["reached"] == "local"
    assert d["optimal_loss"] == well.reference().optimal_loss and d["initial"] == {"x": 0.5, "y": 0.5}
    back = pickle.loads(pickle.dumps(res))
    assert isinstance(back, FlowResult) and back.reference == res.reference and back.as_dict() == d
    assert np.array_equal(back.theta, res.theta)


def test_a_toy_flow_imports_nothing_markov():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from toy_systems import TiltedDoubleWell
        from flowlab.engine.trajectory import gradient_flow
        res = gradient_flow(TiltedDoubleWell(), [-0.5, 0.1])
        assert res.reached == "global", res.message
        bad = sorted(m for m in sys.modules if m.startswith(("flowlab.systems", "flowlab.symbolic", "sympy")))
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
