"""The word co-occurrence transformer of Yang et al. (NeurIPS 2024): the paper's Figure 1 and its
claims, from the exact Gram flow.

A one-layer transformer (all four matrices trained) learns to say whether the two target words
mu_1, mu_2 both occur in a sample. The Gram flow follows gradient flow exactly whatever the widths
m, m1 (MODELS.md section 6). Prints the claims table (each claim of the paper: holds yes / no /
undecided, with what was measured) and saves Figure 1: (a) the attention correlations
mu_i^T W_K^T W_Q mu_j with the phase boundary T1, (b) the training loss, total and per type.

    python examples/cooccurrence.py [--out cooccurrence.png] [--seed 0] [--fast]

Default: the paper's setting (n = 60, L = 5, d = 64, m = 128, m1 = 256) for 300 units of flow time
(= 30 000 epochs at lr 0.01). ``--fast`` (used by the tests) uses a 24-word vocabulary.
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from flowlab.engine.io import save_figure
from flowlab.plots import cooccurrence as cooccurrence_plots
from flowlab.systems.cooccurrence.claims import evaluate_claims, run_engine


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="cooccurrence.png", help="figure file (.png, .pdf or .svg)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the initial Grams")
    parser.add_argument("--fast", action="store_true", help="a 24-word vocabulary (for tests)")
    args = parser.parse_args(argv)

    sizes = {"n": 60, "L": 5, "d": 24 if args.fast else 64, "m": 128, "m1": 256}
    traj = run_engine("gram", seed=args.seed, t_max=300.0, points=200 if args.fast else 600, **sizes)
    result = evaluate_claims(traj)
    print(f"Gram flow, {sizes}: T1 = {result.T1:.4g}, final loss {result.final_loss:.3g}; {result.message}")
    mark = {True: "yes", False: "NO", None: "undecided"}
    for c in result.claims:
        print(f"  {mark[c['holds']]:>9}  {c['id']:<26} {c['statement']}")
    axes = cooccurrence_plots.figure1(traj, T1=result.T1)
    save_figure(axes[0].figure, args.out)
    plt.close(axes[0].figure)
    print(f"wrote {args.out}")
    return {"trajectory": traj, "claims": result}


if __name__ == "__main__":
    main()
