"""Model `ewb` (the bias b free, what SGD trains) at p = 0.5, q = 0.8 in 3-D: gradient flows from a
few starts, the global-minimum curve lifted by b = b*(e, w), and the unigram line.

    python examples/flow3d_ewb.py [--out flow3d_ewb.png] [--fast]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import flowlab
from flowlab.engine.io import save_figure
from flowlab.plots import markov as plots
from flowlab.systems.markov.landscape import flows_3d


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="flow3d_ewb.png", help="PNG, PDF or SVG")
    parser.add_argument("--fast", action="store_true", help="short horizon (for tests)")
    args = parser.parse_args(argv)

    model, chain = flowlab.get_model("ewb"), flowlab.MarkovChain(0.5, 0.8)
    starts = np.array([[0.02, 0.01, 0.0], [1.0, -1.5, 0.0], [0.5, 1.0, -1.0], [-1.5, -2.0, 1.0]])
    fig = plt.figure(figsize=(7.2, 6.2), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    plots.flow_3d(flows_3d(model, chain, starts, t_max=300.0 if args.fast else 1e4), ax=ax)
    save_figure(fig, args.out, dpi=150)
    print("wrote", args.out)
    return {"starts": starts}


if __name__ == "__main__":
    main()
