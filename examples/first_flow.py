"""Derive model `ew`, then integrate the gradient flow at p = 0.5, q = 0.8 from a small
initialisation (stuck at the unigram model) and from the guideline region (reaches the
bigram model), and plot both loss curves.

    python examples/first_flow.py [--out first_flow.png] [--fast]

``--fast`` (used by the tests) integrates over a shorter horizon.
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import flowlab
from flowlab.plots.markov import loss_curve


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="first_flow.png")
    parser.add_argument("--fast", action="store_true", help="short horizon (for tests)")
    args = parser.parse_args(argv)

    chain = flowlab.MarkovChain(0.5, 0.8)
    model = flowlab.get_model("ew")
    d = flowlab.derive(model)
    print("D(e, w) =", d.gap)
    print("identities proved:", sum(i.verified for i in d.identities), "/", len(d.identities))
    t_max = 200.0 if args.fast else 1e4
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    results = {}
    for label, theta0 in (("small init", [0.02, 0.01]), ("guideline", [1.0, -1.5])):
        res = flowlab.gradient_flow(model, chain, theta0, t_max=t_max, dense_output=400)  # smooth loss curve
        loss_curve(res, ax, label=f"{label}: {res.reached}", references=label == "small init")
        print(f"{label:>10}: reached {res.reached}, loss {res.final_loss:.4f}, E drift {res.energy_drift:.1e}")
        results[label] = res
    ax.set_title(r"model ew, $p=0.5$, $q=0.8$")
    fig.savefig(args.out, dpi=150)
    print("wrote", args.out)
    return results


if __name__ == "__main__":
    main()
