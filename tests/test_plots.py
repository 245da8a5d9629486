"""Figures: the pictures carry the right content (levels, labels, sets, colours), not just pixels."""

import dataclasses
import json
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
from flowlab.plots.markov import (
    COLORS,
    basin_map,
    critical_overlay,
    energy_landscape,
    flow_3d,
    loss_curve,
    trajectories,
)
from flowlab.systems.markov.landscape import basin_landscape, flows_3d, landscape, overlay

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
    assert energy_landscape(landscape(get_model("ew"), chain, crit=crit, resolution=60), ax=ax) is ax
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
    critical_overlay(overlay(crit), ax)
    assert "separatrix" not in legend_texts(ax)


def test_energy_landscape_quiver_and_p_plus_q_above_one():
    chain = MarkovChain(0.9, 0.9)
    crit = critical_sets(get_model("ew"), chain, BOX, method="symbolic")
    fig, ax = plt.subplots()
    assert energy_landscape(landscape(get_model("ew"), chain, crit=crit, resolution=40, field="quiver"), ax=ax) is ax
    (sep,) = by_gid(ax, "separatrix")
    verts = np.concatenate([p.vertices for p in sep.get_paths()])
    # p + q > 1: the separatrix runs between the saddle and w = 0 (it bounds the unigram basin)
    assert np.all((verts[:, 1] >= W_SADDLE - 1e-9) & (verts[:, 1] < 0))
    assert len(by_gid(ax, "field")) == 1


def test_energy_landscape_of_a_model_without_energy_shows_the_loss(chain):
    import sympy as sp

    from flowlab.systems.markov.models import TOKEN, Model, param_symbol

    e, w = param_symbol("e"), param_symbol("w")
    plain = Model(name="ew_no_invariant", params=("e", "w"), logit=e**2 * (1 + 2 * w * sp.Abs(w)) * TOKEN - e**2 / 2)
    crit = critical_sets(plain, chain, BOX, method="symbolic")
    fig, ax = plt.subplots()
    assert energy_landscape(landscape(plain, chain, crit=crit, resolution=30), ax=ax) is ax
    (cf,) = by_gid(ax, "energy")
    assert cf.colorbar.ax.get_ylabel() == "$L$ [nats]"
    levels = np.asarray(cf.levels, float)
    assert np.all(np.diff(levels) > 0) and levels[0] >= chain.entropy_rate - 1e-3
    assert not by_gid(ax, "separatrix")
    assert critical_counts(ax) == Counter(f"critical:{s.kind}" for s in crit.sets)


def test_energy_landscape_needs_a_plane(chain):
    with pytest.raises(FlowlabInputError, match="2-parameter"):
        landscape(get_model("ewb"), chain, resolution=20)


# ------------------------------------------------------------------------------ basin map
def _band_at(cs, points):
    """The label whose filled band of a basin map's contour set contains each point (NaN: none)."""
    out = np.full(len(points), np.nan)
    centres = 0.5 * (np.asarray(cs.levels[:-1]) + np.asarray(cs.levels[1:]))  # -1, 0, 1
    from matplotlib.path import Path

    for value, path in zip(centres, cs.get_paths()):
        if len(path.vertices):  # even-odd rule over the path's rings: a hole's points are not in the band
            rings = [Path(r) for r in path.to_polygons()]
            inside = np.sum([r.contains_points(points) for r in rings], axis=0) % 2 == 1
            out[inside] = value
    return out


def _interior(label):
    """Grid points whose 8 neighbours all have the same label (away from a boundary)."""
    same = np.ones(label.shape, bool)
    same[0, :] = same[-1, :] = same[:, 0] = same[:, -1] = False
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            same[1:-1, 1:-1] &= label[1 + di:label.shape[0] - 1 + di, 1 + dj:label.shape[1] - 1 + dj] == label[1:-1, 1:-1]
    return same


def test_basin_map_is_drawn_from_the_labels(grid, crit):
    fig, ax = plt.subplots()
    assert basin_map(grid, landscape=basin_landscape(grid, crit), ax=ax) is ax
    (cs,) = by_gid(ax, "basins")
    np.testing.assert_array_equal(cs.levels, [-1.5, -0.5, 0.5, 1.5])
    # band value -> colour of the visual language
    for face, key in zip(cs.get_facecolors(), ("undetermined", "local", "global")):
        assert to_hex(face[:3]) == to_hex(COLORS[key])
    # every grid point away from a label change lies in the band of its own label (first parameter along x)
    e, w = grid.axes["e"], grid.axes["w"]
    E, W = np.meshgrid(e, w, indexing="ij")
    inner = _interior(grid.label)
    pts = np.column_stack([E[inner], W[inner]])
    np.testing.assert_array_equal(_band_at(cs, pts), grid.label[inner])
    assert ax.get_xlim() == (e[0], e[-1]) and ax.get_ylim() == (w[0], w[-1])
    texts = legend_texts(ax)
    assert any("I^*" in t for t in texts) and any(r"I_{\min}" in t for t in texts)
    assert ("undetermined" in texts) == bool(np.any(grid.label == -1))
    (sep,) = by_gid(ax, "separatrix")
    assert abs(sep.levels[0] - SEP) <= 1e-9
    assert not by_gid(ax, "basins:boundary")  # the full plane has the exact separatrix instead
    assert critical_counts(ax) == Counter(f"critical:{s.kind}" for s in crit.sets)
    assert ax.get_xlabel() == "$e$" and ax.get_ylabel() == "$w$" and ax.get_aspect() == 1.0


def test_basin_map_follows_a_changed_label(grid, crit):
    label = grid.label.copy()
    i, j = 10, 20  # (e index, w index), inside a region of one label
    assert _interior(grid.label)[i, j]
    label[i, j] = 1 - label[i, j]
    label[5, 7] = -1
    changed = dataclasses.replace(grid, label=label)
    fig, (a1, a2) = plt.subplots(1, 2)
    plane = basin_landscape(grid, crit)
    basin_map(grid, landscape=plane, ax=a1, separatrix=False)
    basin_map(changed, landscape=plane, ax=a2, separatrix=False)
    e, w = grid.axes["e"], grid.axes["w"]
    at = np.array([[e[i], w[j]], [e[5], w[7]]])
    np.testing.assert_array_equal(_band_at(by_gid(a1, "basins")[0], at), [grid.label[i, j], grid.label[5, 7]])
    np.testing.assert_array_equal(_band_at(by_gid(a2, "basins")[0], at), [label[i, j], -1])
    assert "undetermined" in legend_texts(a2)
    assert not by_gid(a2, "separatrix")


def test_basin_landscape_computes_the_critical_sets_when_not_given(grid):
    ax = basin_map(grid, landscape=basin_landscape(grid))
    kinds = Counter(critical_counts(ax))
    assert kinds["critical:global_min"] >= 1 and kinds["critical:saddle"] == 1


def test_basin_map_rejects_a_3d_grid(grid):
    cube = dataclasses.replace(grid, params=("e", "w", "b"), label=np.ones((4, 4, 4), np.int8),
                               axes={k: np.linspace(-1, 1, 4) for k in "ewb"})
    with pytest.raises(FlowlabInputError, match="2-D"):
        basin_map(cube)
    with pytest.raises(FlowlabInputError, match="2-D"):
        basin_landscape(cube)


# ------------------------------------------------------------------------ critical overlay
def test_critical_overlay_lines_lie_on_the_sets_and_branches_stay_apart(chain, crit):
    fig, ax = plt.subplots()
    assert critical_overlay(overlay(crit), ax) is ax
    (glob,) = by_gid(ax, "critical:global_min")
    xy = glob.get_xydata()
    xy = xy[np.all(np.isfinite(xy), axis=1)]
    gset = next(s for s in crit.sets if s.kind == "global_min")
    samples = np.unique(gset.points, axis=0)
    assert {tuple(r) for r in samples} <= {tuple(r) for r in xy}  # every sample is a vertex
    assert len(samples) <= len(xy) <= len(samples) + 4  # and at most the ends carried to the box edge
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
    critical_overlay(overlay(crit), ax)
    texts = legend_texts(ax)
    assert len(texts) == len(set(texts))
    assert {"global minima (bigram)", "local minima (unigram)", "local maxima (unigram)", "saddle"} <= set(texts)


@pytest.mark.parametrize("pq", [0.45, 0.49])
def test_critical_overlay_does_not_bridge_close_branches(pq):
    """Near p + q = 1 the two branches come closer than the sample spacing at the box edge."""
    chain = MarkovChain(pq, pq)
    crit = critical_sets(get_model("ew"), chain, BOX, method="symbolic")
    ax = critical_overlay(overlay(crit), None)
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
    assert trajectories(results, ax=ax, overlay=overlay(crit)) is ax
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
    plane = landscape(get_model("ew"), chain, crit=crit, extent=BOX)
    assert trajectories(results, ax=ax, background=plane) is ax
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
    assert flow_3d(flows_3d(model, chain, starts, crit=crit, t_max=t_max), ax=ax) is ax
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
    ax = flow_3d(flows_3d(model, chain, [[0.3, 0.3, 0.0]], crit=crit, t_max=50.0))
    assert ax.name == "3d" and len(by_gid(ax, "trajectory")) == 1
    assert ax.figure.legends  # beside the cube, placed by the layout engine
    fig, flat = plt.subplots()
    with pytest.raises(FlowlabInputError, match="3-D axes"):
        flow_3d(flows_3d(model, chain, [[0.3, 0.3, 0.0]], crit=crit, t_max=10.0), ax=flat)
    with pytest.raises(FlowlabInputError, match="3-parameter"):
        flows_3d(get_model("ew"), chain, [[0.3, 0.3]])


def test_loss_curve_keeps_its_behaviour(chain):
    res = gradient_flow(get_model("ew"), chain, [1.5, -0.5])
    fig, ax = plt.subplots()
    assert loss_curve(res, ax) is ax
    assert to_hex(ax.get_lines()[0].get_color()) == to_hex(COLORS["global"])
    assert ax.get_xscale() == "symlog"


SLICE_PQ_A = (0.5, 0.8, 0.8)


@pytest.fixture(scope="module")
def ewa_slice():
    """A basin grid of ewa on the slice a = 0.8 at p = 0.5, q = 0.8, and its Slice."""
    p, q, a0 = SLICE_PQ_A
    grid = basin_grid(get_model("ewa"), MarkovChain(p, q), {"e": (-2, 2), "w": (-2, 2)}, 16, fixed={"a": a0},
                      cross_check=False)
    return grid, basin_landscape(grid)


def test_basin_slice_overlays_the_sets_of_the_slice(ewa_slice):
    """A slice a = a0 of ewa: the saddle drawn is where 1 + 4w|w| clip(1/2 + c, 0, 1) = 0 (MODELS.md section 4)."""
    p, q, a0 = SLICE_PQ_A
    grid, sl = ewa_slice
    ax = basin_map(grid, landscape=sl)
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
    ax = basin_map(grid, landscape=basin_landscape(grid))
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

    from flowlab.systems.markov.landscape import sliced_model
    from flowlab.systems.markov.models import param_symbol

    full = get_model("ewa")
    a = param_symbol("a")
    for v in (0.1, 0.7071067811865476, 1 / 3):
        logit = sliced_model(full, {"a": v}).logit
        assert sp.simplify(logit - full.logit.subs(a, sp.Rational(v))) == 0
        assert sp.Rational(v) == sp.Rational(*float(v).as_integer_ratio())
        assert sp.simplify(logit - full.logit.subs(a, sp.nsimplify(v))) != 0


# ----------------------------------------------------------- plots take results (issue 12)
def _imports_of(path):
    """Every module a file imports (module level and inside functions), resolved to absolute names."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to the plots package
                base = ".".join(["flowlab", "plots"][: 3 - node.level] + ([base] if base else []))
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out


def test_the_plots_package_imports_nothing_of_a_system():
    """flowlab.plots draws results: no import of flowlab.systems/symbolic/engine (its error type excepted)."""
    from pathlib import Path

    import flowlab.plots

    files = sorted(Path(flowlab.plots.__file__).parent.glob("*.py"))
    assert {f.name for f in files} >= {"markov.py", "cooccurrence.py", "ntp_order.py"}
    for f in files:
        names = _imports_of(f)
        bad = [n for n in names if n.split(".")[:2] in (["flowlab", "systems"], ["flowlab", "symbolic"])
               or (n.startswith("flowlab.engine") and not n.startswith("flowlab.engine.errors"))]
        assert not bad, (f.name, bad)
    # and the contract in setup.cfg says the same
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(Path(flowlab.plots.__file__).parents[2] / "setup.cfg")
    contract = cfg["importlinter:contract:plots-take-results"]
    assert contract["type"] == "forbidden" and contract["source_modules"].split() == ["flowlab.plots"]
    assert set(contract["forbidden_modules"].split()) == {"flowlab.systems", "flowlab.symbolic", "flowlab.engine"}


def _assert_same_sets(drawn, crit):
    assert [(s.kind, s.dimension, s.loss) for s in drawn.sets] == [(s.kind, s.dimension, s.loss) for s in crit.sets]
    for d, s in zip(drawn.sets, crit.sets):
        np.testing.assert_array_equal(d.points, np.asarray(s.points, float))


def test_a_landscape_carries_what_the_figure_draws_and_pickles(chain):
    import pickle

    model = get_model("ew")
    land = landscape(model, chain, extent=BOX, resolution=41)
    # the critical sets are those of the same chain, each 1-D set's polylines through its samples
    _assert_same_sets(land.overlay, critical_sets(model, chain, BOX))
    for s in land.overlay.sets:
        if s.dimension == 1:  # every sample, plus (global minima) the ends carried on to the box edge
            drawn_pts = set(map(tuple, np.concatenate(s.lines)))
            samples = set(map(tuple, np.unique(s.points, axis=0)))
            assert samples <= drawn_pts
            extra = np.array(sorted(drawn_pts - samples)).reshape(-1, 2)
            assert len(extra) <= (4 if s.kind == "global_min" else 0)
            assert np.all(np.isclose(np.abs(extra), 3.0, atol=1e-12).any(axis=1))
    glob = next(s for s in land.overlay.sets if s.kind == "global_min")
    assert not glob.unigram and next(s for s in land.overlay.sets if s.kind == "local_min").unigram
    # the field is the closed-form energy (undefined on w = 0, whose grid line is exactly 0)
    X, Y = np.meshgrid(land.x, land.y)
    assert land.quantity == "E" and land.values.shape == (41, 41) and np.any(land.y == 0.0)
    with np.errstate(all="ignore"):
        want = energy(X, Y)
    ok = Y != 0
    np.testing.assert_allclose(land.values[ok], want[ok], rtol=1e-12, atol=1e-12)
    assert np.all(np.isnan(land.values[~ok]))
    # the separatrix: one level at E(saddle), branches starting at the saddle and lying below it
    (sep,) = land.separatrix
    assert abs(sep.level - SEP) <= 1e-9 and len(sep.branches) == 2
    np.testing.assert_allclose(sep.saddles, [[0.0, W_SADDLE]], atol=1e-12)
    for b in sep.branches:
        np.testing.assert_allclose(b[0], [0.0, W_SADDLE], atol=1e-12)
        assert np.all(b[:, 1] <= W_SADDLE + 1e-9)
    # the direction field is -grad L / |grad L| (central differences of the loss, MODELS.md section 2)
    d = land.direction
    assert d.kind == "stream" and d.u.shape == (60, 60)
    loss = _ew_loss(P, Q)
    i, j, h = 7, 41, 1e-5
    e, w = d.x[i], d.y[j]
    g = -np.array([loss(e + h, w) - loss(e - h, w), loss(e, w + h) - loss(e, w - h)]) / (2 * h)
    np.testing.assert_allclose([d.u[j, i], d.v[j, i]], g / np.hypot(*g), atol=1e-6)
    back = pickle.loads(pickle.dumps(land))
    np.testing.assert_array_equal(back.values, land.values)
    assert back.overlay.sets[0].kind == land.overlay.sets[0].kind and back.as_dict()["quantity"] == "E"
    assert json.loads(json.dumps(land.as_dict(), allow_nan=False))["values"][20][0] is None  # E undefined on w = 0
    assert land.status == "ok" and "critical sets" in land.message


def _ew_loss(p, q):
    """The loss of ew written here from MODELS.md: the expected cross-entropy of sigma(b + D x), D = e^2 (1 + 2 w|w|),
    at the optimal bias b (the root of its derivative, pi_0 (sigma(b) - p) + pi_1 (sigma(b + D) - (1 - q)) = 0)."""
    from scipy.optimize import brentq

    pi1 = p / (p + q)
    sig = lambda z: 0.5 * (1 + math.tanh(z / 2))

    def loss(e, w):
        d = e * e * (1 + 2 * w * abs(w))
        b = brentq(lambda b: (1 - pi1) * (sig(b) - p) + pi1 * (sig(b + d) - (1 - q)), -60, 60, xtol=1e-15, rtol=1e-15)
        out = 0.0
        for z, pi, p1 in ((b, 1 - pi1, p), (b + d, pi1, 1 - q)):  # P(next = 1 | x = 0), P(next = 1 | x = 1)
            out += pi * (p1 * np.logaddexp(0.0, -z) + (1 - p1) * np.logaddexp(0.0, z))
        return out

    return loss


def test_slice_and_flows_3d_results_pickle_and_carry_their_sets(ewa_slice):
    import pickle

    p, q, a0 = SLICE_PQ_A
    chain = MarkovChain(p, q)
    grid = ewa_slice[0]
    sl = pickle.loads(pickle.dumps(ewa_slice[1]))
    assert sl.status == "ok" and sl.fixed == {"a": a0} and sl.params == ("e", "w")
    (saddle,) = [s for s in sl.overlay.sets if s.kind == "saddle"]
    clip = min(max(0.5 + a0 * (p / (p + q) - 0.5), 0.0), 1.0)
    np.testing.assert_allclose(saddle.points[0], [0.0, -math.sqrt(1 / (4 * clip))], atol=1e-6)
    assert json.loads(json.dumps(sl.as_dict(), allow_nan=False))["fixed"] == {"a": a0}
    # a Slice belongs to its own slice, a Landscape to a full grid
    with pytest.raises(FlowlabInputError, match="Slice"):
        basin_map(grid, landscape=landscape(get_model("ew"), chain, resolution=10))
    with pytest.raises(FlowlabInputError, match="full model"):
        basin_landscape(grid, critical_sets(get_model("ew"), chain, BOX))
    model = get_model("ewb")
    starts = [[1.0, -2.0, 0.5], [0.3, 0.3, -0.5]]
    bundle = pickle.loads(pickle.dumps(flows_3d(model, chain, starts, t_max=50.0)))
    for r, s in zip(bundle.flows, starts):
        np.testing.assert_array_equal(r.theta, gradient_flow(model, chain, s, t_max=50.0).theta)
    assert bundle.counts["total"] == 2 and sum(v for k, v in bundle.counts.items() if k != "total") == 2
    assert len(json.loads(json.dumps(bundle.as_dict(), allow_nan=False))["flows"]) == 2
    _assert_same_sets(bundle.overlay, critical_sets(model, chain, bundle.box))


def test_figures_refuse_an_analysis_input_they_cannot_draw(chain, crit):
    with pytest.raises(FlowlabInputError, match="CriticalOverlay"):
        critical_overlay(crit)
    with pytest.raises(FlowlabInputError, match="Landscape"):
        energy_landscape(crit)
    with pytest.raises(FlowlabInputError, match="Flows3D"):
        flow_3d(crit)


def test_cooccurrence_balancing_figure_draws_the_ratio_the_trajectory_carries():
    from flowlab.plots import cooccurrence as cplots
    from flowlab.systems.cooccurrence.trajectory import Trajectory

    t = np.array([0.0, 1.0, 2.0, 3.0])
    g = np.array([[4.0, 1.0, 1.0, 1.0], [3.0, 1.0, 2.0, 2.0], [2.0, 2.0, 1.0, 1.0], [5.0, 1.0, 1.0, 6.0]])
    T = len(t)
    traj = Trajectory(engine="gram", settings={}, t=t, loss=np.ones(T), loss_by_type=np.ones((T, 4)),
                      G=np.zeros((T, 3)), attention=np.zeros((T, 3, 3)), value_gram=np.zeros((T, 3, 3)),
                      attention_deviation=np.zeros(T), g_by_type=g, margins=np.ones((T, 2)), invariants=np.zeros((T, 2)))
    # R = (g2 + g3 + g4 - g1) / (g1 - g2), undefined (NaN) where g1 <= g2
    np.testing.assert_allclose(traj.balancing, [-1 / 3, 1.0, np.nan, 3 / 4], equal_nan=True)
    ax = cplots.balancing(traj)
    (line,) = by_gid(ax, "ratio")
    np.testing.assert_array_equal(line.get_ydata(), traj.balancing[1:])  # t > 0 only (log time axis)


def test_ntp_order_norm_figure_draws_the_fitted_line_the_fit_carries():
    from types import SimpleNamespace

    from flowlab.plots import ntp_order as nplots
    from flowlab.systems.ntp_order.measure import fit_rate

    t = np.linspace(0.0, 100.0, 51)
    norm = 0.05 * t + 3.0 + np.where(t < 10, 0.5, 0.0)  # a line from t = 10 on (the fit window)
    fit = fit_rate(t, norm, "linear")
    assert fit.value == pytest.approx(0.05, rel=1e-12) and fit.intercept == pytest.approx(3.0, rel=1e-12)
    trace = SimpleNamespace(t=t, norm=norm, method="gd")
    ax = nplots.stage_norm(trace, SimpleNamespace(norm_slope=fit), stage=1)
    (fitted,) = [ln for ln in ax.get_lines() if ln.get_label() == "linear fit"]
    np.testing.assert_allclose(fitted.get_ydata(), 0.05 * t + 3.0, rtol=1e-12)


# ------------------------------------------------------- paper-quality figures (issue 17)
def test_dense_output_samples_the_flow_between_steps(chain):
    """The dense output lies on the flow: E (conserved by ew's flow, MODELS.md section 3) stays constant
    at every sample, which a straight chord between curved steps would not do; the loss never rises."""
    import pickle

    n = 300
    res = gradient_flow(get_model("ew"), MarkovChain(0.5, 0.8), [1.0, -1.5], dense_output=n)
    t, th, loss = res.dense_t, res.dense_theta, res.dense_loss
    assert len(t) >= n and np.all(np.diff(t) > 0) and t[0] == 0.0 and t[-1] == res.t[-1]
    assert np.all(np.diff(loss) <= 1e-14)
    e0 = energy(*res.theta[0])
    assert np.max(np.abs(energy(th[:, 0], th[:, 1]) - e0)) < 1e-7
    # midpoints of the chords between solver steps are off the flow (the reason for the dense output)
    mid = 0.5 * (res.theta[:-1] + res.theta[1:])
    assert np.max(np.abs(energy(mid[:, 0], mid[:, 1]) - e0)) > 1e-5
    np.testing.assert_allclose(th[np.searchsorted(t, res.t)], res.theta, atol=1e-12)
    assert pickle.loads(pickle.dumps(res)).dense_loss.shape == loss.shape
    fig, ax = plt.subplots()
    loss_curve(res, ax)
    (line,) = by_gid(ax, "loss")
    assert len(line.get_xdata()) >= n and np.all(np.diff(line.get_ydata()) <= 1e-14)
    loss_curve(res, ax, excess=True, references=False)
    assert ax.get_yscale() == "log"
    with pytest.raises(FlowlabInputError, match="dense_output"):
        gradient_flow(get_model("ew"), chain, [1.0, -1.5], dense_output=1)
    plain = gradient_flow(get_model("ew"), chain, [1.0, -1.5])
    assert plain.dense_t is None and len(by_gid(loss_curve(plain), "loss")[0].get_xdata()) == len(plain.t)


def test_figure1_has_one_legend_and_no_blank_band_at_w0(grid, crit, chain):
    from flowlab.plots.markov import figure1_panels

    plane = landscape(get_model("ew"), chain, crit=crit, resolution=41)
    axes = figure1_panels([(plane, grid, basin_landscape(grid, crit))] * 2)
    fig = axes[0, 0].figure
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in axes.ravel())
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(texts) == len(set(texts))
    for want in ("separatrix", "global minima (bigram)", "saddle", "$w=0$: $E$ undefined"):
        assert want in texts
    assert any("I^*" in t for t in texts)
    # E is undefined on w = 0: each half-plane is filled up to the line, from its own side
    halves = by_gid(axes[0, 0], "energy") + by_gid(axes[0, 0], "energy:side")
    assert len(halves) == 2
    ys = [np.concatenate([p.vertices[:, 1] for p in h.get_paths() if len(p.vertices)]) for h in halves]
    assert any(np.isclose(y.max(), 0.0) and y.min() < -2.9 for y in ys)
    assert any(np.isclose(y.min(), 0.0) and y.max() > 2.9 for y in ys)
    assert [t.get_text()[:3] for t in (axes[0, 0].title, axes[0, 1].title, axes[1, 0].title)] == ["(a)", "(b)", "(c)"]


@pytest.mark.parametrize("pq", [(0.1, 0.1), (0.5, 0.8)])
def test_global_minimum_curves_reach_the_box_edge(pq):
    """The samples of {D = D*} stop short of the box; the drawn curves are carried on to its edge, on the set."""
    ch = MarkovChain(*pq)
    ov = overlay(critical_sets(get_model("ew"), ch, BOX))
    (glob,) = [s for s in ov.sets if s.kind == "global_min"]
    ends = np.concatenate([line[[0, -1]] for line in glob.lines])
    on_edge = np.isclose(np.abs(ends), 3.0, atol=1e-12).any(axis=1)
    assert on_edge.sum() >= 4  # both branches, both ends (p + q < 1: e = +-3 and w = 3; > 1: e = +-3 and w = -3)
    for line in glob.lines:
        gap = line[:, 0] ** 2 * (1 + 2 * line[:, 1] * np.abs(line[:, 1]))
        np.testing.assert_allclose(gap, d_star(*pq), rtol=1e-8)
    edge_w = ends[np.isclose(np.abs(ends[:, 1]), 3.0)]
    assert len(edge_w) == 2 and np.all(np.sign(edge_w[:, 1]) == (1 if sum(pq) < 1 else -1))
    fig, ax = plt.subplots()
    critical_overlay(ov, ax)
    (line,) = by_gid(ax, "critical:global_min")
    y = np.asarray(line.get_ydata(), float)
    assert np.nanmax(np.abs(y)) == pytest.approx(3.0, abs=1e-12)


def _ewa_gap(theta, p, q):
    """D of ewa in the long-context limit (MODELS.md section 4)."""
    e, w, a = theta[..., 0], theta[..., 1], theta[..., 2]
    return e ** 2 * (1 + 4 * w * np.abs(w) * np.clip(0.5 + a * (p / (p + q) - 0.5), 0, 1))


def test_ewa_surfaces_are_split_by_branch_and_planes_by_the_saddle_curve():
    """Each surface piece of {D = D*} lies on the set and on one side of e = 0; the unigram plane's
    minima and maxima are where 1 + 4w|w| clip(1/2 + c, 0, 1) has the sign of the kind (p + q > 1)."""
    from flowlab.systems.markov.critical import CriticalSet
    from flowlab.systems.markov.landscape import surface_pieces
    from flowlab.systems.markov.numeric import NumericModel

    p, q = 0.5, 0.8
    ch, model = MarkovChain(p, q), get_model("ewa")
    nm = NumericModel(model, ch)
    box = {"e": (-3.0, 3.0), "w": (-3.0, 3.0), "a": (-3.0, 3.0)}
    glob = CriticalSet(kind="global_min", dimension=2, loss=ch.entropy_rate, equation="", source="symbolic",
                       points=np.array([[1.0, -1.5, 0.0]]))
    pieces = surface_pieces(glob, nm, ch, box)
    assert len(pieces) == 2 and {pc.shape for pc in pieces} == {"graph"}
    signs = set()
    for pc in pieces:
        pts = pc.points[np.isfinite(pc.points[..., 0])]
        assert len(pts) > 1000
        np.testing.assert_allclose(_ewa_gap(pts, p, q), d_star(p, q), rtol=1e-9, atol=1e-9)
        assert np.all(pts[:, 0] > 0) or np.all(pts[:, 0] < 0)
        signs.add(float(np.sign(pts[0, 0])))
        assert np.all(np.abs(pts) <= 3.0 + 1e-12)
        assert np.isclose(np.abs(pts[:, 1]).max(), 3.0)  # the surface ends on the face w = -3, no staircase
    assert signs == {-1.0, 1.0}

    def g(theta):  # D = e^2 g on the plane's neighbourhood
        return 1 + 4 * theta[..., 1] * np.abs(theta[..., 1]) * np.clip(0.5 + theta[..., 2] * (p / (p + q) - 0.5), 0, 1)

    for kind, sign in (("local_min", 1.0), ("local_max", -1.0)):  # p + q > 1: minima where g > 0
        s = CriticalSet(kind=kind, dimension=2, loss=ch.unigram_loss, equation="", source="symbolic",
                        points=np.array([[0.0, 0.5, 0.0], [0.0, 1.0, 1.0], [0.0, 2.0, -1.0]]),
                        member=lambda t, sign=sign: (np.abs(t[:, 0]) < 1e-12) & (sign * g(t) > 0))
        (pc,) = surface_pieces(s, nm, ch, box)
        assert pc.shape == "region" and pc.axis == 0 and pc.offset == 0.0
        V, U = np.meshgrid(pc.v, pc.u, indexing="ij")
        gv = g(np.stack([np.zeros_like(U), U, V], -1))
        sure = np.abs(gv) > 1e-6
        np.testing.assert_array_equal((pc.field > 0)[sure], (sign * gv > 0)[sure])
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d")
    from flowlab.plots.markov import _draw_piece

    for pc in pieces:
        _draw_piece(ax, pc, (0, 1, 2), COLORS["global"])
    assert len(ax.collections) == 2


def test_flow_3d_limits_follow_the_data():
    """ewb's b coordinate spans less than the box: the drawn box shrinks to what is drawn (paths, sets)."""
    model, ch = get_model("ewb"), MarkovChain(0.5, 0.8)
    bundle = flows_3d(model, ch, [[1.0, -1.5, 0.0], [0.5, 1.0, -1.0]], crit=critical_sets(model, ch, method="symbolic"),
                      t_max=200.0)
    ax = flow_3d(bundle)
    drawn = np.concatenate([r.theta for r in bundle.flows] + [s.points for s in bundle.overlay.sets if len(s.points)])
    lo, hi = ax.get_zlim()
    assert lo <= drawn[:, 2].min() and hi >= drawn[:, 2].max()
    assert hi - lo < 0.8 * 6.0  # b* spans well under the box -3..3
    assert all(-3.0 <= v <= 3.0 for v in (*ax.get_xlim(), *ax.get_ylim()))
    (leg,) = ax.figure.legends
    assert leg._loc == 8 or "lower" in str(leg._loc)  # below the cube, clear of the z label


def test_trajectories_magnify_a_path_too_small_to_see(chain, crit):
    small = gradient_flow(get_model("ew"), MarkovChain(0.5, 0.8), [0.02, 0.01])
    big = gradient_flow(get_model("ew"), MarkovChain(0.5, 0.8), [1.0, -1.5])
    assert np.ptp(small.theta, axis=0).max() < 0.05
    ax = trajectories([small, big], overlay=overlay(critical_sets(get_model("ew"), MarkovChain(0.5, 0.8), BOX)),
                      extent=BOX)
    (ins,) = [c for c in ax.child_axes if c.get_gid() == "trajectory:inset"]
    (path,) = by_gid(ins, "trajectory")
    np.testing.assert_array_equal(path.get_xydata(), small.theta)
    x0, x1 = ins.get_xlim()
    assert x0 <= small.theta[:, 0].min() and x1 >= small.theta[:, 0].max() and x1 - x0 < 0.2
    assert not [c for c in trajectories([big], overlay=overlay(crit), extent=BOX).child_axes
                if c.get_gid() == "trajectory:inset"]


def test_figure4_curves_show_every_seed_and_the_band():
    from matplotlib.collections import PolyCollection

    from flowlab.plots.markov import training_curves

    steps = np.arange(0, 100, 10)
    runs = [{"init": "standard", "steps": steps, "losses": 0.7 - 0.001 * k - 0.0001 * steps} for k in range(3)]
    ax = training_curves(runs, unigram=0.69, bigram=0.6)
    seeds = by_gid(ax, "training:seed")
    assert len(seeds) == 3
    for line, r in zip(seeds, runs):
        np.testing.assert_array_equal(line.get_ydata(), r["losses"])
    (band,) = by_gid(ax, "training:std")
    assert isinstance(band, PolyCollection)
    ys = band.get_paths()[0].vertices[:, 1]
    std = np.std([r["losses"] for r in runs], axis=0)
    assert ys.max() == pytest.approx((np.mean([r["losses"] for r in runs], axis=0) + std).max())
    assert any("3 seeds" in t for t in legend_texts(ax))


def test_basin_slice_draws_the_boundary_between_labels(ewa_slice):
    grid, sl = ewa_slice
    ax = basin_map(grid, landscape=sl)
    (bd,) = by_gid(ax, "basins:boundary")
    assert list(bd.levels) == [0.5]
    verts = np.concatenate([p.vertices for p in bd.get_paths() if len(p.vertices)])
    # every boundary vertex lies between two grid points whose labels are 0 and 1
    e, w = grid.axes["e"], grid.axes["w"]
    lab = grid.label.reshape(len(e), len(w))
    for x, y in verts[:: max(1, len(verts) // 40)]:
        i = np.clip(np.searchsorted(e, x) - 1, 0, len(e) - 2)
        j = np.clip(np.searchsorted(w, y) - 1, 0, len(w) - 2)
        assert {0, 1} <= set(lab[i:i + 2, j:j + 2].ravel().tolist())
    assert "basin boundary (between grid labels)" in legend_texts(ax)
