"""Two flows of model `ew` at p = 0.5, q = 0.8 (the training experiment's chain) drawn over the
energy landscape: from a small Gaussian initialisation (stuck at the unigram line) and from the
guideline region (reaches the global-minimum curve).

    python examples/trajectories.py [--out trajectories.png] [--fast]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import flowlab
from flowlab.engine.io import save_figure
from flowlab.plots import markov as plots
from flowlab.systems.markov.landscape import landscape


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="trajectories.png", help="PNG, PDF or SVG")
    parser.add_argument("--fast", action="store_true", help="coarse landscape, short horizon (for tests)")
    args = parser.parse_args(argv)

    model, chain = flowlab.get_model("ew"), flowlab.MarkovChain(0.5, 0.8)
    box = {"e": (-2.5, 2.5), "w": (-2.5, 2.5)}
    starts = {"small init": [0.02, 0.01], "guideline": [1.0, -1.5], "other": [-1.8, 0.6]}
    results = {k: flowlab.gradient_flow(model, chain, v, t_max=300.0 if args.fast else 1e4) for k, v in starts.items()}
    for k, r in results.items():
        print(f"{k:>10}: reached {r.reached}, loss {r.final_loss:.4f}")
    fig, ax = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
    plots.trajectories(list(results.values()), ax=ax, background=landscape(model, chain, extent=box))
    save_figure(fig, args.out, dpi=150)
    print("wrote", args.out)
    return results


if __name__ == "__main__":
    main()
