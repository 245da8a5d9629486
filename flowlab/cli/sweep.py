"""The ``flowlab sweep`` command: a grid of analyses over data parameters on Dask, stored in Zarr.

Only argparse-level helpers are imported at module level, so ``flowlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from flowlab.cli.args import MODEL_NAMES, EpilogFormatter, positive_float, positive_int, seed


def cmd_sweep(args) -> int:
    from flowlab.engine.io import to_json
    from flowlab.engine.sweep import check_scheduler, parse_range
    from flowlab.systems.sweeps import sweep

    if args.scheduler is not None:
        check_scheduler(args.scheduler)
    params = {"p": parse_range(args.p, "--p"), "q": parse_range(args.q, "--q"),
              "sigma": parse_range(args.sigma, "--sigma"), "model": args.model, "starts": args.starts,
              "seed": args.seed, "method": args.method}
    result = sweep(args.system, args.out, scheduler=args.scheduler, workers=args.workers, resume=args.resume,
                   processes=args.processes,
                   max_seconds=args.max_seconds, quiet=args.quiet or args.json, **params)
    if args.json:
        sys.stdout.write(to_json(result.as_dict()))
    else:
        print(result.message)
        print("  cells: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
        print(f"  open it with: xarray.open_zarr({args.out!r}, consolidated=False)")
    return 0


def add_parsers(sub) -> None:
    """Register ``sweep`` on the flowlab subparsers ``sub``."""
    p = sub.add_parser("sweep", formatter_class=EpilogFormatter, help="a grid of analyses over (sigma, p, q) on Dask",
                       description="One analysis per cell of a grid over the data parameters, computed in tiles on "
                       "Dask (a LocalCluster, or --scheduler ADDRESS) and stored tile by tile in a Zarr store "
                       "(an xarray Dataset). For markov: P(global) with its 95% Wilson interval from --starts "
                       "Gaussian starts of scale sigma, per (sigma, p, q). A rerun resumes: only tiles not "
                       "recorded as done are computed.",
                       epilog="examples:\n  flowlab sweep markov --p 0.05:0.95:32 --q 0.05:0.95:32 --sigma 0.02 "
                       "--starts 2000 --model ew --out phase.zarr\n"
                       "  flowlab sweep markov --p 0.2,0.8 --q 0.3 --sigma 0.01:1:8 --starts 500 --out sigma.zarr --json")
    p.add_argument("system", choices=("markov",), help="the system to sweep")
    p.add_argument("--p", required=True, metavar="RANGE", help="START:STOP:N (inclusive), A,B,C or one number")
    p.add_argument("--q", required=True, metavar="RANGE", help="as --p")
    p.add_argument("--sigma", default="0.02", metavar="RANGE", help="scale(s) of the Gaussian initialisation")
    p.add_argument("--model", default="ew", choices=MODEL_NAMES, help="a preset model")
    p.add_argument("--starts", type=positive_int, default=2000, help="Gaussian starts per cell")
    p.add_argument("--seed", type=seed, default=0, help="sweep seed; cell seeds derive from (seed, cell index)")
    p.add_argument("--method", choices=("flow", "invariant"), default="flow",
                   help="flow: batch integration (any model); invariant: exact from the conserved E (ew)")
    p.add_argument("--out", required=True, metavar="DIR", help="the Zarr store: a folder such as phase.zarr (created or resumed)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="local workers (default: the CPUs this process may use)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue a store of the same settings (--no-resume replaces an earlier sweep store)")
    p.add_argument("--processes", action=argparse.BooleanOptionalAction, default=True,
                   help="local workers as processes (--no-processes: threads of this process, quicker to start)")
    p.add_argument("--max-seconds", type=positive_float, default=86400.0,
                   help="refuse sweeps estimated to take longer")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)
