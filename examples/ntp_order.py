"""The ntp_order system (this project's reconstruction of Huang, Liang, Yang, NeurIPS 2024; MODELS.md §7):
the quoted experiment |V| = d = 20 with steps 0.2/sqrt(d) and 0.05/sqrt(d), for one or more seeds.

Prints, per seed, the cosines to the max-margin targets W_ov*, W_kq* (cvxpy + Clarabel), the fitted
rates (directional error exponent, norm slope, geometric loss rate, each with R^2) and the accuracy
on training sentences, on unseen sentences whose optimum the transitive closure implies, and on
unseen sentences whose optimum it does not imply (reported, not credited). Draws the reconstructed
Figure 2 (six panels) of the first seed to --out and its partial-order picture next to it.

    python examples/ntp_order.py [--out ntp_order.png] [--seeds 0 1 2] [--fast]

``--fast`` (used by the tests) stops stage 2 after 2000 iterations (the default is 20000).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from flowlab.engine.io import save_figure
from flowlab.plots import ntp_order as plots
from flowlab.systems import ntp_order


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="ntp_order.png", help="Figure 2 file (.png, .pdf or .svg)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="data and initialisation seeds")
    parser.add_argument("--fast", action="store_true", help="2000 stage-2 iterations (for tests)")
    args = parser.parse_args(argv)

    results = {}
    for seed in args.seeds:
        data = ntp_order.generate(20, 200, seed=seed)
        r = ntp_order.run_experiment(data, seed=seed, **({"steps2": 2000} if args.fast else {}))
        results[seed] = r
        a = r.accuracy
        print(f"seed {seed}: cos(W_ov, W_ov*) = {r.stage1.cos:.6f}, cos(W_kq, W_kq*) = {r.stage2.cos:.6f}; "
              f"accuracy train {a['train']:.3f}, unseen implied {a['unseen_implied']:.3f}, "
              f"unseen not implied {a['unseen_not_implied']:.3f} (not credited); solver {r.solver['status']}")
        for name, s in (("stage 1", r.stage1), ("stage 2", r.stage2)):
            print(f"  {name}: |W| slope {s.norm_slope.value:.5f} (R2 {s.norm_slope.r2:.5f}), "
                  f"1-cos ~ t^-{s.dir_rate.value:.3f} (R2 {s.dir_rate.r2:.4f}), "
                  f"loss excess ~ {s.loss_rate.value:.6f}^t (R2 {s.loss_rate.r2:.4f})")
    first = results[args.seeds[0]]
    out = Path(args.out)
    axes = plots.figure2(first)
    save_figure(axes[0, 0].figure, out, dpi=150)
    plt.close(axes[0, 0].figure)
    ax = plots.partial_order(first)
    order = out.with_name(out.stem + "_order" + out.suffix)
    save_figure(ax.figure, order, dpi=150)
    plt.close(ax.figure)
    print("wrote", out, "and", order)
    return results


if __name__ == "__main__":
    main()
