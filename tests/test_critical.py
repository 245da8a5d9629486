"""Critical sets against MODELS.md section 3, and the two paths (symbolic, numeric) against each other."""

import json
import math

import numpy as np
import pytest
import sympy as sp

from conftest import CHAINS_ABOVE, CHAINS_BELOW, SADDLE_W, ref_entropy_rate, ref_unigram_loss
from flowlab import MarkovChain, NumericModel, get_model
from flowlab.cli.app import main
from flowlab.engine.errors import FlowlabInputError
from flowlab.systems.markov.critical import _cross_check, critical_sets, regions_table
from flowlab.systems.markov.critical_symbolic import critical_structure
from flowlab.systems.markov.models import TOKEN, Model, param_symbol

EW_CHAINS = CHAINS_BELOW[:3] + CHAINS_ABOVE[:3]


def ref_optimal_gap(p, q):
    return math.log((1 - p) * (1 - q) / (p * q))


def by_kind(result, dimension=None):
    out = {}
    for s in result.sets:
        if dimension is None or s.dimension == dimension:
            out.setdefault(s.kind, []).append(s)
    return out


def check_ew_sets(result, p, q):
    """The sets of `ew` are those of MODELS.md section 3 (facts computed here, not by flowlab)."""
    below = p + q < 1
    kinds = sorted((s.kind, s.dimension) for s in result.sets)
    assert kinds == [("global_min", 1), ("local_max", 1), ("local_min", 1), ("saddle", 0)]
    sets = {s.kind: s for s in result.sets}
    H, h = ref_entropy_rate(p, q)[0], ref_unigram_loss(p, q)
    g = sets["global_min"]
    e, w = g.points.T
    assert len(g.points) > 10
    np.testing.assert_allclose(e**2 * (1 + 2 * w * np.abs(w)), ref_optimal_gap(p, q), rtol=1e-9, atol=1e-9)
    # it lies where 1 + 2 w|w| has the sign of D*: w > -1/sqrt2 below p + q = 1, w < -1/sqrt2 above
    assert np.all(w > SADDLE_W) if below else np.all(w < SADDLE_W)
    assert abs(g.loss - H) < 1e-9
    lmin, lmax = sets["local_min"], sets["local_max"]
    for s in (lmin, lmax):
        assert np.all(s.points[:, 0] == 0) or np.max(np.abs(s.points[:, 0])) < 1e-12
        assert abs(s.loss - h) < 1e-9
    minima_below_saddle = below  # p+q<1: local minima for w < -1/sqrt2
    assert np.all(lmin.points[:, 1] < SADDLE_W) == minima_below_saddle
    assert np.all(lmax.points[:, 1] > SADDLE_W) == minima_below_saddle
    assert np.all(lmin.points[:, 1] > SADDLE_W) != minima_below_saddle
    (saddle,) = sets["saddle"].points
    assert abs(saddle[0]) < 1e-6 and abs(saddle[1] - SADDLE_W) < 1e-6
    assert abs(sets["saddle"].loss - h) < 1e-9


@pytest.mark.parametrize("p,q", EW_CHAINS)
def test_ew_sets_match_models_md_and_paths_agree(p, q):
    res = critical_sets(get_model("ew"), MarkovChain(p, q))
    assert res.method == "symbolic+numeric"
    assert res.agreement["agree"], res.agreement
    assert res.agreement["numeric_points_off_symbolic_sets"] == 0
    assert res.agreement["numeric_samples_checked"] > 100
    assert res.complete and not res.degenerate
    check_ew_sets(res, p, q)
    # the numeric path alone finds the same sets (two branches of the global-minimum curve)
    num = critical_sets(get_model("ew"), MarkovChain(p, q), method="numeric")
    assert not num.complete
    merged = {}
    for s in num.sets:
        merged.setdefault((s.kind, s.dimension), []).append(s)
    assert sorted(merged) == [("global_min", 1), ("local_max", 1), ("local_min", 1), ("saddle", 0)]
    assert len(merged[("global_min", 1)]) == 2  # e > 0 and e < 0
    (saddle,) = merged[("saddle", 0)]
    assert np.max(np.abs(saddle.points[0] - [0.0, SADDLE_W])) < 1e-6
    for s in num.sets:
        ref = ref_entropy_rate(p, q)[0] if s.kind == "global_min" else ref_unigram_loss(p, q)
        assert abs(s.loss - ref) < 1e-9


@pytest.mark.parametrize("p,q", [CHAINS_BELOW[0], CHAINS_ABOVE[1]])
def test_kinds_agree_with_the_loss_itself(p, q):
    """Perturb off each set and compare losses: the kinds follow from L, not from Hessian code."""
    nm = NumericModel(get_model("ew"), MarkovChain(p, q))
    res = critical_sets(get_model("ew"), MarkovChain(p, q), method="symbolic")
    for s in res.sets:
        for x in s.points[:: max(1, len(s.points) // 8)]:
            if s.kind == "saddle":
                ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
                ring = x + 1e-2 * np.stack([np.cos(ang), np.sin(ang)], -1)
                d = nm.loss(ring) - nm.loss(x)
                assert d.max() > 1e-12 and d.min() < -1e-12
                continue
            if abs(x[1] - SADDLE_W) < 0.05:
                continue
            d = nm.loss(x + [[1e-3, 0.0], [-1e-3, 0.0]]) - nm.loss(x)
            if s.kind in ("global_min", "local_min"):
                assert np.all(d > -1e-15)
            else:
                assert np.all(d < 0)


def test_split_is_exact_in_the_symbolic_structure():
    st = critical_structure(get_model("ew"))
    (comp,) = st.flat
    e, w = (param_symbol(n) for n in ("e", "w"))
    assert comp.fixed_dict == {e: 0} and comp.free == (w,) and comp.gap_value == 0
    assert sp.simplify(comp.curvature - 2 * (1 + 2 * w * sp.Abs(w))) == 0
    assert [dict(s) for s in comp.splits] == [{w: -sp.sqrt(2) / 2}]
    assert st.solved


@pytest.mark.parametrize("p,q", [(0.1, 0.1), (0.5, 0.8)])
def test_ewb_sets_live_in_3d(p, q):
    res = critical_sets(get_model("ewb"), MarkovChain(p, q), samples=32)
    assert res.complete, res.message
    assert res.params == ("e", "w", "b")
    kinds = sorted((s.kind, s.dimension) for s in res.sets)
    # the profiled maxima become saddles: L is strictly convex in b (one more positive direction)
    assert kinds == [("global_min", 1), ("local_min", 1), ("saddle", 0), ("saddle", 1)]
    unigram = [s for s in res.sets if s.kind != "global_min"]
    for s in unigram:
        assert s.points.shape[1] == 3
        np.testing.assert_allclose(s.points[:, 2], math.log(p / q), atol=1e-12)  # b* = log(pi1/pi0)
    lmin = next(s for s in res.sets if s.kind == "local_min")
    assert np.all(lmin.points[:, 1] < SADDLE_W) == (p + q < 1)
    nm = NumericModel(get_model("ewb"), MarkovChain(p, q))
    g = next(s for s in res.sets if s.kind == "global_min")
    np.testing.assert_allclose(nm.loss(g.points), ref_entropy_rate(p, q)[0], atol=1e-9)
    assert np.max(np.linalg.norm(nm.gradient(g.points), axis=-1)) < 1e-9


def test_degenerate_chain_is_reported_not_crashed():
    res = critical_sets(get_model("ew"), MarkovChain(0.3, 0.7))
    assert res.degenerate and "p + q = 1" in res.message
    assert {s.kind for s in res.sets} == {"global_min"}
    assert res.agreement["agree"]


def _test_model(g):
    u, v = param_symbol("u"), param_symbol("v")
    return Model("t", ("u", "v"), TOKEN * g(u, v))


@pytest.mark.parametrize("method", ["auto", "numeric"])
@pytest.mark.parametrize("p,q", [(0.1, 0.1), (0.9, 0.9)])
def test_isolated_points_of_each_kind(method, p, q):
    """D = u^3/3 - u - v^3/3 + v: a minimum of D at (1, -1), a maximum at (-1, 1), saddles at (1, 1), (-1, -1).

    L = ell(D) with ell decreasing below D* (p + q < 1, D* > 4/3 > D on the box): L reverses the
    kinds; with p + q > 1 (D* < -4/3) ell is increasing and L keeps them.
    """
    model = _test_model(lambda u, v: u**3 / 3 - u - v**3 / 3 + v)
    res = critical_sets(model, MarkovChain(p, q), {"u": (-2, 2), "v": (-2, 2)}, method=method)
    found = {tuple(np.round(s.points[0], 6)): s.kind for s in res.sets}
    flip = p + q < 1
    expected = {
        (1.0, -1.0): "local_max" if flip else "local_min",
        (-1.0, 1.0): "local_min" if flip else "local_max",
        (1.0, 1.0): "saddle",
        (-1.0, -1.0): "saddle",
    }
    assert found == expected
    assert all(s.dimension == 0 for s in res.sets)
    assert res.complete == (method == "auto")


@pytest.mark.parametrize("method", ["auto", "numeric"])
def test_degenerate_isolated_points_from_higher_order(method):
    """Null Hessian at the origin: a monkey saddle of D stays a saddle; a quartic minimum of D
    is a maximum of L when ell is decreasing there (p + q < 1)."""
    box = {"u": (-1.5, 1.5), "v": (-1.5, 1.5)}
    monkey = critical_sets(_test_model(lambda u, v: u**3 - 3 * u * v**2), MarkovChain(0.1, 0.1), box, method=method)
    origin = [s for s in monkey.sets if s.dimension == 0]
    assert len(origin) == 1 and origin[0].kind == "saddle"
    assert np.max(np.abs(origin[0].points[0])) < 1e-2
    quartic = critical_sets(_test_model(lambda u, v: u**4 + v**4), MarkovChain(0.1, 0.1), box, method=method)
    origin = [s for s in quartic.sets if s.dimension == 0]
    assert len(origin) == 1 and origin[0].kind == "local_max"


def test_completeness_requires_agreement():
    """Drop a symbolic set: the cross-check notices numeric points that nothing explains."""
    model, chain = get_model("ew"), MarkovChain(0.2, 0.3)
    full = critical_sets(model, chain)
    from flowlab.systems.markov.critical import _numeric_sets, make_box

    num_sets, num_res = _numeric_sets(model, chain, make_box(model), starts=256, seed=1, samples=64)
    assert _cross_check(list(full.sets), num_sets, num_res)["agree"]
    partial = [s for s in full.sets if s.kind != "local_max"]
    check = _cross_check(partial, num_sets, num_res)
    assert not check["agree"] and check["numeric_points_off_symbolic_sets"] > 0
    wrong = [s if s.kind != "local_min" else type(s)(**{**s.__dict__, "kind": "local_max"}) for s in full.sets]
    assert _cross_check(wrong, num_sets, num_res)["kind_mismatches"]


def test_regions_table_is_the_papers_case_split():
    table = regions_table(get_model("ew"))
    assert table["complete"] is True and all(r["complete"] is True for r in table["regions"].values())
    rows = {r["set"]: r for r in table["rows"]}
    low, high = "w < -sqrt(2)/2", "w > -sqrt(2)/2"
    assert rows[f"e = 0, {low}"]["p+q<1"]["kind"] == "local_min"
    assert rows[f"e = 0, {low}"]["p+q>1"]["kind"] == "local_max"
    assert rows[f"e = 0, {high}"]["p+q<1"]["kind"] == "local_max"
    assert rows[f"e = 0, {high}"]["p+q>1"]["kind"] == "local_min"
    assert rows["e = 0, w = -sqrt(2)/2"]["p+q<1"]["kind"] == "saddle"
    assert rows["e = 0, w = -sqrt(2)/2"]["p+q>1"]["kind"] == "saddle"
    glob = next(r for r in table["rows"] if r["set"].endswith("= D*"))
    assert glob["p+q<1"]["location"] == high and glob["p+q>1"]["location"] == low
    assert all(r["p+q=1"]["kind"] == "global_min" for r in table["rows"])


def test_input_errors():
    model, chain = get_model("ew"), MarkovChain(0.2, 0.3)
    with pytest.raises(FlowlabInputError, match="unknown parameters"):
        critical_sets(model, chain, {"x": (0, 1)})
    with pytest.raises(FlowlabInputError, match="lo < hi"):
        critical_sets(model, chain, {"e": (1, -1)})
    with pytest.raises(FlowlabInputError, match="method"):
        critical_sets(model, chain, method="magic")
    with pytest.raises(FlowlabInputError, match="starts"):
        critical_sets(model, chain, starts=0)


def test_cli_json_layout(tmp_path, capsys):
    out = tmp_path / "crit.json"
    assert main(["critical", "--model", "ewb", "--p", "0.5", "--q", "0.8", "--samples", "8", "--json",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["params"] == ["e", "w", "b"]
    assert data["degenerate"] is False and data["complete"] is True
    for s in data["sets"]:
        assert set(s) >= {"kind", "dimension", "loss", "equation", "points"}
        assert s["kind"] in ("global_min", "local_min", "local_max", "saddle", "degenerate")
        assert all(len(pt) == 3 for pt in s["points"]) and 1 <= len(s["points"]) <= 8
    assert main(["critical", "--p", "0.5", "--q", "0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["degenerate"] is True and "p + q = 1" in data["message"]


def test_cli_regions_latex_and_errors(capsys):
    assert main(["critical", "--regions", "--latex"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(r"\begin{tabular}") and r"\frac{\sqrt{2}}{2}" in text and "saddle" in text
    for argv in (
        ["critical", "--p", "1.2", "--q", "0.5"],
        ["critical", "--p", "0.2", "--q", "0.5", "--box", "e:1"],
        ["critical", "--p", "0.2", "--q", "0.5", "--box", "e:2:1"],
        ["critical", "--regions", "--p", "0.2", "--q", "0.5"],
        ["critical", "--p", "0.2"],
    ):
        assert main(argv) == 2
        assert "error" in capsys.readouterr().err


def test_slightly_asymmetric_chain_agrees():
    """p = 0.5, q = 0.501 (gap 5e-7): numeric roots scatter ~1e-5 around the degenerate saddle, which is
    still the saddle (the paths used to DISAGREE there)."""
    p, q = 0.5, 0.501
    res = critical_sets(get_model("ew"), MarkovChain(p, q), starts=256)
    assert res.agreement["agree"] and res.complete, res.agreement
    check_ew_sets(res, p, q)


def test_small_gap_numeric_sets_keep_the_unigram_line_non_global():
    """q = 0.50003: h(pi1) - H = 4.5e-10, below an absolute 1e-9 loss tolerance."""
    from flowlab.systems.markov.critical import _numeric_sets, make_box

    p, q = 0.5, 0.50003
    model, chain = get_model("ew"), MarkovChain(p, q)
    sets, _ = _numeric_sets(model, chain, make_box(model), starts=128, seed=0, samples=64)
    H, h = ref_entropy_rate(p, q)[0], ref_unigram_loss(p, q)
    assert h - H > 4e-10
    on_line = [s for s in sets if np.max(np.abs(s.points[:, 0])) < 1e-6]
    assert on_line and all(s.kind != "global_min" and abs(s.loss - h) < 1e-12 for s in on_line)
    for s in sets:
        if s.kind == "global_min":  # every global sample really has loss H and lies on {D = D*}
            e, w = s.points.T
            assert np.all(np.abs(e) > 1e-3)
            np.testing.assert_allclose(e**2 * (1 + 2 * w * np.abs(w)), ref_optimal_gap(p, q), rtol=1e-6)


def test_nearly_degenerate_chain_is_said_plainly_with_the_exact_kinds():
    p, q = 0.5, 0.5 + 1e-12  # p + q > 1, h(pi1) - H ~ 5e-25: below what float64 resolves
    res = critical_sets(get_model("ew"), MarkovChain(p, q))
    assert "nearly degenerate" in res.message and res.as_dict()["nearly_degenerate"] is True
    assert not res.complete and "DISAGREE" not in res.message
    # the symbolic kinds are exact (sign of D0 - D*): MODELS.md for p + q > 1
    kinds = {(s.kind, s.dimension): s for s in res.sets}
    assert sorted(kinds) == [("global_min", 1), ("local_max", 1), ("local_min", 1), ("saddle", 0)]
    assert np.all(kinds[("local_min", 1)].points[:, 1] > SADDLE_W)
    assert np.all(kinds[("local_max", 1)].points[:, 1] < SADDLE_W)
    # a model with the numeric path only: no kind is claimed
    num = critical_sets(_test_model(lambda u, v: u**3 / 3 - u - v**3 / 3 + v), MarkovChain(p, q),
                        {"u": (-2, 2), "v": (-2, 2)}, method="numeric", starts=64)
    assert num.sets and {s.kind for s in num.sets} == {"degenerate"}


def test_sets_outside_the_box_are_named():
    res = critical_sets(get_model("ew"), MarkovChain(0.5, 0.8), {"e": (0.5, 3)}, method="symbolic")
    assert [s.kind for s in res.sets] == ["global_min"]
    assert any(t.startswith("e = 0") for t in res.outside_box) and "e = 0" in res.message
    # ewb: b* = log(p/q) = -3.2 lies outside the default b range, so the unigram sets do
    res = critical_sets(get_model("ewb"), MarkovChain(0.04, 0.99), method="symbolic", samples=8)
    assert math.log(0.04 / 0.99) < -3 and {s.kind for s in res.sets} == {"global_min"}
    assert len(res.outside_box) == 3 and all("b = b*(theta)" in t for t in res.outside_box)


def test_regions_use_chains_where_the_attention_direction_is_not_flat():
    """p != q in every region (c = a (pi1 - 1/2), MODELS.md section 4), and ewa's branch region |c| < 1/2
    covers the default a range [-3, 3] for each chain, which the symbolic path then proves from the corners."""
    from flowlab.systems.markov.critical import REGION_CHAINS, _SymbolicAssembly, make_box

    model = get_model("ewa")
    for region, (p, q) in REGION_CHAINS.items():
        assert p != q
        pi1 = p / (p + q)
        assert 3 * abs(pi1 - 0.5) < 0.5, region
        assert region == ("p+q<1" if p + q < 1 else "p+q>1" if p + q > 1 else "p+q=1")
        asm = _SymbolicAssembly(model, MarkovChain(p, q), make_box(model), 8)
        inside, how = asm.box_in_region(make_box(model))
        assert inside and how.startswith("proved")
    far = {"a": (-9.0, 9.0)}  # |c| = 9 * 0.1 > 1/2 for p = 0.1, q = 0.15
    asm = _SymbolicAssembly(model, MarkovChain(0.1, 0.15), make_box(model, far), 8)
    assert not asm.box_in_region(make_box(model, far))[0]


def test_levels_cover_every_branch_and_kink():
    """Box-independent gap values with Max/Min: D = |u^2 - 1| + v^2 written with Max. By hand: the smooth
    critical point (0, 0) with D = 1, and the kink minima u = +-1, v = 0 with D = 0, which the branch taken
    at theta = 0 (1 - u^2) alone misses; the other branch adds D = -1 (a superset, so still a safe level)."""
    from flowlab.systems.markov.critical_symbolic import critical_levels
    from flowlab.systems.markov.models import user_model

    lev = critical_levels(user_model("x*(Max(1 - u**2, u**2 - 1) + v**2)", "u,v"))
    assert lev.solved and "superset" in lev.how
    assert sorted(lev.values_at(0.2, 0.3)) == [-1.0, 0.0, 1.0]
    # ewa (MODELS.md section 4): the only non-global critical set is the unigram plane e = 0 (D = 0)
    ewa = critical_levels(get_model("ewab"), 0.5 / 1.3)
    assert ewa.values_at(0.5, 0.8) == [0.0] and ewa.dimension == 2
