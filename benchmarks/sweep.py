"""Sweep benchmark: the same Markov sweep on 1 and on 2 local workers (process LocalClusters).

    python benchmarks/sweep.py [--n 8] [--starts 2000] [--sigma 0.02] [--method flow|invariant] [--workers 1 2]

Prints one JSON object: per worker count the wall time (cluster start, per-worker setup and the
tiles; the stores are new each time) and cells/s, and the ratio of the first two times. With
``--n 32 --starts 2000 --workers 2`` it measures the issue's target (32 x 32 (p, q) for ew at
sigma = 0.02 with 2000 starts per cell in at most 2 minutes on 2 cores).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from flowlab.systems.sweeps import sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="points per axis in p and in q (0.05 to 0.95)")
    ap.add_argument("--starts", type=int, default=2000)
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--model", default="ew")
    ap.add_argument("--method", default="flow", choices=("flow", "invariant"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    axis = np.linspace(0.05, 0.95, args.n)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            t0 = time.perf_counter()
            r = sweep("markov", Path(tmp) / f"w{w}.zarr", workers=w, p=axis, q=axis, sigma=[args.sigma],
                      starts=args.starts, model=args.model, method=args.method, quiet=True)
            seconds = time.perf_counter() - t0
            runs[str(w)] = {"seconds": seconds, "cells_per_s": r.cells / seconds, "counts": r.counts}
    out = {"status": "ok", "message": f"{args.n} x {args.n} (p, q), {args.starts} starts, {args.method}",
           "cells": args.n * args.n, "starts": args.starts, "sigma": args.sigma, "model": args.model,
           "method": args.method, "workers": runs}
    if len(args.workers) >= 2:
        a, b = (runs[str(w)]["seconds"] for w in args.workers[:2])
        out["speedup"] = a / b
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
