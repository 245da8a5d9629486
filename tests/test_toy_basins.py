"""The engine's critical sets and basins on a system with no Markov chain: the tilted double well.

L(x, y) = (x^2 - 1)^2 + a x + y^2 / 2. The facts used here are derived in this file, independently
of the system's own code: the critical points (r, 0) for the roots r of 4x^3 - 4x + a (trigonometric
form of the cubic), their kinds from L'' = 12 r^2 - 4 and L_yy = 1; the flow decouples (y' = -y,
x' = -(4x^3 - 4x + a)), so a start reaches the left (global) well iff x0 < x_saddle, and for
theta0 ~ N(0, sigma^2 I) that has probability Phi(x_saddle / sigma).
"""

import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
from toy_systems import TiltedDoubleWell

from flowlab.engine.basins import GLOBAL, NONGLOBAL, UNDETERMINED, FlowSettings, basin_grid, gaussian_basin
from flowlab.engine.critical import find_numeric
from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.system import Reference

TILT = 0.3
BOX = {"x": (-2.0, 2.0), "y": (-1.5, 1.5)}
BAND = 0.02  # starts closer than this to the separatrix x = x_saddle may be undetermined
# Near the right well (curvature 12 x^2 - 4 ~ 7) the default rtol = 1e-6 lets the integrated point
# jitter by ~1e-7, so |grad L| stays above grad_tol = 1e-7 and nothing is decided: tighter tolerances.
SETTINGS = FlowSettings(rtol=1e-9, atol=1e-12)


def cubic_roots(a):
    """The three real roots of 4x^3 - 4x + a, ascending: t^3 + p t + q = 0 with p = -1, q = a/4 (Viete)."""
    p, q = -1.0, a / 4
    phi = math.acos(3 * q / (2 * p) * math.sqrt(-3 / p))
    roots = sorted(2 * math.sqrt(-p / 3) * math.cos(phi / 3 - 2 * math.pi * k / 3) for k in range(3))
    assert all(abs(4 * x**3 - 4 * x + a) < 1e-12 for x in roots)
    return roots


def loss(x, y=0.0, a=TILT):
    return (x * x - 1) ** 2 + a * x + y * y / 2


def exact_labels(x, xs):
    return np.where(x < xs, GLOBAL, NONGLOBAL)


def test_critical_points_are_the_three_roots_with_their_kinds():
    left, mid, right = cubic_roots(TILT)
    res = find_numeric(TiltedDoubleWell(TILT), [BOX["x"][0], BOX["y"][0]], [BOX["x"][1], BOX["y"][1]], starts=256)
    assert res.status == "ok" and not res.complete
    assert sorted((pc.kind, pc.dimension) for pc in res.pieces) == [("global_min", 0), ("local_min", 0), ("saddle", 0)]
    expect = {"global_min": left, "saddle": mid, "local_min": right}
    for pc in res.pieces:
        np.testing.assert_allclose(pc.points, [[expect[pc.kind], 0.0]], atol=1e-10)
        assert pc.loss == pytest.approx(loss(expect[pc.kind]), abs=1e-12)
    # the kinds follow from L'' = 12 x^2 - 4 (and L_yy = 1): a saddle in the middle, minima outside
    assert 12 * mid**2 - 4 < 0 < 12 * left**2 - 4 and 12 * right**2 - 4 > 0 and loss(left) < loss(right)


def test_without_an_optimal_loss_no_set_is_called_global():
    toy = TiltedDoubleWell(TILT)
    res = find_numeric(toy, [-2, -1.5], [2, 1.5], reference=Reference(optimal_loss=None), starts=128)
    assert sorted(pc.kind for pc in res.pieces) == ["local_min", "local_min", "saddle"]
    empty = find_numeric(toy, [1.5, -1], [2, 1], reference=Reference(optimal_loss=None), starts=16)
    assert empty.status == "none" and len(empty.roots) == 0 and not empty.pieces


@pytest.mark.parametrize("complete", [True, False])
def test_grid_labels_are_the_exact_basins(complete):
    """complete=True: label 1 proved from the levels; False: only once the optimal loss is reached."""
    toy = TiltedDoubleWell(TILT)
    xs = cubic_roots(TILT)[1]
    ref = toy.reference()
    if not complete:
        ref = Reference(ref.optimal_loss, ref.levels, ref.loss_tol, "levels not known to be all", complete=False)
    g = basin_grid(toy, BOX, 33, reference=ref, settings=SETTINGS)
    assert g.label.shape == (33, 33) and g.label.dtype == np.int8
    x = g.axes["x"][:, None] + 0 * g.axes["y"][None, :]
    exact = exact_labels(x, xs)
    decided = g.label != UNDETERMINED
    assert np.array_equal(g.label[decided], exact[decided])  # never wrong, the band included
    assert np.all(decided[np.abs(x - xs) > BAND])
    c = g.counts()
    assert c["total"] == 33 * 33 == c["global"] + c["nonglobal"] + c["undetermined"]
    assert 0.2 < c["global"] / c["total"] < 0.8
    d = g.as_dict()
    assert d["status"] == "ok" and d["seconds"] > 0 and d["optimal_loss"] == ref.optimal_loss
    assert d["labels"]["1"]["rule"].startswith("proved" if complete else "reached")
    assert d["system"] == "tilted_double_well" and d["reference"]["complete"] is complete


def test_grid_slice_at_fixed_y():
    toy = TiltedDoubleWell(TILT)
    xs = cubic_roots(TILT)[1]
    g = basin_grid(toy, {"x": BOX["x"]}, 40, fixed={"y": 0.7}, settings=SETTINGS)
    assert g.label.shape == (40, 1) and g.settings["fixed"] == {"y": 0.7}
    far = np.abs(g.axes["x"] - xs) > BAND
    assert np.array_equal(g.label[far, 0], exact_labels(g.axes["x"][far], xs))


def test_gaussian_estimate_covers_the_exact_probability():
    toy = TiltedDoubleWell(TILT)
    xs, sigma = cubic_roots(TILT)[1], 0.6
    exact = 0.5 * (1 + math.erf(xs / sigma / math.sqrt(2)))  # P(x0 < x_saddle), x0 ~ N(0, sigma^2)
    r = gaussian_basin(toy, sigma, 1500, seed=4, settings=SETTINGS)
    lo, hi = r.ci95
    assert lo <= exact <= hi and hi - lo < 0.06, (lo, exact, hi)
    d = r.as_dict()
    assert d["counts"]["total"] == 1500 == sum(d["counts"][k] for k in ("global", "nonglobal", "undetermined"))
    assert d["status"] == "ok" and d["prob_global"] == r.n_global / 1500 and d["seconds"] > 0


def test_results_pickle_round_trip():
    toy = TiltedDoubleWell(TILT)
    g = basin_grid(toy, BOX, 9, settings=SETTINGS)
    r = gaussian_basin(toy, 0.5, 50, seed=1, settings=SETTINGS)
    c = find_numeric(toy, [-2, -1.5], [2, 1.5], starts=64)
    g2, r2, c2 = (pickle.loads(pickle.dumps(v)) for v in (g, r, c))
    assert np.array_equal(g2.label, g.label) and g2.as_dict() == g.as_dict() and g2.reference == g.reference
    assert r2 == r and r2.as_dict() == r.as_dict()
    assert c2.as_dict() == c.as_dict()


def test_bad_references_and_boxes_are_refused():
    toy = TiltedDoubleWell(TILT)
    with pytest.raises(FlowlabInputError, match="cannot tell"):
        basin_grid(toy, BOX, 4, reference=Reference(0.0, unresolved="the losses cannot tell the sets apart"))
    with pytest.raises(FlowlabInputError, match="global minimum"):
        gaussian_basin(toy, 0.1, 4, reference=Reference(0.0, all_global="a convex loss"))
    with pytest.raises(FlowlabInputError, match="missing"):
        basin_grid(toy, {"x": (-1, 1)}, 4)
    with pytest.raises(FlowlabInputError, match="lo < hi"):
        basin_grid(toy, {"x": (1, -1), "y": (0, 1)}, 4)
    with pytest.raises(FlowlabInputError, match="box"):
        find_numeric(toy, [0, 0], [0, 0])


def test_nothing_markov_is_imported():
    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from toy_systems import TiltedDoubleWell\n"
        "from flowlab.engine.basins import FlowSettings, basin_grid, gaussian_basin\n"
        "from flowlab.engine.critical import find_numeric\n"
        "toy = TiltedDoubleWell()\n"
        "assert len(find_numeric(toy, [-2, -1], [2, 1], starts=32).pieces) == 3\n"
        "s = FlowSettings(rtol=1e-9, atol=1e-12)\n"
        "basin_grid(toy, {'x': (-2, 2), 'y': (-1, 1)}, 5, settings=s)\n"
        "gaussian_basin(toy, 0.5, 10, settings=s)\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('flowlab.systems', 'flowlab.symbolic', 'sympy')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/tests/", 1)[0])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
