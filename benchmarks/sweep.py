"""Sweep benchmark: the same Markov sweep on 1 and on 2 local workers, each a fresh `flowlab sweep` process.

    python benchmarks/sweep.py [--n 16] [--starts 1000] [--sigma 0.02] [--method flow|invariant] [--workers 1 2]

Each worker count runs ``flowlab sweep markov --p 0.05:0.95:N --q 0.05:0.95:N ... --workers W --json`` in a
new process (as a user runs it: imports, the store, the LocalCluster, the tiles, the close) into a new
store, with one on-disk compile cache (``FLOWLAB_CACHE_DIR``, a temporary folder filled by an untimed
warm-up run), so every timed run starts equally warm. Prints one JSON object: per worker count the wall
time, cells/s, the sweep's own ``seconds_by_phase`` and worker ``cpu_seconds`` (setup, cells), the CPU
time of the whole process tree (client, scheduler, workers) and the CPU time the *rest of the machine*
used meanwhile (from /proc/stat: when it is not near 0 the machine was shared and the wall ratio is not
the scaling); ``speedup`` = wall(first) / wall(second), and ``speedup_bound`` = wall(1) / (wall(1) −
cells CPU(1) / 2), what 2 workers would give at best if only the cells were split (perfectly) and every
other second of the one-worker run stayed serial.

The issue's targets: ``--n 16 --starts 1000`` (the scaling measured so far; speedup >= 1.7) and
``--n 32 --starts 2000 --workers 2`` (32 x 32 for ew at sigma = 0.02 in at most 2 minutes on 2 cores).
Run it on an otherwise idle machine.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _busy_jiffies() -> int | None:
    """Busy CPU time of the whole machine so far (clock ticks, all CPUs), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cli(argv, env) -> dict:
    """``flowlab ARGV --json`` in a new process: its payload, wall time, process-tree CPU and the others' CPU."""
    cpu0, busy0, t0 = _children_cpu(), _busy_jiffies(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flowlab.cli.app", *argv, "--json", "--quiet"], env=env,
                          capture_output=True, text=True, check=False)
    wall, cpu, busy1 = time.perf_counter() - t0, _children_cpu() - cpu0, _busy_jiffies()
    if proc.returncode != 0:
        raise SystemExit(f"flowlab {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) / os.sysconf("SC_CLK_TCK") - cpu)
    return {"payload": json.loads(proc.stdout), "seconds": wall, "tree_cpu_seconds": cpu,
            "others_cpu_seconds": others}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="points per axis in p and in q (0.05 to 0.95)")
    ap.add_argument("--starts", type=int, default=1000)
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--model", default="ew")
    ap.add_argument("--method", default="flow", choices=("flow", "invariant"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    grid = ["--p", f"0.05:0.95:{args.n}", "--q", f"0.05:0.95:{args.n}", "--sigma", repr(args.sigma),
            "--model", args.model, "--method", args.method]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FLOWLAB_CACHE_DIR": str(Path(tmp) / "cache")}
        run_cli(["sweep", "markov", "--p", "0.3", "--q", "0.4", "--starts", "5", "--model", args.model,
                 "--workers", "1", "--out", str(Path(tmp) / "warm.zarr")], env)  # fills the compile cache
        for w in args.workers:
            r = run_cli(["sweep", "markov", *grid, "--starts", str(args.starts), "--workers", str(w),
                         "--out", str(Path(tmp) / f"w{w}.zarr")], env)
            p = r["payload"]
            runs[str(w)] = {"seconds": r["seconds"], "cells_per_s": p["cells"] / r["seconds"],
                            "seconds_by_phase": p["seconds_by_phase"], "cpu_seconds": p["cpu_seconds"],
                            "tree_cpu_seconds": r["tree_cpu_seconds"], "others_cpu_seconds": r["others_cpu_seconds"],
                            "counts": p["counts"]}
    out = {"status": "ok", "message": f"{args.n} x {args.n} (p, q), {args.starts} starts, {args.method}",
           "cells": args.n * args.n, "starts": args.starts, "sigma": args.sigma, "model": args.model,
           "method": args.method, "workers": runs}
    if len(args.workers) >= 2:
        a, b = (runs[str(w)]["seconds"] for w in args.workers[:2])
        out["speedup"] = a / b
    if "1" in runs:
        one = runs["1"]
        out["speedup_bound"] = one["seconds"] / (one["seconds"] - one["cpu_seconds"]["cells"] / 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
