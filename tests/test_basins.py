"""Basins against the analytic basins of MODELS.md section 3 (computed here, independently)."""

import json
import math

import numpy as np
import pytest

from conftest import CHAINS_ABOVE, CHAINS_BELOW, SEPARATRIX, ref_basin, ref_energy, ref_unigram_loss
from flowlab import MarkovChain, get_model
from flowlab.cli.app import main
from flowlab.engine.errors import FlowlabInputError
from flowlab.systems.markov.basins import FlowSettings, basin_grid, gaussian_basin, wilson_interval

GRID_CHAINS = CHAINS_BELOW[:2] + CHAINS_ABOVE[:2]


def analytic_labels(p, q, e_axis, w_axis):
    """1/0 from MODELS.md, and a mask of the points farther than 0.02 (in E) from the separatrix."""
    lab = np.empty((e_axis.size, w_axis.size), dtype=np.int8)
    far = np.empty_like(lab, dtype=bool)
    for i, e in enumerate(e_axis):
        for j, w in enumerate(w_axis):
            lab[i, j] = 1 if ref_basin(p, q, e, w) == "global" else 0
            far[i, j] = e != 0 and w != 0 and abs(ref_energy(e, w) - SEPARATRIX) > 0.02
    return lab, far


@pytest.mark.parametrize("p,q", GRID_CHAINS)
def test_flow_labels_match_the_analytic_basins(p, q):
    g = basin_grid(get_model("ew"), MarkovChain(p, q), grid=64, cross_check=False)
    assert g.label.shape == (64, 64) and g.label.dtype == np.int8
    ref, far = analytic_labels(p, q, g.axes["e"], g.axes["w"])
    agree = np.mean(g.label[far] == ref[far])
    assert agree >= 0.999, agree
    decided = g.label != -1  # no decided label is wrong anywhere, the separatrix included
    assert np.array_equal(g.label[decided], ref[decided]), np.argwhere(decided & (g.label != ref))
    assert np.mean(g.label == -1) <= 0.005
    # both basins are really there
    assert 0.05 < np.mean(g.label == 1) < 0.95


def test_invariant_method_is_the_analytic_rule():
    for p, q in GRID_CHAINS:
        g = basin_grid(get_model("ew"), MarkovChain(p, q), {"e": (-2.5, 2), "w": (-3, 1.7)}, grid=41, method="invariant")
        ref, _ = analytic_labels(p, q, g.axes["e"], g.axes["w"])
        off_lines = (g.axes["e"][:, None] != 0) & (g.axes["w"][None, :] != 0)
        assert np.array_equal(g.label[off_lines], ref[off_lines])


@pytest.mark.parametrize("name", ["ew", "ewb"])
def test_gaussian_contrast_between_regimes(name):
    model = get_model(name)
    for p, q in (CHAINS_BELOW[0], CHAINS_BELOW[1]):
        r = gaussian_basin(model, MarkovChain(p, q), 0.02, 300, seed=1).as_dict()
        assert r["prob_global"] >= 0.99 and r["ci95"][0] > 0.95, r
    for p, q in (CHAINS_ABOVE[0], CHAINS_ABOVE[1]):
        r = gaussian_basin(model, MarkovChain(p, q), 0.02, 300, seed=1).as_dict()
        assert r["prob_global"] <= 0.01 and r["ci95"][1] < 0.05, r
    assert r["counts"]["global"] + r["counts"]["nonglobal"] + r["counts"]["undetermined"] == 300


def test_tiny_time_limit_gives_undetermined_not_wrong_labels():
    p, q = 0.5, 0.8
    settings = FlowSettings(t_max=1e-3)
    g = basin_grid(get_model("ew"), MarkovChain(p, q), grid=40, settings=settings, cross_check=False)
    ref, _ = analytic_labels(p, q, g.axes["e"], g.axes["w"])
    decided = g.label != -1
    assert np.mean(~decided) > 0.3
    assert np.array_equal(g.label[decided], ref[decided])
    assert g.counts()["undetermined"] == int(np.sum(~decided))


def test_grid_files_layout(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["basins", "--p", "0.9", "--q", "0.9", "--grid", "24", "--range", "e:-2:2", "--range", "w:-3:1",
                 "--out", str(out), "--quiet", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    with np.load(out / "basins.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["e", "label", "w"]
        e, w, label = data["e"], data["w"], data["label"]
    np.testing.assert_array_equal(e, np.linspace(-2, 2, 24))
    np.testing.assert_array_equal(w, np.linspace(-3, 1, 24))
    assert label.shape == (24, 24) and label.dtype == np.int8
    ref, far = analytic_labels(0.9, 0.9, e, w)  # label[i, j] belongs to (e[i], w[j])
    assert np.array_equal(label[far], ref[far])
    assert np.array_equal(label[label != -1], ref[label != -1])
    meta = json.loads((out / "basins.json").read_text())
    assert meta == {k: v for k, v in payload.items() if k != "files"}
    c = meta["counts"]
    assert c["global"] + c["nonglobal"] + c["undetermined"] == c["total"] == 576
    assert abs(sum(meta["fractions"].values()) - 1) < 1e-12
    assert set(meta["labels"]) >= {"1", "0", "-1"} and meta["labels"]["0"]["sets"]
    assert meta["params"] == ["e", "w"] and meta["seconds"] > 0
    assert meta["cross_check"]["agreement_far"] >= 0.999
    assert meta["cross_check"]["disagreements"] == 0 and meta["cross_check"]["points_decided_by_both"] > 500
    # the words: label 1 is proved from a box-independent level, label 0 only checked at one point
    assert meta["labels"]["1"]["rule"].startswith("proved") and "whole parameter space" in meta["labels"]["1"]["rule"]
    assert "not proved" in meta["labels"]["0"]["rule"]
    assert meta["labels"]["nonglobal_level"]["value"] == pytest.approx(ref_unigram_loss(0.9, 0.9), abs=1e-12)


def test_oversized_grid_is_refused_up_front(tmp_path, capsys):
    with pytest.raises(FlowlabInputError, match="points, above the limit"):
        basin_grid(get_model("ew"), MarkovChain(0.2, 0.3), grid=100_000)
    with pytest.raises(FlowlabInputError, match="would take about"):
        basin_grid(get_model("ew"), MarkovChain(0.2, 0.3), grid=256, max_seconds=1e-6)
    out = tmp_path / "never"
    assert main(["basins", "--p", "0.2", "--q", "0.3", "--grid", "20000", "--out", str(out)]) == 2
    assert "GiB" in capsys.readouterr().err and not out.exists()


def test_bad_inputs_exit_2(capsys):
    for argv in (
        ["basins", "--p", "0.5", "--q", "0.5", "--grid", "8"],
        ["basins", "--p", "0.5", "--q", "1.5"],
        ["basins", "--p", "0.5", "--q", "0.8", "--gaussian", "-1"],
        ["basins", "--p", "0.5", "--q", "0.8", "--gaussian", "0.1", "--grid", "8"],
        ["basins", "--model", "ewb", "--p", "0.5", "--q", "0.8", "--method", "invariant", "--grid", "4"],
        ["basins", "--p", "0.5", "--q", "0.8", "--range", "z:0:1"],
    ):
        assert main(argv) == 2, argv
        assert "error" in capsys.readouterr().err


def test_wilson_interval_closed_forms():
    z = 1.959963984540054
    assert wilson_interval(0, 2000)[0] == 0.0
    assert abs(wilson_interval(0, 2000)[1] - z * z / (2000 + z * z)) < 1e-15
    lo, hi = wilson_interval(50, 100)
    half = z * np.sqrt(0.25 / 100 + z * z / (4 * 100**2)) / (1 + z * z / 100)
    assert abs((lo + hi) / 2 - 0.5) < 1e-15 and abs(hi - lo - 2 * half) < 1e-12
    assert wilson_interval(7, 7)[1] == 1.0


@pytest.mark.parametrize("p,q,box", [
    (0.5, 0.8, {"e": (0.5, 3), "w": (-3, 3)}),  # the case: every w > 0 start is stuck
    (0.2, 0.3, {"e": (0.5, 3), "w": (-3, -0.8)}),  # p + q < 1: stuck below the separatrix
])
def test_boxes_without_the_unigram_line_label_the_same(p, q, box):
    """The unigram line e = 0 (and the saddle) lie outside these boxes; trajectories leave them."""
    g = basin_grid(get_model("ew"), MarkovChain(p, q), box, grid=24, cross_check=False)
    ref, _ = analytic_labels(p, q, g.axes["e"], g.axes["w"])
    decided = g.label != -1
    assert np.array_equal(g.label[decided], ref[decided]), np.argwhere(decided & (g.label != ref))
    assert np.mean(decided) >= 0.99 and 0.2 < np.mean(ref == 0) < 0.8
    exact = basin_grid(get_model("ew"), MarkovChain(p, q), box, grid=24, method="invariant")
    assert np.array_equal(exact.label, ref)


def test_free_bias_box_without_b_star():
    """ewb at p = 0.04, q = 0.99: b* = log(p/q) = -3.2 lies outside b in [-1, 1] (and the default range).
    For w > 0, D = e^2 (1 + 2w|w|) > 0 while D* < 0, and w keeps its sign: no start reaches H."""
    model, chain = get_model("ewb"), MarkovChain(0.04, 0.99)
    assert chain.optimal_gap < 0 and math.log(0.04 / 0.99) < -3
    g = basin_grid(model, chain, {"e": (0.5, 2), "w": (0.2, 2), "b": (-1, 1)}, grid=4)
    assert not np.any(g.label == 1) and np.mean(g.label == 0) >= 0.8, g.counts()
    r = gaussian_basin(model, chain, 0.02, 40, seed=0).as_dict()  # MODELS.md: p + q > 1, small init -> unigram
    assert r["prob_global"] == 0.0 and r["counts"]["nonglobal"] >= 30, r


def test_without_a_box_independent_level_label_1_needs_the_global_level_reached():
    """A Piecewise copy of ew: SymPy does not solve it, so no level; decided labels are still right."""
    from flowlab.systems.markov.critical import critical_sets
    from flowlab.systems.markov.models import user_model
    from flowlab.systems.markov.system import nonglobal_level

    model = user_model("Piecewise((e**2*(1 + 2*w*Abs(w))*x - e**2/2, e < 100), (0, True))", "e,w")
    chain = MarkovChain(0.2, 0.3)
    assert nonglobal_level(model, chain)[0] is None
    crit = critical_sets(model, chain, starts=64, samples=8)
    g = basin_grid(model, chain, {"e": (-2, 2), "w": (-2, 1.5)}, grid=12, crit=crit, cross_check=False,
                   settings=FlowSettings(t_max=300))
    ref, _ = analytic_labels(0.2, 0.3, g.axes["e"], g.axes["w"])
    decided = g.label != -1
    assert np.array_equal(g.label[decided], ref[decided])
    assert np.mean(g.label[ref == 1] == 1) > 0.4  # many global starts reach H by t = 300
    # label 0 needs a positive definite Hessian without the structure: the unigram line has a null direction
    assert not np.any(g.label == 0)
    assert g.as_dict()["labels"]["1"]["rule"].startswith("reached")


def test_nearly_degenerate_chain_is_refused_by_the_flow_method(capsys):
    """p + q = 1 + 1e-12: h(pi1) - H ~ 5e-25, below what float64 resolves; the invariant method is exact."""
    chain = MarkovChain(0.5, 0.5 + 1e-12)
    with pytest.raises(FlowlabInputError, match="nearly degenerate"):
        basin_grid(get_model("ew"), chain, grid=8)
    with pytest.raises(FlowlabInputError, match="nearly degenerate"):
        gaussian_basin(get_model("ewb"), chain, 0.02, 10)
    assert main(["basins", "--p", "0.5", "--q", str(0.5 + 1e-12), "--grid", "8"]) == 2
    err = capsys.readouterr().err
    assert "nearly degenerate" in err and "invariant" in err and len(err.strip().splitlines()) == 1
    g = basin_grid(get_model("ew"), chain, grid=16, method="invariant")
    ref, _ = analytic_labels(0.5, 0.5 + 1e-12, g.axes["e"], g.axes["w"])
    assert np.array_equal(g.label, ref)
