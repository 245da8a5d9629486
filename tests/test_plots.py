"""Figures: the pictures carry the right content (levels, labels, sets, colours), not just pixels."""

import dataclasses
import math
from collections import Counter

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

from flowlab import (
    FlowlabInputError,
    MarkovChain,
    basin_grid,
    critical_sets,
    get_model,
    gradient_flow,
)
from flowlab.plots import (
    COLORS,
    basin_map,
    critical_overlay,
    energy_landscape,
    flow_3d,
    loss_curve,
    trajectories,
)

P = Q = 0.1
BOX = {"e": (-3.0, 3.0), "w": (-3.0, 3.0)}
#: Independent references (MODELS.md section 3): separatrix level, saddle, optimal gap.
SEP = -(1 + math.log(2)) / 2
W_SADDLE = -1 / math.sqrt(2)


def d_star(p, q):
    return math.log((1 - p) * (1 - q) / (p * q))


def energy(e, w):
    return e * e - w * w - np.sign(w) * np.log(np.abs(w))


@pytest.fixture(autouse=True)
def _no_show_and_close(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("plots must never call plt.show()")

    monkeypatch.setattr(plt, "show", refuse)
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def chain():
    return MarkovChain(P, Q)


@pytest.fixture(scope="module")
def crit(chain):
    return critical_sets(get_model("ew"), chain, BOX)


@pytest.fixture(scope="module")
def grid(chain):
    return basin_grid(get_model("ew"), chain, BOX, 32)


def by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def critical_counts(ax):
    return Counter(a.get_gid() for a in ax.get_children() if (a.get_gid() or "").startswith("critical:"))


def legend_texts(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg is not None else []


def segments(line):
    """Consecutive vertex pairs of a NaN-separated polyline."""
    xy = np.asarray(line.get_xydata(), float)
    a, b = xy[:-1], xy[1:]
    ok = np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
    return a[ok], b[ok]


# --------------------------------------------------------------------- energy landscape
def test_energy_landscape_levels_separatrix_colorbar_and_sets(chain, crit):
    fig, ax = plt.subplots()
    assert energy_landscape(get_model("ew"), chain, crit=crit, ax=ax, resolution=60) is ax
    (cf,) = by_gid(ax, "energy")
    levels = np.asarray(cf.levels, float)
    assert np.all(np.isfinite(levels)) and np.all(np.diff(levels) > 0)
    assert levels[0] < SEP < levels[-1]
    # the separatrix: one contour set at exactly the saddle level
    (sep,) = by_gid(ax, "separatrix")
    assert len(sep.levels) == 1 and abs(sep.levels[0] - SEP) <= 1e-9
    verts = np.concatenate([p.vertices for p in sep.get_paths()])
    assert len(verts) > 20
    # it is the stable manifold of the saddle: for p + q < 1 the two branches below the saddle,
    # on the level E = -(1 + log 2)/2 (up to the contouring of a 60-point grid)
    assert np.all(verts[:, 1] <= W_SADDLE + 1e-9)
    assert np.any(verts[:, 0] < -1) and np.any(verts[:, 0] > 1)
    away = np.hypot(verts[:, 0], verts[:, 1] - W_SADDLE) > 0.3
    assert np.max(np.abs(energy(verts[away, 0], verts[away, 1]) - SEP)) < 0.05
    # colour bar labelled with E
    assert cf.colorbar is not None and "E" in cf.colorbar.ax.get_ylabel()
    # one artist per critical set, of the set's kind
    assert critical_counts(ax) == Counter(f"critical:{s.kind}" for s in crit.sets)
    assert by_gid(ax, "field")
    assert ax.get_xlabel() == "$e$" and ax.get_ylabel() == "$w$"
    assert ax.get_aspect() == 1.0
    assert "p+q<1" in ax.get_title()
    texts = legend_texts(ax)
    assert "separatrix" in texts and "global minima (bigram)" in texts and len(texts) == len(set(texts))
    # legend proxies lapse with their artists
    ax.cla()
    critical_overlay(crit, ax)
    assert "separatrix" not in legend_texts(ax)


def test_energy_landscape_quiver_and_p_plus_q_above_one():
    chain = MarkovChain(0.9, 0.9)
    crit = critical_sets(get_model("ew"), chain, BOX, method="symbolic")
    fig, ax = plt.subplots()
    assert energy_landscape(get_model("ew"), chain, crit=crit, ax=ax, resolution=40, field="quiver") is ax
    (sep,) = by_gid(ax, "separatrix")
    verts = np.concatenate([p.vertices for p in sep.get_paths()])
    # p + q > 1: the separatrix runs between the saddle and w = 0 (it bounds the unigram basin)
    assert np.all((verts[:, 1] >= W_SADDLE - 1e-9) & (verts[:, 1] < 0))
    assert len(by_gid(ax, "field")) == 1


def test_energy_landscape_of_a_model_without_energy_shows_the_loss(chain):
    import sympy as sp

    from flowlab.models import TOKEN, Model, param_symbol

    e, w = param_symbol("e"), param_symbol("w")
    plain = Model(name="ew_no_invariant", params=("e", "w"), logit=e**2 * (1 + 2 * w * sp.Abs(w)) * TOKEN - e**2 / 2)
    crit = critical_sets(plain, chain, BOX, method="symbolic")
    fig, ax = plt.subplots()
    assert energy_landscape(plain, chain, crit=crit, ax=ax, resolution=30) is ax
    (cf,) = by_gid(ax, "energy")
    assert cf.colorbar.ax.get_ylabel() == "$L$ [nats]"
    levels = np.asarray(cf.levels, float)
    assert np.all(np.diff(levels) > 0) and levels[0] >= chain.entropy_rate - 1e-3
    assert not by_gid(ax, "separatrix")
    assert critical_counts(ax) == Counter(f"critical:{s.kind}" for s in crit.sets)


def test_energy_landscape_needs_a_plane(chain):
    with pytest.raises(FlowlabInputError, match="2-parameter"):
        energy_landscape(get_model("ewb"), chain, resolution=20)


# ------------------------------------------------------------------------------ basin map
def test_basin_map_is_drawn_from_the_labels(grid, crit):
    fig, ax = plt.subplots()
    assert basin_map(grid, crit=crit, ax=ax) is ax
    (im,) = by_gid(ax, "basins")
    shown = np.asarray(im.get_array())
    assert shown.shape == grid.label.T.shape and np.array_equal(shown, grid.label.T)
    # label value -> colour of the visual language
    for value, key in ((1, "global"), (0, "local"), (-1, "undetermined")):
        assert to_hex(im.cmap(im.norm(value))) == to_hex(COLORS[key])
    # pixel centres are the grid points: first parameter along x, origin at the bottom
    e, w = grid.axes["e"], grid.axes["w"]
    x0, x1, y0, y1 = im.get_extent()
    assert im.origin == "lower"
    assert x0 + (x1 - x0) / (2 * len(e)) == pytest.approx(e[0]) and y1 - (y1 - y0) / (2 * len(w)) == pytest.approx(w[-1])
    texts = legend_texts(ax)
    assert any("I^*" in t for t in texts) and any(r"I_{\min}" in t for t in texts)
    assert ("undetermined" in texts) == bool(np.any(grid.label == -1))
    (sep,) = by_gid(ax, "separatrix")
    assert abs(sep.levels[0] - SEP) <= 1e-9
    assert critical_counts(ax) == Counter(f"critical:{s.kind}" for s in crit.sets)
    assert ax.get_xlabel() == "$e$" and ax.get_ylabel() == "$w$" and ax.get_aspect() == 1.0


def test_basin_map_follows_a_changed_label(grid, crit):
    label = grid.label.copy()
    i, j = 3, 20  # (e index, w index)
    label[i, j] = 1 - label[i, j] if label[i, j] >= 0 else 1
    label[5, 7] = -1
    changed = dataclasses.replace(grid, label=label)
    fig, (a1, a2) = plt.subplots(1, 2)
    basin_map(grid, crit=crit, ax=a1, separatrix=False)
    basin_map(changed, crit=crit, ax=a2, separatrix=False)
    before = np.asarray(by_gid(a1, "basins")[0].get_array())
    after = np.asarray(by_gid(a2, "basins")[0].get_array())
    np.testing.assert_array_equal(np.argwhere(before != after), np.argwhere((label != grid.label).T))
    assert after[j, i] == label[i, j] and after[7, 5] == -1
    assert "undetermined" in legend_texts(a2)
    assert not by_gid(a2, "separatrix")


def test_basin_map_computes_the_critical_sets_when_not_given(grid):
    ax = basin_map(grid)
    kinds = Counter(critical_counts(ax))
    assert kinds["critical:global_min"] >= 1 and kinds["critical:saddle"] == 1


def test_basin_map_rejects_a_3d_grid(grid):
    cube = dataclasses.replace(grid, params=("e", "w", "b"), label=np.ones((4, 4, 4), np.int8),
                               axes={k: np.linspace(-1, 1, 4) for k in "ewb"})
    with pytest.raises(FlowlabInputError, match="2-D"):
        basin_map(cube)


# ------------------------------------------------------------------------ critical overlay
def test_critical_overlay_lines_lie_on_the_sets_and_branches_stay_apart(chain, crit):
    fig, ax = plt.subplots()
    assert critical_overlay(crit, ax) is ax
    (glob,) = by_gid(ax, "critical:global_min")
    xy = glob.get_xydata()
    xy = xy[np.all(np.isfinite(xy), axis=1)]
    gset = next(s for s in crit.sets if s.kind == "global_min")
    assert len(xy) == len(np.unique(gset.points, axis=0))  # every sample is a vertex
    e, w = xy[:, 0], xy[:, 1]
    np.testing.assert_allclose(e**2 * (1 + 2 * w * np.abs(w)), d_star(P, Q), atol=1e-6)
    a, b = segments(glob)
    assert len(a) >= len(xy) - 2
    assert np.all(np.sign(a[:, 0]) == np.sign(b[:, 0])), "a segment joins the branches e < 0 and e > 0"
    # segments are short: neighbours along the curve, not chords across the plane
    assert np.max(np.hypot(*(b - a).T)) < 0.5
    (lmin,) = by_gid(ax, "critical:local_min")
    lx = lmin.get_xydata()
    lx = lx[np.all(np.isfinite(lx), axis=1)]
    assert np.all(lx[:, 0] == 0) and np.all(lx[:, 1] < W_SADDLE)
    assert lmin.get_color() == COLORS["local"] and glob.get_color() == COLORS["global"]
    assert by_gid(ax, "critical:local_max")[0].get_linestyle() == "--"
    (saddle,) = by_gid(ax, "critical:saddle")
    assert saddle.get_marker() == "X"
    np.testing.assert_allclose(saddle.get_xydata(), [[0.0, W_SADDLE]], atol=1e-12)
    # drawing twice adds artists but no duplicate legend text
    critical_overlay(crit, ax)
    texts = legend_texts(ax)
    assert len(texts) == len(set(texts))
    assert {"global minima (bigram)", "local minima (unigram)", "local maxima (unigram)", "saddle"} <= set(texts)


@pytest.mark.parametrize("pq", [0.45, 0.49])
def test_critical_overlay_does_not_bridge_close_branches(pq):
    """Near p + q = 1 the two branches come closer than the sample spacing at the box edge."""
    chain = MarkovChain(pq, pq)
    crit = critical_sets(get_model("ew"), chain, BOX, method="symbolic")
    ax = critical_overlay(crit, None)
    (glob,) = by_gid(ax, "critical:global_min")
    a, b = segments(glob)
    assert len(a) > 10
    assert np.all(np.sign(a[:, 0]) == np.sign(b[:, 0]))


# ---------------------------------------------------------------------------- trajectories
STARTS = [(1.0, -2.0), (1.5, -0.5), (0.3, 0.3)]


def test_trajectories_one_path_each_coloured_by_verdict(chain, crit):
    results = [gradient_flow(get_model("ew"), chain, s) for s in STARTS]
    assert [r.reached for r in results] == ["local", "global", "global"]
    fig, ax = plt.subplots()
    assert trajectories(results, ax=ax, crit=crit) is ax
    paths = by_gid(ax, "trajectory")
    assert len(paths) == len(results)
    for line, r in zip(paths, results):
        assert to_hex(line.get_color()) == to_hex(COLORS[r.reached])
        np.testing.assert_array_equal(line.get_xydata(), r.theta[:, :2])
    assert len(by_gid(ax, "trajectory:start")) == len(by_gid(ax, "trajectory:end")) == len(results)
    assert critical_counts(ax) == Counter(f"critical:{s.kind}" for s in crit.sets)
    assert ax.get_xlabel() == "$e$" and ax.get_aspect() == 1.0


def test_trajectories_over_the_energy_landscape(chain, crit):
    results = [gradient_flow(get_model("ew"), chain, s) for s in STARTS[:2]]
    fig, ax = plt.subplots()
    assert trajectories(results, ax=ax, background="energy", crit=crit, extent=BOX) is ax
    assert len(by_gid(ax, "energy")) == 1 and len(by_gid(ax, "separatrix")) == 1
    assert len(by_gid(ax, "trajectory")) == 2
    assert ax.get_xlim() == BOX["e"] and ax.get_ylim() == BOX["w"]
    with pytest.raises(FlowlabInputError):
        trajectories(results, background="loss")


# --------------------------------------------------------------------------------- 3-D flow
def test_flow_3d_paths_colours_and_sets(chain):
    model = get_model("ewb")
    crit = critical_sets(model, chain, method="symbolic")
    starts = np.array([[1.0, -2.0, 0.5], [1.5, -0.5, 0.0], [0.3, 0.3, -0.5]])
    t_max = 200.0
    expected = [gradient_flow(model, chain, s, t_max=t_max) for s in starts]
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d")
    assert flow_3d(model, chain, starts, crit=crit, ax=ax, t_max=t_max) is ax
    paths = by_gid(ax, "trajectory")
    assert len(paths) == len(starts)
    for line, r in zip(paths, expected):
        assert to_hex(line.get_color()) == to_hex(COLORS[r.reached])
        x, y, z = line.get_data_3d()
        np.testing.assert_allclose(np.column_stack([x, y, z])[0], r.theta[0])
        np.testing.assert_allclose(np.column_stack([x, y, z])[-1], r.theta[-1], atol=1e-9)
    assert {r.reached for r in expected} >= {"global", "local"}
    assert critical_counts(ax) == Counter(f"critical:{s.kind}" for s in crit.sets)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()) == ("$e$", "$w$", "$b$")
    assert ax.get_legend() is not None


def test_flow_3d_makes_its_own_3d_axes_and_refuses_2d_ones(chain):
    model = get_model("ewb")
    crit = critical_sets(model, chain, method="symbolic")
    ax = flow_3d(model, chain, [[0.3, 0.3, 0.0]], crit=crit, t_max=50.0)
    assert ax.name == "3d" and len(by_gid(ax, "trajectory")) == 1
    assert ax.figure.legends  # beside the cube, placed by the layout engine
    fig, flat = plt.subplots()
    with pytest.raises(FlowlabInputError, match="3-D axes"):
        flow_3d(model, chain, [[0.3, 0.3, 0.0]], crit=crit, ax=flat, t_max=10.0)
    with pytest.raises(FlowlabInputError, match="3-parameter"):
        flow_3d(get_model("ew"), chain, [[0.3, 0.3]])


def test_loss_curve_keeps_its_behaviour(chain):
    res = gradient_flow(get_model("ew"), chain, [1.5, -0.5])
    fig, ax = plt.subplots()
    assert loss_curve(res, ax) is ax
    assert to_hex(ax.get_lines()[0].get_color()) == to_hex(COLORS["global"])
    assert ax.get_xscale() == "symlog"


def test_basin_slice_overlays_the_sets_of_the_slice():
    """A slice a = a0 of ewa: the saddle drawn is where 1 + 4w|w| clip(1/2 + c, 0, 1) = 0 (MODELS.md section 4)."""
    p, q, a0 = 0.5, 0.8, 0.8
    grid = basin_grid(get_model("ewa"), MarkovChain(p, q), {"e": (-2, 2), "w": (-2, 2)}, 16, fixed={"a": a0},
                      cross_check=False)
    ax = basin_map(grid)
    saddles = [a for a in ax.get_children() if (a.get_gid() or "") == "critical:saddle"]
    assert saddles
    clip = min(max(0.5 + a0 * (p / (p + q) - 0.5), 0.0), 1.0)
    w_s = -math.sqrt(1 / (4 * clip))
    xy = np.asarray(saddles[0].get_offsets() if hasattr(saddles[0], "get_offsets") else saddles[0].get_xydata())
    assert np.allclose(xy[0], [0.0, w_s], atol=1e-6)
    plt.close(ax.figure)


def _overlaid_points(ax, free, fixed, params):
    """Every vertex/marker of the critical-set artists of a 2-D axes, lifted to the full parameter order."""
    rows = []
    for a in ax.get_children():
        if not (a.get_gid() or "").startswith("critical:"):
            continue
        xy = np.asarray(a.get_offsets() if hasattr(a, "get_offsets") else a.get_xydata(), float)
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        full = np.empty((len(xy), len(params)))
        for j, n in enumerate(free):
            full[:, params.index(n)] = xy[:, j]
        for n, v in fixed.items():
            full[:, params.index(n)] = v
        rows.append((a.get_gid(), full))
    return rows


def test_basin_slice_at_fixed_e_draws_only_critical_points_of_the_full_model():
    """Issue 11 item 6: at e = 1 the restriction of ewa has 'critical' lines where the full gradient is 0.25.

    Every overlaid point must be a critical point of the full model (finite differences of the loss
    written here from MODELS.md section 4), and the global-minimum curve {D = D*} must be drawn.
    """
    p, q, e0 = 0.5, 0.8, 1.0
    pi1 = p / (p + q)
    grid = basin_grid(get_model("ewa"), MarkovChain(p, q), {"w": (-3, 3), "a": (-3, 3)}, 6, fixed={"e": e0},
                      cross_check=False)
    ax = basin_map(grid)
    rows = _overlaid_points(ax, ("w", "a"), {"e": e0}, ("e", "w", "a"))
    assert rows, "the global-minimum curve crosses the slice and must be drawn"

    def gap(t):
        e, w, a = t[..., 0], t[..., 1], t[..., 2]
        return e**2 * (1 + 4 * w * np.abs(w) * np.clip(0.5 + a * (pi1 - 0.5), 0, 1))

    def profiled_loss(t):  # ell(D): min over b of the expected cross-entropy (MODELS.md section 2)
        from scipy.optimize import minimize_scalar

        out = []
        for d in np.atleast_1d(gap(t)):
            def ce(b, d=d):
                s0, s1 = 1 / (1 + np.exp(-b)), 1 / (1 + np.exp(-(b + d)))
                return -(1 - pi1) * (p * np.log(s0) + (1 - p) * np.log(1 - s0)) \
                    - pi1 * ((1 - q) * np.log(s1) + q * np.log(1 - s1))
            out.append(minimize_scalar(ce, bounds=(-30, 30), method="bounded", options={"xatol": 1e-12}).fun)
        return np.array(out)

    kinds = set()
    for gid, pts in rows:
        kinds.add(gid)
        for x in pts[:: max(1, len(pts) // 8)]:
            h = 1e-4
            g = [(profiled_loss(x + h * u) - profiled_loss(x - h * u))[0] / (2 * h) for u in np.eye(3)]
            assert np.max(np.abs(g)) < 1e-5, (gid, x, g)
    assert kinds == {"critical:global_min"}  # e = 1 meets neither the unigram plane e = 0 nor its saddle curve
    (glob,) = [pts for gid, pts in rows if gid == "critical:global_min"]
    np.testing.assert_allclose(gap(glob), d_star(p, q), atol=1e-6)


def test_basin_slice_keeps_the_users_number():
    """The fixed value enters exactly (its float64 value), never rounded to a 'simple' number."""
    import sympy as sp

    from flowlab.models import param_symbol
    from flowlab.plots import _sliced_model

    full = get_model("ewa")
    a = param_symbol("a")
    for v in (0.1, 0.7071067811865476, 1 / 3):
        logit = _sliced_model(full, {"a": v}).logit
        assert sp.simplify(logit - full.logit.subs(a, sp.Rational(v))) == 0
        assert sp.Rational(v) == sp.Rational(*float(v).as_integer_ratio())
        assert sp.simplify(logit - full.logit.subs(a, sp.nsimplify(v))) != 0
