# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---
# %% [markdown]
# # The phase diagram of `ew`: which small initialisations reach the bigram model
#
# A jupytext notebook (``jupytext --to notebook examples/phase_diagram.py`` makes the .ipynb; it also
# runs as a script):
#
#     python examples/phase_diagram.py [--out phase_diagram.png] [--fast]
#
# It runs a sweep over (sigma, p, q) on a local Dask cluster into a Zarr store next to ``--out``
# (a rerun resumes it), opens the store with xarray and draws P(global | p, q) at the smallest sigma
# with the line p + q = 1 and the paper's prediction, and P(global) against sigma for a few chains.
# ``--fast`` (used by the tests): a 5 x 5 grid, two sigmas, 20 starts, one thread worker.

# %%
import argparse
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import xarray as xr

import flowlab
from flowlab.engine.io import save_figure
from flowlab.plots import sweep as plots


def main(argv=None):
    parser = argparse.ArgumentParser(description="The phase diagram of ew from a sweep")
    parser.add_argument("--out", default="phase_diagram.png", help="PNG, PDF or SVG")
    parser.add_argument("--fast", action="store_true", help="a small sweep (for tests)")
    args = parser.parse_args(argv)
    n, sigmas, starts = (5, [0.02, 1.0], 20) if args.fast else (16, [0.02, 0.1, 0.5, 1.0, 2.0], 500)

    # %% the sweep (a rerun with the same settings resumes the store)
    store = Path(args.out).with_suffix(".zarr")
    result = flowlab.sweep("markov", store, p=[0.05 + 0.9 * i / (n - 1) for i in range(n)],
                           q=[0.07 + 0.9 * i / (n - 1) for i in range(n)], sigma=sigmas, starts=starts,
                           model="ew", workers=1 if args.fast else None, processes=not args.fast)
    print(result.message)

    # %% open the Dataset with xarray: dims (sigma, p, q), one variable per measured quantity
    warnings.filterwarnings("ignore", message=".*flowlab-sweep.*not recognized")  # flowlab's manifest and lock
    ds = xr.open_zarr(store, consolidated=False).load()
    print(ds)

    # %% the phase diagram and P(global) against sigma
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.3), constrained_layout=True)
    plots.phase_diagram(ds, sigma=min(sigmas), ax=axes[0])
    p, q = ds["p"].values, ds["q"].values
    plots.prob_vs_sigma(ds, [(p[1], q[1]), (p[-2], q[-2])], ax=axes[1])
    save_figure(fig, args.out)
    return ds


if __name__ == "__main__":
    main()
