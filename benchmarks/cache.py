"""Warm start: `flowlab eval` in a new process, cold (empty cache) against warm (the entry of the cold run).

    python benchmarks/cache.py [--model ew --at e=0.3,w=-1] [--repeat 5]

Prints one JSON object: the median wall time of `flowlab eval` with an empty cache folder (cold: derive,
compile, store), with the entry that run stored (warm: read the compiled code, no SymPy), with
`--no-cache`, and of `flowlab --help`, all as subprocesses of this process, and the ratios. Each cold
run gets its own new folder; the cache folders are temporary (FLOWLAB_CACHE_DIR).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

FLOWLAB = [sys.executable, "-c", "import sys; from flowlab.cli import main; sys.exit(main())"]


def _wall(cmd, env) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``cmd`` (CPU: user + system of the child, steadier on a busy machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _median(runs, i):
    return statistics.median(r[i] for r in runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ew")
    parser.add_argument("--at", default="e=0.3,w=-1", help="the point (every parameter of --model)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    evaluate = FLOWLAB + ["eval", "--model", args.model, "--p", "0.5", "--q", "0.8", "--at", args.at, "--json"]
    cold, warm, off = [], [], []
    with tempfile.TemporaryDirectory(prefix="flowlab-bench-cache-") as tmp:
        for i in range(args.repeat):
            env = {**os.environ, "FLOWLAB_CACHE_DIR": os.path.join(tmp, str(i))}
            cold.append(_wall(evaluate, env))
            warm.append(_wall(evaluate, env))
        env = {**os.environ, "FLOWLAB_CACHE_DIR": os.path.join(tmp, "0")}
        off = [_wall(FLOWLAB + ["--no-cache"] + evaluate[len(FLOWLAB):], env) for _ in range(args.repeat)]
        help_time = [_wall(FLOWLAB + ["--help"], env) for _ in range(args.repeat)]
    out = {
        "status": "ok",
        "message": f"flowlab eval --model {args.model}: median of {args.repeat} runs each, in seconds (wall, and CPU "
                   "of the process: user + system)",
        "model": args.model,
        "seconds": {"cold": _median(cold, 0), "warm": _median(warm, 0), "no_cache": _median(off, 0),
                    "help": _median(help_time, 0)},
        "cpu_seconds": {"cold": _median(cold, 1), "warm": _median(warm, 1), "no_cache": _median(off, 1),
                        "help": _median(help_time, 1)},
        "cold_over_warm": _median(cold, 0) / _median(warm, 0),
        "cold_over_warm_cpu": _median(cold, 1) / _median(warm, 1),
        "target_warm_seconds": 0.5,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
