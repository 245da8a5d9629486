"""The ``flowlab sweep`` commands: a grid of analyses over data parameters on Dask, stored in Zarr.

``flowlab sweep markov|cooccurrence|ntp_order ...``: one action per system that defines a sweep
(flowlab.systems.sweeps.SWEEP_SYSTEMS), each with its swept parameters (ranges ``START:STOP:N`` or lists
``A,B,C``) and cell options, and the options every sweep shares (the store, Dask, resume, a figure).
Only argparse-level helpers are imported at module level, so ``flowlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from flowlab.cli.args import MODEL_NAMES, EpilogFormatter, positive_float, positive_int, seed

RANGE_HELP = "START:STOP:N (N points, inclusive), A,B,C or one number"
INT_RANGE_HELP = "integers: A,B,C, one number, or START:STOP:N falling on integers (e.g. 16:64:4 = 16,32,48,64)"
#: Mirrors of flowlab.systems.ntp_order.sweep.DEFAULTS (kept equal by a test; importing it here would
#: import NumPy on --help).
NTP_DEFAULTS = {"steps1": 300, "steps2": 3000, "stage2_loss": "ce"}
STAGE2_LOSSES = ("ce", "attention")


def _params(args) -> dict:
    """The swept coordinates and cell options of ``args.system``, as ``flowlab.sweep`` takes them."""
    from flowlab.engine.sweep import parse_range

    if args.system == "markov":
        return {"p": parse_range(args.p, "--p"), "q": parse_range(args.q, "--q"),
                "sigma": parse_range(args.sigma, "--sigma"), "model": args.model, "starts": args.starts,
                "seed": args.seed, "method": args.method}
    if args.system == "cooccurrence":
        return {"m": parse_range(args.m, "--m"), "L": parse_range(args.L, "--L"),
                "seed": parse_range(args.seed_grid, "--seed-grid"), "n": args.n, "d": args.d, "m1": args.m1,
                "init": args.init}
    return {"vocab": parse_range(args.vocab, "--vocab"), "sentences": parse_range(args.sentences, "--sentences"),
            "seed": parse_range(args.seed_grid, "--seed-grid"), "steps1": args.steps1, "steps2": args.steps2,
            "stage2_loss": args.stage2_loss}


def cmd_sweep(args) -> int:
    from flowlab.engine.io import check_figure_path, to_json
    from flowlab.engine.sweep import check_scheduler
    from flowlab.systems.sweeps import sweep

    if args.scheduler is not None:
        check_scheduler(args.scheduler)
    if args.figure is not None:
        check_figure_path(args.figure, "--figure")
    result = sweep(args.system, args.out, scheduler=args.scheduler, workers=args.workers, resume=args.resume,
                   processes=args.processes, max_seconds=args.max_seconds, quiet=args.quiet or args.json,
                   **_params(args))
    if args.figure is not None:
        _figure(result, args.figure)
    if args.json:
        sys.stdout.write(to_json({**result.as_dict(), "figure": args.figure}))
    else:
        print(result.message)
        print("  cells: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
        print(f"  open it with: xarray.open_zarr({args.out!r}, consolidated=False)")
        if args.figure is not None:
            print(f"  figure: {args.figure}")
    return 0


def _figure(result, path) -> None:
    """The system's figure from the stored Dataset: the phase diagram (markov, smallest sigma), T1 against m
    (cooccurrence) or the fitted rates against K (ntp_order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlab.engine.io import save_figure
    from flowlab.plots import sweep as plots

    ds = result.open()
    if result.system == "markov":
        fig = plots.phase_diagram(ds).figure
    elif result.system == "cooccurrence":
        fig = plots.t1_vs_m(ds).figure
    else:
        fig = plots.ntp_rates_figure(ds)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


def _common(p) -> None:
    """The options of every sweep: the store, Dask, resume, the time limit, the figure, output."""
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the Zarr store: a folder such as phase.zarr (created or resumed)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="local workers (default: the CPUs this process may use)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue a store of the same settings (--no-resume replaces an earlier sweep store)")
    p.add_argument("--processes", action=argparse.BooleanOptionalAction, default=True,
                   help="local workers as processes (--no-processes: threads of this process, quicker to start)")
    p.add_argument("--max-seconds", type=positive_float, default=86400.0,
                   help="refuse sweeps estimated to take longer")
    p.add_argument("--figure", metavar="FILE", help="also draw the system's figure from the stored Dataset "
                   "(.png, .pdf or .svg)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _markov(actions) -> None:
    p = actions.add_parser("markov", formatter_class=EpilogFormatter, help="P(global) over (sigma, p, q)",
                           description="Per cell (sigma, p, q): P(global) with its 95% Wilson interval from "
                           "--starts Gaussian starts of scale sigma. --figure draws the phase diagram at the "
                           "smallest sigma.",
                           epilog="examples:\n  flowlab sweep markov --p 0.05:0.95:32 --q 0.05:0.95:32 --sigma 0.02 "
                           "--starts 2000 --model ew --out phase.zarr --figure phase.png\n"
                           "  flowlab sweep markov --p 0.2,0.8 --q 0.3 --sigma 0.01:1:8 --starts 500 --out sigma.zarr "
                           "--json")
    p.add_argument("--p", required=True, metavar="RANGE", help=RANGE_HELP)
    p.add_argument("--q", required=True, metavar="RANGE", help="as --p")
    p.add_argument("--sigma", default="0.02", metavar="RANGE", help="scale(s) of the Gaussian initialisation")
    p.add_argument("--model", default="ew", choices=MODEL_NAMES, help="a preset model")
    p.add_argument("--starts", type=positive_int, default=2000, help="Gaussian starts per cell")
    p.add_argument("--seed", type=seed, default=0, help="sweep seed; cell seeds derive from (seed, cell index)")
    p.add_argument("--method", choices=("flow", "invariant"), default="flow",
                   help="flow: batch integration (any model); invariant: exact from the conserved E (ew)")
    _common(p)


def _cooccurrence(actions) -> None:
    p = actions.add_parser("cooccurrence", formatter_class=EpilogFormatter, help="T1 over (m, L, seed)",
                           description="Per cell (m, L, seed): T1, the end of Phase 1 of the Gram flow (MODELS.md "
                           "section 6), equal to `flowlab cooccurrence scaling --m M --seed S` at that width. "
                           "--figure draws T1 against m.",
                           epilog="example:\n  flowlab sweep cooccurrence --m 64,256,1024,4096 --L 5 --seed-grid 0:3:4 "
                           "--out t1.zarr --figure t1.png")
    p.add_argument("--m", required=True, metavar="RANGE", help=f"widths of W_Q, W_K, W_V; {INT_RANGE_HELP}")
    p.add_argument("--L", default="5", metavar="RANGE", help="tokens per sample (integers, as --m)")
    p.add_argument("--seed-grid", default="0", metavar="RANGE", help="seeds of the data set and the initial Grams "
                   "(integers, as --m)")
    p.add_argument("--n", type=positive_int, default=60, help="training samples")
    p.add_argument("--d", type=positive_int, default=64, help="vocabulary size (one-hot embeddings)")
    p.add_argument("--m1", type=positive_int, default=256, help="MLP width")
    p.add_argument("--init", choices=("paper", "kaiming"), default="paper", help="scales of the initial weights")
    _common(p)


def _ntp_order(actions) -> None:
    p = actions.add_parser("ntp_order", formatter_class=EpilogFormatter,
                           help="fitted rates over (K, sentences, seed) (reconstruction)",
                           description="Per cell (vocab K, sentences, seed): one run of `flowlab ntp-order run "
                           "--vocab K --sentences N --seed S` (MODELS.md section 7, reconstructed) and its fitted "
                           "rates per stage: the exponent of 1 - cos(W_t, W*) ~ t^-a, the ratio of the geometric "
                           "loss decay, the slope of |W_t| (with R2), the final cosines and the accuracies. Cheap "
                           "iteration counts by default (the stage-2 direction exponent needs about 10^4 stage-2 "
                           "steps to reach its asymptotic regime). --figure draws the rates against K.",
                           epilog="example:\n  flowlab sweep ntp_order --vocab 8:20:4 --sentences 100,200 --seed-grid 0,1 "
                           "--out rates.zarr --figure rates.png")
    p.add_argument("--vocab", required=True, metavar="RANGE", help=f"vocabulary sizes K = d; {INT_RANGE_HELP}")
    p.add_argument("--sentences", default="200", metavar="RANGE", help="training sentences (integers, as --vocab)")
    p.add_argument("--seed-grid", default="0", metavar="RANGE",
                   help="seeds of the generated data and the initialisation (integers, as --vocab)")
    p.add_argument("--steps1", type=positive_int, default=NTP_DEFAULTS["steps1"], help="stage-1 iterations")
    p.add_argument("--steps2", type=positive_int, default=NTP_DEFAULTS["steps2"], help="stage-2 iterations")
    p.add_argument("--stage2-loss", choices=STAGE2_LOSSES, default=NTP_DEFAULTS["stage2_loss"],
                   help="ce: next-token cross-entropy with W_ov fixed; attention: -log attention on the optimal token")
    _common(p)


def add_parsers(sub) -> None:
    """Register ``sweep`` (with one action per system) on the flowlab subparsers ``sub``."""
    top = sub.add_parser("sweep", formatter_class=EpilogFormatter,
                         help="a grid of analyses over data parameters on Dask (markov, cooccurrence, ntp_order)",
                         description="One analysis per cell of a grid over a system's data parameters, computed in "
                         "tiles on Dask (a LocalCluster, or --scheduler ADDRESS) and stored tile by tile in a Zarr "
                         "store (an xarray Dataset). A rerun resumes: only tiles not recorded as done are computed; "
                         "a store made with other settings is refused.")
    actions = top.add_subparsers(dest="system", metavar="SYSTEM", required=True)
    _markov(actions)
    _cooccurrence(actions)
    _ntp_order(actions)
    for p in actions.choices.values():
        p.set_defaults(func=cmd_sweep)
