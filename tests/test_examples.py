"""Every example runs in its fast mode and lands where MODELS.md says."""

import runpy
import sys
from pathlib import Path

import pytest

from conftest import ref_basin

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_fast_mode(path, tmp_path, monkeypatch):
    out = tmp_path / "fig.png"
    monkeypatch.setattr(sys, "argv", [str(path), "--fast", "--out", str(out)])
    results = runpy.run_path(str(path), run_name="not_main")["main"]()
    assert out.stat().st_size > 10_000
    if path.name == "first_flow.py":
        for res in results.values():
            e, w = res.theta[0]
            assert res.reached == ref_basin(0.5, 0.8, e, w)
