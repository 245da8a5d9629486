"""The ``flowlab basins`` command (system ``markov``): basins of convergence over a grid or random starts.

Only argparse-level helpers are imported at module level, so ``flowlab --help`` stays fast.
"""

from __future__ import annotations

import sys

from flowlab.cli.args import (
    EpilogFormatter,
    add_model,
    chain_from_args,
    model_spec_from_args,
    num,
    parse_box,
    parse_point,
    positive_float,
    positive_int,
    real,
    seed,
)
from flowlab.engine.errors import FlowlabInputError


def cmd_basins(args) -> int:
    from flowlab.engine.io import atomic_folder, atomic_write_text, check_output_dir, to_json
    from flowlab.systems.markov.basins import BasinGrid, FlowSettings, basin_grid, gaussian_basin

    files = ("gaussian.json",) if args.gaussian is not None else BasinGrid.FILES
    if args.out is not None:
        check_output_dir(args.out, "--out", files)
    model, chain = model_spec_from_args(args), chain_from_args(args)  # warm: no SymPy (the on-disk cache)
    settings = FlowSettings(t_max=args.t_max, rtol=args.rtol, atol=args.atol, chunk=args.chunk,
                            workers=args.workers)
    if args.gaussian is not None:
        if args.range or args.grid is not None:
            raise FlowlabInputError("--gaussian samples random initialisations: do not combine it with --grid/--range")
        result = gaussian_basin(model, chain, args.gaussian, args.samples, args.seed, method=args.method,
                                settings=settings, quiet=args.quiet, max_seconds=args.max_seconds,
                                context=args.context).as_dict()
        if args.out:
            with atomic_folder(args.out, "--out", files) as tmp:
                atomic_write_text(tmp / files[0], to_json(result))
        if args.json:
            sys.stdout.write(to_json(result))
        else:
            lo, hi = result["ci95"]
            c = result["counts"]
            print(f"{result['model']} at {chain} ({chain.regime}), theta0 ~ N(0, {num(args.gaussian)}^2 I), "
                  f"{args.samples} draws (seed {args.seed})")
            print(f"  P(global) = {result['prob_global']:.4f}   95% CI [{lo:.4f}, {hi:.4f}]")
            print(f"  counts: global {c['global']}, non-global {c['nonglobal']}, undetermined {c['undetermined']}")
        return 0
    grid = 128 if args.grid is None else args.grid
    fixed = parse_point(args.fix) if args.fix else None
    result = basin_grid(model, chain, parse_box(args.range), grid, method=args.method, settings=settings,
                        max_seconds=args.max_seconds, quiet=args.quiet, fixed=fixed, context=args.context)
    payload = result.as_dict()
    if args.out:
        paths = result.save(args.out)
        payload["files"] = [str(p) for p in paths]
    if args.json:
        sys.stdout.write(to_json(payload))
    else:
        c, f = payload["counts"], payload["fractions"]
        shape = "x".join(str(n) for n in payload["shape"])
        print(f"{payload['model']} at {chain} ({chain.regime}), {shape} grid"
              + (f" at {args.fix}" if args.fix else "") + f", method {args.method}: {payload['seconds']:.2f} s")
        print(f"  global     {c['global']:>9}  ({f['global']:.4f})  -> {', '.join(result.sets.global_min)}")
        print(f"  non-global {c['nonglobal']:>9}  ({f['nonglobal']:.4f})  -> {', '.join(result.sets.local_min)}")
        print(f"  undetermined {c['undetermined']:>7}  ({f['undetermined']:.4f})")
        failed = payload.get("stats", {}).get("failed", 0)
        if failed:
            print(f"    of which {failed} failed: the flow met non-finite values (a loss undefined there, e.g. log of a "
                  "negative number) or its step size underflowed")
        if payload["cross_check"]:
            x = payload["cross_check"]
            far, bad, und = x["points_far_from_separatrix"], x["disagreements_far"], x["undetermined_far"]
            print(f"  invariant cross-check on the {far} points farther than {num(x['separatrix_band'])} (in E) from "
                  f"the separatrix: {far - bad - und} agree, {bad} disagree, {und} undetermined")
        if args.out:
            print(f"  wrote {', '.join(payload['files'])}")
    return 0



def add_parsers(sub) -> None:
    """Register ``basins`` on the flowlab subparsers ``sub``."""
    p = sub.add_parser("basins", formatter_class=EpilogFormatter, help="basins of convergence over a grid or random starts",
                       description="Label initialisations by where the gradient flow takes them: 1 = a global minimum, "
                       "0 = a non-global minimum, -1 = undetermined by --t-max. Grid mode writes DIR/basins.npz "
                       "(one axis per parameter and 'label', indexing ij in parameter order) and DIR/basins.json; "
                       "--gaussian estimates P(global) for theta0 ~ N(0, sigma^2 I) with a 95% interval.",
                       epilog="examples:\n  flowlab basins --p 0.1 --q 0.1 --grid 256 --out basins-0.1\n"
                       "  flowlab basins --p 0.5 --q 0.8 --gaussian 0.02 --samples 2000 --json\n"
                       "  flowlab basins --p 0.9 --q 0.9 --grid 512 --method invariant --out inv")
    add_model(p, chain_required=True)
    p.add_argument("--grid", type=positive_int, default=None, help="points per axis (default: 128)")
    p.add_argument("--range", action="append", metavar="NAME:LO:HI",
                   help="grid range of one parameter (repeatable); others default to -3:3")
    p.add_argument("--fix", metavar="NAME=VALUE,...", help="hold parameters fixed: a slice, e.g. a=0.5 for model ewa")
    p.add_argument("--method", choices=("flow", "invariant"), default="flow",
                   help="flow: batch integration (any model); invariant: exact from the conserved E (ew)")
    p.add_argument("--gaussian", type=real, metavar="SIGMA", help="random starts theta0 ~ N(0, SIGMA^2 I) instead of a grid")
    p.add_argument("--samples", type=positive_int, default=1000, help="number of random starts (with --gaussian)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random starts (0 to 2**32 - 1)")
    p.add_argument("--t-max", type=real, default=1e4, help="flow time after which a point is undetermined")
    p.add_argument("--rtol", type=real, default=1e-6, help="batch integrator relative tolerance")
    p.add_argument("--atol", type=real, default=1e-9, help="batch integrator absolute tolerance")
    p.add_argument("--chunk", type=positive_int, default=65536, help="points integrated together (bounds memory)")
    p.add_argument("--context", type=positive_int, metavar="N",
                   help="flow of the exact finite-context loss over positions 1..N (labels 1 only when reached)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="processes labelling the points, at most 256 (default: the CPUs the load leaves free "
                   "from 131072 points on, one below; the labels do not depend on it)")
    p.add_argument("--max-seconds", type=positive_float, default=1800.0,
                   help="refuse grids estimated to take longer")
    p.add_argument("--out", metavar="DIR", help="write basins.npz and basins.json (grid) or gaussian.json here")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_basins)
