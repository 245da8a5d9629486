"""Reproduce the paper's Figure 1 for model `ew`: energy contours with the normalised flow and the
critical sets (a, c), and the basins of convergence computed by integrating the flow (b, d), for
p = q = 0.1 (p + q < 1, top) and p = q = 0.9 (p + q > 1, bottom).

    python examples/figure1.py [--out figure1.png] [--fast]

``--fast`` (used by the tests) uses a coarse basin grid and a coarse landscape.
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import flowlab
from flowlab.engine.io import save_figure
from flowlab.plots import markov as plots
from flowlab.systems.markov.landscape import basin_landscape, landscape


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figure1.png", help="PNG, PDF or SVG")
    parser.add_argument("--fast", action="store_true", help="coarse grids (for tests)")
    args = parser.parse_args(argv)

    model = flowlab.get_model("ew")
    box = {"e": (-3.0, 3.0), "w": (-3.0, 3.0)}
    grids, rows = {}, []
    for p, q in ((0.1, 0.1), (0.9, 0.9)):
        chain = flowlab.MarkovChain(p, q)
        crit = flowlab.critical_sets(model, chain, box)
        grid = flowlab.basin_grid(model, chain, box, 40 if args.fast else 256)
        plane = landscape(model, chain, crit=crit, extent=box, resolution=80 if args.fast else 300)
        rows.append((plane, grid, basin_landscape(grid, crit)))
        f = grid.fractions()
        print(f"p={p:g}, q={q:g}: global {f['global']:.3f}, unigram {f['nonglobal']:.3f}, "
              f"undetermined {f['undetermined']:.4f}")
        grids[(p, q)] = grid
    fig = plots.figure1_panels(rows)[0, 0].figure  # (a)-(d), one legend for the figure
    save_figure(fig, args.out, dpi=150)
    print("wrote", args.out)
    return grids


if __name__ == "__main__":
    main()
