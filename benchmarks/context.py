"""Finite-context benchmark: the exact expected loss over positions 1..N on many parameter points.

    python benchmarks/context.py [--points 10000] [--n 64 256] [--model ewa] [--baseline 2a8dcfe]

Prints one JSON object: per N, the number of distinct (x, m) terms of the dynamic programme, the time
to build them, the time for loss + gradient (bias profiled: b* solved per point) on all points, and the
same per point in a Python loop over a subsample (run in the same process) with their ratio.
``--baseline REV`` also runs ``flowlab/systems/markov/context.py`` as it was at git revision REV (loaded
from ``git show``, in this process) on ``--baseline-points`` of the points: its points/s, the ratio, and
the largest relative difference of the values.
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flowlab import MarkovChain, get_model
from flowlab.systems.markov.context import ContextModel, context_terms


def baseline_module(rev: str):
    """flowlab/systems/markov/context.py at git revision ``rev``, imported as a separate module."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{rev}:flowlab/systems/markov/context.py"], cwd=root, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "context_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("context_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["context_baseline"] = module
    spec.loader.exec_module(module)
    return module


def compare(old_cls, model, chain, n, theta, new_values, new_rate) -> dict:
    cm = old_cls(model, chain, n)
    t = time.perf_counter()
    loss, grad = cm.loss_and_gradient(theta)
    rate = len(theta) / (time.perf_counter() - t)
    ref = np.concatenate([loss[:, None], grad], axis=1)
    new = np.concatenate([new_values[0][: len(theta), None], new_values[1][: len(theta)]], axis=1)
    return {"points": len(theta), "points_per_s": rate, "ratio_new_vs_baseline": new_rate / rate,
            "max_relative_difference": float(np.max(np.abs(new - ref) / np.abs(ref)))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--n", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--model", default="ewa")
    parser.add_argument("--subsample", type=int, default=50)
    parser.add_argument("--baseline", metavar="REV", help="also run context.py of this git revision")
    parser.add_argument("--baseline-points", type=int, default=500)
    args = parser.parse_args(argv)
    old = baseline_module(args.baseline) if args.baseline else None
    model, chain = get_model(args.model), MarkovChain(0.5, 0.8)
    theta = np.random.default_rng(0).uniform(-2, 2, size=(args.points, len(model.params)))
    out = {"model": args.model, "p": 0.5, "q": 0.8, "points": args.points, "baseline": args.baseline, "runs": []}
    ContextModel(model, chain, 4).loss(theta[:10])  # compile
    for n in args.n:
        t = time.perf_counter()
        terms = context_terms(chain, n)
        t_terms = time.perf_counter() - t
        cm = ContextModel(model, chain, n)
        t = time.perf_counter()
        values = cm.loss_and_gradient(theta)
        t_all = time.perf_counter() - t
        t = time.perf_counter()
        for th in theta[: args.subsample]:
            cm.loss_and_gradient(th)
        t_loop = (time.perf_counter() - t) / args.subsample
        out["runs"].append({
            "n": n, "terms": int(terms.x.size), "dropped_mass": terms.dropped_mass, "terms_s": t_terms,
            "loss_and_gradient_s": t_all, "points_per_s": args.points / t_all,
            "per_point_loop_points_per_s": 1 / t_loop, "ratio": (args.points / t_all) * t_loop,
            "terms_evaluated": int(cm.terms.x.size),
            "baseline": None if old is None else compare(old.ContextModel, model, chain, n,
                                                         theta[: args.baseline_points], values, args.points / t_all),
        })
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
