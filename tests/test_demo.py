"""The main job (README's first command) in-process, and the README/CI promises."""

import json
import re
import shutil
from pathlib import Path

import numpy as np

from conftest import ref_basin

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_a_consistent_report(tmp_path):
    from flowlab import run_demo

    # the transformer runs in a second process (the path a machine with a free core takes; the results are the
    # same as in-process: seeded, one thread); their verdicts are checked below like the rest
    summary = run_demo(tmp_path / "out", quiet=True, fast=True, parallel=True)
    out = tmp_path / "out"
    assert "second process (transformer runs, other systems)" in summary["seconds_by_phase"]
    assert not list(tmp_path.glob(".out.partial-*"))
    from test_schema import documented_keys, vocabulary_errors  # the JSON vocabulary (docs/schema.md)

    assert vocabulary_errors(summary) == []
    for section, part in (("demo-summary", summary), ("cooccurrence-summary", summary["cooccurrence"]),
                          ("ntp-order-summary", summary["ntp_order"]), ("demo-sweep-summary", summary["sweep"]),
                          ("figure4-summary", summary["training"]["summary"])):
        assert set(part) <= documented_keys()[section], (section, set(part) - documented_keys()[section])
    for name in summary["files"]:
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "summary.json").read_text())["files"] == summary["files"]
    report = (out / "report.md").read_text()
    made_pdfs = (out / "derivation_ew.pdf").exists()
    assert made_pdfs == bool(shutil.which("pdflatex"))
    assert ("PDFs were **not made**" in report) != made_pdfs  # a skipped step is said, with the install line
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert (out / link).exists(), link
    for figure in ("figure1", "loss_curves", "trajectories", "flow3d_ewb"):
        assert f"({figure}.png)" in report
        png = (out / f"{figure}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        assert (out / f"{figure}.pdf").read_bytes()[:5] == b"%PDF-"
    for flow in summary["flows"]:
        c = flow["chain"]
        if flow["model"] == "ew":
            e, w = flow["initial"]["e"], flow["initial"]["w"]
            assert flow["reached"] == ref_basin(c["p"], c["q"], e, w), flow
            assert flow["energy_drift"] < 1e-6
        with np.load(out / flow["trajectory"], allow_pickle=False) as data:
            assert data["loss"][-1] == flow["loss"]
    assert all(all(v.values()) for v in summary["derivations"].values())
    ew_grids = [b for b in summary["basins"] if b["model"] == "ew"]
    assert len(ew_grids) == 3  # Figure 1's two chains and Figure 4's
    for b in ew_grids:  # ew has the invariant method: its flow labels must be cross-checked
        assert b["cross_check"] is not None and b["cross_check"]["points_far_from_separatrix"] > 0, b
        assert b["cross_check"]["agreement_far"] >= 0.999
    for b in summary["basins"]:
        with np.load(out / b["dir"] / "basins.npz", allow_pickle=False) as data:
            assert data["label"].size == b["counts"]["total"]
    for g in summary["gaussian"]:
        below = g["chain"]["p"] + g["chain"]["q"] < 1
        assert (g["prob_global"] > 0.95) if below else (g["prob_global"] < 0.05), g
    sweep = summary["sweep"]  # the dask extra is installed for the tests
    assert sweep["status"] == "completed" and sweep["decided"] + sweep["degenerate_cells"] == sweep["cells"]
    assert sweep["agree"] == sweep["decided"] > 0, sweep  # MODELS.md: a small init is global iff p + q < 1
    for name in ("ew", "ewb"):
        table = summary["critical"][name]["table"]
        assert table["complete"] is True and all(r["complete"] is True for r in table["regions"].values())
    # Figure 4 at p = 0.5, q = 0.8 (p + q > 1): MODELS.md says a small init stays at the unigram model and the
    # guideline point (in I*) reaches the bigram model; the verdicts must say so (or undetermined, never the other)
    training = summary["training"]["summary"]
    for group in ("canonical", "transformer"):
        for init, expected in (("standard", "local"), ("guideline", "global")):
            runs = (training.get(group) or {}).get(init)
            if runs is None:
                assert group == "transformer" and not summary["training"]["transformer"]
                continue
            assert set(runs["predicted"]) == {expected}, (group, init, runs["predicted"])
            assert set(runs["reached"]) <= {expected, "undetermined"}, (group, init, runs["reached"])
    assert set(training["canonical"]["standard"]["reached"]) == {"local"}  # exact losses: decided


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1).strip()
    main_cmd = re.search(r"<!-- main-command -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1).strip()
    assert "flowlab demo" in main_cmd
    assert "pytest" in test_cmd
    # CI runs exactly the README's test command (after installing pdflatex)
    assert test_cmd in ci
