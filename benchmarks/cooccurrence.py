"""Cooccurrence benchmark: the paper's GD experiment and a Gram flow at m = 10⁶, m1 = 10⁴.

    python benchmarks/cooccurrence.py [--epochs 30000] [--baseline-epochs 20] [--seed 0]

Prints one JSON object. Timings are wall-clock on this machine. The baseline, run in the same
process, is a straightforward implementation of the same GD step: Eq. 1 and the Appendix-B
gradients evaluated sample by sample and query by query (``full.direct_loss_and_grad``) with plain
weight updates, for ``--baseline-epochs`` epochs, extrapolated to ``--epochs``; the ratio says how
much faster the vectorised, (h, A)-reduced step is. Both runs start from the same weights and the
benchmark checks they agree after the baseline's epochs. The Gram flow runs until the loss is 10⁻⁶
(its state does not depend on m, m1: 1 + d + 4d² numbers).
"""

import argparse
import json
import time

import numpy as np


def _baseline(data, weights, lr, epochs):
    """Plain GD with the per-sample reference gradient."""
    from flowlab.systems.cooccurrence.full import Weights, direct_loss_and_grad

    w = weights
    for _ in range(epochs):
        _, g = direct_loss_and_grad(data, w)
        w = Weights(w.W - lr * g.W, w.WV - lr * g.WV, w.WK - lr * g.WK, w.WQ - lr * g.WQ, w.a)
    return w


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30_000)
    parser.add_argument("--baseline-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss-target", type=float, default=1e-6)
    args = parser.parse_args(argv)

    from flowlab.systems.cooccurrence import full, gram
    from flowlab.systems.cooccurrence.data import training_set

    out = {"setting": {"n": 60, "L": 5, "d": 64, "m": 128, "m1": 256, "lr": 0.01,
                       "epochs": args.epochs, "init": full.PAPER_INIT, "seed": args.seed}}
    data = training_set(60, 5, 64, args.seed)
    weights = full.init_weights(64, 128, 256, L=5, seed=args.seed, init=full.PAPER_INIT)

    t = time.perf_counter()
    w_base = _baseline(data, weights, 0.01, args.baseline_epochs)
    base_s = time.perf_counter() - t
    _, w_fast = full.gradient_descent(data, weights, lr=0.01, epochs=args.baseline_epochs,
                                      record_every=args.baseline_epochs)
    out["baseline_agreement_max_abs"] = float(np.max(np.abs(w_fast.flat() - w_base.flat())))
    out["baseline_s_per_epoch"] = base_s / args.baseline_epochs

    t = time.perf_counter()
    traj, _ = full.gradient_descent(data, weights, lr=0.01, epochs=args.epochs, record_every=100)
    gd_s = time.perf_counter() - t
    out["gd_s"] = gd_s
    out["gd_s_per_epoch"] = gd_s / args.epochs
    out["gd_final_loss"] = float(traj.loss[-1])
    out["baseline_extrapolated_s"] = out["baseline_s_per_epoch"] * args.epochs
    out["gd_speedup_over_baseline"] = out["baseline_extrapolated_s"] / gd_s

    m, m1 = 10**6, 10**4
    t = time.perf_counter()
    state = gram.wishart_grams(64, m, m1, L=5, seed=args.seed)
    flow = gram.gram_flow(data, state, m, m1, loss_target=args.loss_target,
                          t_max=1e14 * gram.time_unit(state, m1))
    gram_s = time.perf_counter() - t
    out["gram_flow"] = {"m": m, "m1": m1, "seconds": gram_s, "status": flow.status,
                        "message": flow.message, "loss_final": float(flow.loss[-1]),
                        "t_final": float(flow.t[-1]), "T1": flow.extra["T1_event"],
                        "nfev": flow.extra["nfev"], "invariant_drift": flow.invariant_drift()}
    out["gram_full_weights_equivalent"] = {"weights": m1 * m + 3 * m * 64,
                                           "gram_state": 1 + 64 + 4 * 64 * 64}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
