"""Finite-context benchmark: the exact expected loss over positions 1..N on many parameter points.

    python benchmarks/context.py [--points 10000] [--n 64 256] [--model ewa] [--direct-points 10000]
                                 [--baseline 2a8dcfe]

Prints one JSON object. Per N: the number of distinct (x, m) terms of the dynamic programme; wall
``seconds_by_phase`` and ``cpu_seconds_by_phase`` (time.process_time, steadier on a shared machine) of
the terms, the quadrature tables and loss + gradient (bias profiled: b* solved per point) on all points;
how many points took each path; then the per-term sums (``method="direct"``, today's path) run in the
same process on the first ``--direct-points`` of the same points: their seconds, the ratio of points/s
fast over direct (wall and CPU), and the largest differences: loss relative to |loss|, gradient relative to
the largest |component| of the point's gradient. Also the per-point Python loop over a subsample, and the
load average (os.getloadavg) before and after. ``--baseline REV`` also runs
``flowlab/systems/markov/context.py`` as it was at git revision REV (loaded from ``git show``, in this
process) on ``--baseline-points`` of the points.
"""

import argparse
import importlib.util
import json
import os
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


def timed(fn, *args):
    """(result, wall seconds, CPU seconds) of fn(*args)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def differences(values, reference) -> dict:
    """Largest loss difference relative to |loss|, and gradient difference relative to the point's largest
    |component| (a component near 0 has no relative scale of its own)."""
    n = len(reference[0])
    loss, grad = values[0][:n], values[1][:n]
    scale = np.max(np.abs(reference[1]), axis=1, keepdims=True)
    return {"loss": float(np.max(np.abs(loss - reference[0]) / np.abs(reference[0]))),
            "gradient": float(np.max(np.abs(grad - reference[1]) / np.where(scale > 0, scale, 1.0)))}


def compare(old_cls, model, chain, n, theta, new_values, new_rate) -> dict:
    cm = old_cls(model, chain, n)
    ref, wall, _ = timed(cm.loss_and_gradient, theta)
    rate = len(theta) / wall
    return {"points": len(theta), "points_per_s": rate, "ratio_new_vs_baseline": new_rate / rate,
            "max_relative_difference": differences(new_values, ref)}


def direct_run(model, chain, n, theta, values, wall, cpu) -> dict:
    """The per-term sums on the same points, in this process: seconds, ratios and differences."""
    cm = ContextModel(model, chain, n, method="direct")
    ref, d_wall, d_cpu = timed(cm.loss_and_gradient, theta)
    share = len(theta) / len(values[0])  # the fast path's time scaled to the same number of points
    return {"points": len(theta), "seconds": d_wall, "cpu_seconds": d_cpu, "points_per_s": len(theta) / d_wall,
            "ratio_fast_vs_direct": d_wall / (wall * share), "cpu_ratio_fast_vs_direct": d_cpu / (cpu * share),
            "max_relative_difference": differences(values, ref)}


def run(args, model, chain, n, theta, old) -> dict:
    terms, t_terms, c_terms = timed(context_terms, chain, n)
    cm, t_tables, c_tables = timed(ContextModel, model, chain, n)  # terms again + quadrature tables (cached)
    values, wall, cpu = timed(cm.loss_and_gradient, theta)
    paths = cm.point_paths(theta)
    t = time.perf_counter()
    for th in theta[: args.subsample]:
        cm.loss_and_gradient(th)
    t_loop = (time.perf_counter() - t) / args.subsample
    n_direct = len(theta) if args.direct_points is None else min(args.direct_points, len(theta))
    return {
        "n": n, "terms": int(terms.x.size), "dropped_mass": terms.dropped_mass, "path": cm.path,
        "points_by_path": {p: int(np.sum(paths == p)) for p in sorted(set(paths))},
        "seconds_by_phase": {"terms": t_terms, "model_and_tables": t_tables, "loss_and_gradient": wall},
        "cpu_seconds_by_phase": {"terms": c_terms, "model_and_tables": c_tables, "loss_and_gradient": cpu},
        "points_per_s": len(theta) / wall, "per_point_loop_points_per_s": 1 / t_loop,
        "ratio_vectorised_vs_loop": (len(theta) / wall) * t_loop,
        "direct": direct_run(model, chain, n, theta[:n_direct], values, wall, cpu) if n_direct else None,
        "baseline": None if old is None else compare(old.ContextModel, model, chain, n,
                                                     theta[: args.baseline_points], values, len(theta) / wall),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--n", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--model", default="ewa")
    parser.add_argument("--subsample", type=int, default=50)
    parser.add_argument("--direct-points", type=int, default=None,
                        help="points for the per-term sums (default: all; 0 skips them)")
    parser.add_argument("--baseline", metavar="REV", help="also run context.py of this git revision")
    parser.add_argument("--baseline-points", type=int, default=500)
    args = parser.parse_args(argv)
    old = baseline_module(args.baseline) if args.baseline else None
    model, chain = get_model(args.model), MarkovChain(0.5, 0.8)
    theta = np.random.default_rng(0).uniform(-2, 2, size=(args.points, len(model.params)))
    load_before = os.getloadavg()
    ContextModel(model, chain, 4).loss(theta[:10])  # compile
    runs = [run(args, model, chain, n, theta, old) for n in args.n]
    out = {"status": "ok",
           "message": "finite-context loss + gradient on uniform(-2, 2) points: the quadrature path against the "
                      "per-term sums in the same process (target: N = 256, 10^4 points, <= 1 s)",
           "model": args.model, "chain": chain.as_dict(), "points": args.points, "baseline": args.baseline,
           "cpus": len(os.sched_getaffinity(0)), "load_average_before": list(load_before),
           "load_average_after": list(os.getloadavg()), "runs": runs}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
