"""Every example runs in its fast mode and lands where MODELS.md says."""

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SEPARATRIX, ref_basin, ref_energy

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_fast_mode(path, tmp_path, monkeypatch):
    out = tmp_path / "fig.png"
    monkeypatch.setattr(sys, "argv", [str(path), "--fast", "--out", str(out)])
    results = runpy.run_path(str(path), run_name="not_main")["main"]()
    assert out.stat().st_size > 10_000
    if path.name in ("first_flow.py", "trajectories.py"):
        for res in results.values():
            e, w = res.theta[0]
            assert res.reached == ref_basin(0.5, 0.8, e, w)
    if path.name == "figure1.py":
        for (p, q), grid in results.items():
            e, w = grid.axes["e"], grid.axes["w"]
            ref = np.array([[1 if ref_basin(p, q, a, b) == "global" else 0 for b in w] for a in e])
            far = np.array([[abs(ref_energy(a, b) - SEPARATRIX) > 0.05 for b in w] for a in e])
            assert np.array_equal(grid.label[far], ref[far])
    if path.name == "ntp_order.py":
        for r in results.values():
            assert r.status == "completed" and r.solver["status"] == "optimal"
            # a normalised step of size eta moves |W| by at most eta
            for trace in (r.run.stage1, r.run.stage2):
                assert np.all(np.diff(trace.norm) <= trace.lr * (1 + 1e-12))
            # from a small init stage 1 moves along W_ov* (column x: e_n(x) - 1/K, MODELS.md section 7)
            assert r.stage1.cos > 0.999
            assert (out.parent / "fig_order.png").stat().st_size > 10_000
    if path.name == "cooccurrence.py":
        traj = results["trajectory"]
        # gradient flow: the loss never rises and both Gram invariants are conserved (MODELS.md section 6)
        assert np.all(np.diff(traj.loss) <= 1e-12 * traj.loss[:-1])
        assert max(traj.invariant_drift()) <= 1e-8
        assert results["claims"].T1 is not None
