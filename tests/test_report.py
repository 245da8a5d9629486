"""The demo's report text, built from small section results (without running the whole demo)."""

import math
import re
from pathlib import Path

import pytest

from conftest import SEPARATRIX, ref_basin, ref_energy

ROOT = Path(__file__).resolve().parents[1]
#: Wording of the implementation that a reader of the report must not meet.
INTERNAL = ("rejected candidate", "candidate from the pair", "failed the check", "is not offered")


def _guideline_flow(p, q, model, start):
    """A flow entry of the demo's flows section from ``start`` (the guideline slot)."""
    from flowlab.report.markov import guideline_check
    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.flow import gradient_flow
    from flowlab.systems.markov.models import get_model

    chain = MarkovChain(p, q)
    m = get_model(model)
    res = gradient_flow(m, chain, [start.get(k, 0.0) for k in m.params])
    return {"init_label": "guideline", "trajectory": "x.npz", "guideline": guideline_check(chain, res), **res.as_dict()}


def test_one_guideline_from_guide_in_flows_and_figure4():
    """The flows and Figure 4 start from one point, the one guide() picks for Figure 4's chain."""
    from flowlab.report import markov as report
    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.guide import guide
    from flowlab.systems.markov.train import canonical_init

    chain = MarkovChain(*report.FIGURE4_CHAIN)
    point = guide(chain)["point"]
    assert report.guideline_point() == point
    assert canonical_init(chain, "guideline")[1].tolist() == [point["e"], point["w"], point["b"]]
    assert not hasattr(report, "GUIDELINE")  # no second, hard-coded guideline
    flows = [_guideline_flow(p, q, "ew", report.guideline_point()) for p, q in report.CHAINS]
    text = "\n".join(report.flows_report(flows))
    training = {"canonical": {"guideline": {"initial": [point], "mean": 0.5, "std": 0.0, "final_losses": [0.5]}},
                "levels": {"unigram": chain.unigram_loss}, "optimal_loss": chain.entropy_rate}
    figure4 = "\n".join(report.training_report({"summary": training, "transformer": False}))
    shown = {m for t in (text, figure4) for m in re.findall(r"\(e, w(?:, b)?\) = \(([-\d.]+), ([-\d.]+)", t)}
    assert shown == {(f"{point['e']:g}", f"{point['w']:g}")}


def test_guideline_judged_by_the_conserved_energy():
    """E at the start and the exact basin of ew (MODELS.md section 3, written out in conftest)."""
    from flowlab.report.markov import guideline_point

    point = guideline_point()
    for p, q in ((0.1, 0.1), (0.9, 0.9), (0.5, 0.8)):
        g = _guideline_flow(p, q, "ew", point)["guideline"]
        assert g["energy"] == pytest.approx(ref_energy(point["e"], point["w"]), abs=1e-12)
        assert g["separatrix"] == pytest.approx(SEPARATRIX, abs=1e-12)
        assert g["in_I_star"] == (ref_basin(p, q, point["e"], point["w"]) == "global")


def test_a_guideline_start_that_ends_stuck_is_explained_with_numbers():
    """(1, -1.5) is in I* of ew at p = q = 0.1 by 0.002 in E, yet ewb's free bias carries it across."""
    from flowlab.report.markov import flow_notes

    e0 = ref_energy(1.0, -1.5)
    assert 0 < e0 - SEPARATRIX < 0.01 and ref_basin(0.1, 0.1, 1.0, -1.5) == "global"
    entry = _guideline_flow(0.1, 0.1, "ewb", {"e": 1.0, "w": -1.5})
    assert entry["reached"] == "local"
    note = "\n".join(flow_notes([entry]))
    assert f"E = {e0:.4f}" in note and f"E_sep = {SEPARATRIX:.4f}" in note and "not conserved" in note
    assert entry["guideline"]["final_energy"] < SEPARATRIX  # the flow did cross the separatrix
    # a start in I_min (w > 0 when p + q > 1): said so, with this chain's I*
    stuck = _guideline_flow(0.9, 0.9, "ew", {"e": 1.0, "w": 0.5})
    assert stuck["reached"] == "local" and ref_basin(0.9, 0.9, 1.0, 0.5) == "local"
    assert "lies in I_min" in "\n".join(flow_notes([stuck]))
    # expected outcomes need no note: a small start at p + q > 1 stuck, a guideline start that reaches global
    small = {**_guideline_flow(0.9, 0.9, "ew", {"e": 0.01, "w": 0.01}), "init_label": "small Gaussian"}
    assert small["reached"] == "local"
    assert flow_notes([small, _guideline_flow(0.5, 0.8, "ew", {"e": 1.0, "w": -1.5})]) == []


def test_ewa_sets_are_printed_at_the_chain():
    """p and q are substituted (exact) into the sets' text and LaTeX; the regions table keeps them symbolic."""
    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.critical import critical_sets
    from flowlab.systems.markov.models import get_model

    box = {"e": (-3.0, 3.0), "w": (-3.0, 3.0), "a": (-3.0, 3.0)}
    chain = MarkovChain(0.5, 0.8)
    bound = critical_sets(get_model("ewa"), chain, box, method="symbolic", samples=20)
    free = critical_sets(get_model("ewa"), chain, box, method="symbolic", samples=20, chain_free=True)
    symbol = re.compile(r"(?<![A-Za-z_\\])[pq](?![A-Za-z_])|\\pi")
    assert any(symbol.search(s.text) for s in free.sets)  # the test can fail
    for s in bound.sets:
        for field in (s.text, s.equation, s.location, s.location_latex):
            assert not symbol.search(field), field
    assert [s.kind for s in bound.sets] == [s.kind for s in free.sets]
    # the saddle's printed w(a) is the closed form w = -1/sqrt(2 (1 + 2a (pi1 - 1/2))) (MODELS.md section 4)
    saddle = next(s for s in bound.sets if s.kind == "saddle")
    pi1 = 0.5 / 1.3
    for e, w, a in saddle.points:
        assert e == 0 and w == pytest.approx(-1 / math.sqrt(2 * (1 + 2 * a * (pi1 - 0.5))), rel=1e-9)
    assert "w = -sqrt(" in saddle.text and "13" in saddle.text


def test_invariants_are_reported_in_words():
    from flowlab.report.markov import invariants_lines
    from flowlab.systems.markov.invariants import derive_invariants
    from flowlab.systems.markov.models import get_model

    inv = {name: derive_invariants(get_model(name)).as_dict() for name in ("ew", "ewa")}
    text = "\n".join(invariants_lines(inv))
    for word in INTERNAL:
        assert word not in text.lower()
    assert "E = e^2 - w^2" in text or "e**2 - w**2" in text


def test_readme_and_report_agree_on_adam():
    """The demo trains with SGD only; the README must not promise that its report discusses Adam runs."""
    import inspect

    from flowlab.report import markov as report

    assert "adam=False" in inspect.getsource(report.MarkovSections.training)
    readme = (ROOT / "README.md").read_text()
    adam = [s for s in re.split(r"(?<=\.)\s", readme) if "Adam" in s]
    assert adam and not any("report" in s and "demo does not" not in s for s in adam), adam
    text = "\n".join(report.training_report({"summary": {"levels": {"unigram": 0.6}, "optimal_loss": 0.5},
                                              "transformer": True}))
    assert "Only SGD is run here" in text and "--optimizer adam" in text and "--optimizer adam" in readme


def test_missing_pdflatex_is_said_with_the_install_line():
    from flowlab.report.markov import derivations_report

    ids = {"ew": {"a": True}}
    without = "\n".join(derivations_report(ids, ["derivation_ew.md", "derivation_ew.tex"]))
    assert "pdflatex" in without and "apt-get install texlive-latex-base" in without
    assert "pdflatex" not in "\n".join(derivations_report(ids, ["derivation_ew.pdf"]))



def test_ewa_section_defines_its_symbols_with_the_chain_values():
    from flowlab.report.markov import attention_report

    sec = {"critical": {"0.2,0.3": {"file": "c.json", "complete": True, "sets": []}}, "slices": [], "invariants": {},
           "context": {"theta": {"e": 1.0, "w": -1.2, "a": 0.8}, "long_context_loss": 0.6, "losses": {"4": 0.7}}}
    text = "\n".join(attention_report(sec))
    assert f"0.2,0.3: D* = {math.log(0.8 * 0.7 / (0.2 * 0.3)):.6f}" in text
    assert "(e, w, a) = (1, -1.2, 0.8)" in text and "{'e'" not in text
