"""The sweep section of ``flowlab demo``: a small phase diagram P(global | p, q) of ``ew`` from a small
Gaussian initialisation, computed by the Dask sweep engine into a Zarr store and read back with xarray.

The demo runs it on one in-process worker (no worker processes to start: the grid is small); the same
call with more workers or a scheduler address is what ``flowlab sweep markov`` runs at full size.
Without the ``dask`` extra the section says so and how to install it.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path

import numpy as np

#: (p, q) grid per axis, Gaussian starts per cell, the Gaussian scale (the paper's small initialisation).
GRID, STARTS, SIGMA = 12, 1000, 0.02
FAST_GRID, FAST_STARTS = 4, 200
#: Each start labelled by the conserved energy E of ``ew`` (exact, MODELS.md section 3; ``flowlab sweep markov
#: --method invariant``) rather than by integrating its flow: the Gaussian section integrates the flows.
METHOD = "invariant"
SUBFOLDER = "sweep"
#: Modules the section needs (the ``dask`` extra).
NEEDS = ("dask", "distributed", "xarray", "zarr")


def axis(n: int) -> np.ndarray:
    """n chain parameters evenly inside (0, 1): cell centres of n equal bins (p + q = 1 on the anti-diagonal)."""
    return (np.arange(n) + 0.5) / n


def section(out: Path, *, fast: bool, quiet: bool) -> dict:
    """Run the sweep into ``out/sweep/phase.zarr``, draw the phase diagram; a JSON-ready summary."""
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        return {"status": "skipped", "files": [], "message": f"not run: {', '.join(missing)} not installed "
                "(pip install 'flowlab[dask]')"}
    from flowlab.systems.sweeps import sweep

    start = time.perf_counter()
    folder = Path(out) / SUBFOLDER
    n, starts = (FAST_GRID, FAST_STARTS) if fast else (GRID, STARTS)
    with warnings.catch_warnings():  # Dask's note that its default dashboard port is taken (none is used here)
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        result = sweep("markov", folder / "phase.zarr", p=axis(n), q=axis(n), sigma=[SIGMA], model="ew",
                       starts=starts, seed=0, method=METHOD, workers=1, processes=False, quiet=quiet)
    ds = result.open()
    summary = {"status": "completed", "grid": n, "starts": starts, "sigma": SIGMA, "model": "ew", "method": METHOD,
               "cells": result.cells, "workers": result.workers, **agreement(ds)}
    files = [f"{SUBFOLDER}/phase.zarr", *_figure(ds, folder)]
    summary["message"] = (f"{summary['agree']} of {summary['decided']} computed cells agree with the prediction "
                          f"(it lies in the cell's 95% interval); {summary['degenerate_cells']} cells on p + q = 1")
    return {**summary, "files": files, "seconds": time.perf_counter() - start}


def agreement(ds) -> dict:
    """Cells whose 95% interval contains the paper's prediction for a small initialisation: P(global) = 1 for
    p + q < 1 and 0 for p + q > 1; the mean P(global) on each side; cells on p + q = 1 (degenerate)."""
    cut = ds.isel(sigma=0)
    p, q = np.meshgrid(cut["p"].values, cut["q"].values, indexing="ij")
    prob = np.asarray(cut["prob_global"].transpose("p", "q").values, float)
    lo = np.asarray(cut["ci_low"].transpose("p", "q").values, float)
    hi = np.asarray(cut["ci_high"].transpose("p", "q").values, float)
    done = np.isfinite(prob)
    below, above = done & (p + q < 1), done & (p + q > 1)
    agree = (below & (hi >= 1.0)) | (above & (lo <= 0.0))
    return {"decided": int(done.sum()), "agree": int(agree.sum()), "degenerate_cells": int((~done).sum()),
            "mean_below": float(prob[below].mean()) if below.any() else None,
            "mean_above": float(prob[above].mean()) if above.any() else None,
            "disagree": [{"p": float(a), "q": float(b), "prob_global": float(c)}
                         for a, b, c in zip(p[done & ~agree], q[done & ~agree], prob[done & ~agree])]}


def _figure(ds, folder: Path) -> list[str]:
    import matplotlib.pyplot as plt

    from flowlab.engine.io import save_figures
    from flowlab.plots import sweep as plots

    fig = plots.phase_diagram(ds).figure
    try:
        return [f"{SUBFOLDER}/{path.name}" for path in save_figures(fig, folder / "phase_diagram", dpi=150)]
    finally:
        plt.close(fig)


def report_lines(summary: dict) -> list[str]:
    """The Markdown of the section."""
    lines = ["## Sweep: the phase diagram over (p, q)", ""]
    if summary["status"] != "completed":
        return lines + [f"Sweep {summary['message']}.", ""]
    s = summary
    lines += [
        f"P(global) of `ew` from {s['starts']} Gaussian starts (σ = {s['sigma']}) per chain on a {s['grid']} × "
        f"{s['grid']} grid of (p, q) (cell centres in (0, 1)), each start labelled by the conserved energy E of `ew` "
        "(exact; `--method invariant`; the Gaussian section above integrates the flows), computed tile by tile by "
        "the Dask sweep engine "
        f"({s['workers']} in-process worker) into a Zarr store and read back with xarray "
        f"(`xarray.open_zarr('{SUBFOLDER}/phase.zarr', consolidated=False)`). `flowlab sweep markov` runs the same "
        "at full size, on a laptop or a cluster.",
        "",
        f"The prediction for a small initialisation (global minimum for p + q < 1, the unigram model for "
        f"p + q > 1) lies in the 95% Wilson interval of {s['agree']} of the {s['decided']} computed cells; mean "
        f"P(global): {_mean(s['mean_below'])} below the line p + q = 1, {_mean(s['mean_above'])} above it. "
        f"{s['degenerate_cells']} cells lie on p + q = 1 (unigram = bigram: not computed).",
    ]
    if s["disagree"]:
        cells = ", ".join(f"(p, q) = ({d['p']:g}, {d['q']:g}): {d['prob_global']:.3f}" for d in s["disagree"])
        lines += ["", f"Cells whose interval excludes the prediction: {cells}."]
    return lines + ["", f"![Phase diagram]({SUBFOLDER}/phase_diagram.png)", ""]


def _mean(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
