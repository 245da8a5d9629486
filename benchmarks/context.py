"""Finite-context benchmark: the exact expected loss over positions 1..N on many parameter points.

    python benchmarks/context.py [--points 10000] [--n 64 256] [--model ewa]

Prints one JSON object: per N, the number of distinct (x, m) terms of the dynamic programme, the time
to build them, the time for loss + gradient (bias profiled: b* solved per point) on all points, and the
same per point in a Python loop over a subsample (run in the same process) with their ratio.
"""

import argparse
import json
import time

import numpy as np

from flowlab import MarkovChain, get_model
from flowlab.systems.markov.context import ContextModel, context_terms


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--n", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--model", default="ewa")
    parser.add_argument("--subsample", type=int, default=50)
    args = parser.parse_args(argv)
    model, chain = get_model(args.model), MarkovChain(0.5, 0.8)
    theta = np.random.default_rng(0).uniform(-2, 2, size=(args.points, len(model.params)))
    out = {"model": args.model, "p": 0.5, "q": 0.8, "points": args.points, "runs": []}
    ContextModel(model, chain, 4).loss(theta[:10])  # compile
    for n in args.n:
        t = time.perf_counter()
        terms = context_terms(chain, n)
        t_terms = time.perf_counter() - t
        cm = ContextModel(model, chain, n)
        t = time.perf_counter()
        cm.loss_and_gradient(theta)
        t_all = time.perf_counter() - t
        t = time.perf_counter()
        for th in theta[: args.subsample]:
            cm.loss_and_gradient(th)
        t_loop = (time.perf_counter() - t) / args.subsample
        out["runs"].append({
            "n": n, "terms": int(terms.x.size), "dropped_mass": terms.dropped_mass, "terms_s": t_terms,
            "loss_and_gradient_s": t_all, "points_per_s": args.points / t_all,
            "per_point_loop_points_per_s": 1 / t_loop, "ratio": (args.points / t_all) * t_loop,
        })
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
