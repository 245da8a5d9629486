"""Demo benchmark: the wall time of the full ``flowlab demo`` and its phases, on an idle machine and with one
core kept busy by a busy loop (``python -c "while True: pass"``, started and ended here), per variant.

    python benchmarks/demo.py [--fast] [--only VARIANT ...] [--loads idle busy]

Each demo runs in a fresh Python process with an empty on-disk cache (a first run, as on a fresh machine;
a second run in the same process would reuse the derivations and compiled models of the first, so the
comparison is made process against process). Variants: "current" (the default rule for the second
process), "one-process" and "two-processes" (the rule forced either way), "previous" (the settings before
issue 17's speed work: the transformer validation curve on 4096 sequences every 25 steps, 256 numeric
starts for the ewa critical sets, no second process; the code is today's).
Prints one JSON object: per run the wall ``seconds``, ``seconds_by_phase`` and the spare cores seen at
the start, and each variant's time over the current one per load.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

#: Settings of each variant, applied in the demo's process before it starts.
VARIANTS = {
    "current": "",
    "one-process": "PARALLEL = False\n",
    "two-processes": "PARALLEL = True\n",
    "previous": "markov.DEMO_TRANSFORMER = {}\nmarkov.EWA_STARTS = 256\nPARALLEL = False\n",
}

CHILD = """
import json, os, sys
from flowlab.engine.defaults import available_cpus
from flowlab.report import demo, markov
PARALLEL = None
{patch}
spare = available_cpus() - os.getloadavg()[0]
s = demo.run_demo(sys.argv[1], quiet=True, fast=sys.argv[2] == "1", parallel=PARALLEL)
print(json.dumps({{"seconds": s["seconds"], "seconds_by_phase": s["seconds_by_phase"], "spare_cores": spare}}))
"""


def run(variant: str, busy: bool, fast: bool) -> dict:
    """One demo in a fresh process (empty cache folder), optionally beside a busy loop."""
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if busy:
            time.sleep(2.0)  # let the loop show up in /proc/stat
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "FLOWLAB_CACHE_DIR": os.path.join(tmp, "cache")}
            code = CHILD.format(patch=VARIANTS[variant])
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code, os.path.join(tmp, "demo"), str(int(fast))],
                                  capture_output=True, text=True, env=env, check=False)
            wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"demo ({variant}, busy={busy}) failed:\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["process_seconds"] = wall
        return out
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="the demo's --fast mode (a quick check of this script)")
    parser.add_argument("--only", nargs="+", choices=tuple(VARIANTS), help="run these variants (default: all)")
    parser.add_argument("--loads", nargs="+", choices=("idle", "busy"), default=["idle", "busy"])
    args = parser.parse_args(argv)
    variants = args.only or list(VARIANTS)
    results = {v: {load: run(v, load == "busy", args.fast) for load in args.loads} for v in variants}
    out = {"status": "completed", "message": "wall seconds of flowlab demo per variant and load",
           "fast": args.fast, "cpus": len(os.sched_getaffinity(0)), "load_average_at_end": os.getloadavg()[0],
           "runs": results}
    if "current" in variants:
        out["ratio_over_current"] = {v: {load: results[v][load]["seconds"] / results["current"][load]["seconds"]
                                         for load in args.loads} for v in variants if v != "current"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
