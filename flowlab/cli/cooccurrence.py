"""The ``flowlab cooccurrence`` subcommands: claims, compare, scaling (registered by :func:`add_parsers`).

Only argparse and sys are imported at module level, so ``flowlab --help`` stays fast; NumPy,
SciPy, SymPy and matplotlib are imported inside the commands.
"""

from __future__ import annotations

import sys

from flowlab.cli.args import EpilogFormatter, check_out_dir, positive_int, real, seed

ENGINES = ("full", "gram", "reduced")  # == flowlab.systems.cooccurrence.claims.ENGINES (a test checks)
#: The paper's setting (Appendix A): n = 60, L = 5, d = 64, m = 128, m1 = 256, GD lr 0.01 × 30 000 epochs.
DEFAULTS = {"n": 60, "L": 5, "d": 64, "m": 128, "m1": 256, "lr": 0.01, "t_max": 300.0, "points": 600}
SCALING_WIDTHS = (64, 256, 1024, 4096)


def add_parsers(sub, formatter_class=EpilogFormatter) -> None:
    """Register ``cooccurrence`` (with its actions claims, compare, scaling) on ``sub``."""
    top = sub.add_parser("cooccurrence", formatter_class=formatter_class,
                         help="the word co-occurrence transformer (Yang et al. 2024): claims, compare, scaling",
                         description="System `cooccurrence` (MODELS.md section 6): a one-layer transformer trained "
                         "to detect the co-occurrence of two words; its phases and the paper's claims.")
    actions = top.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = actions.add_parser("claims", formatter_class=formatter_class, help="evaluate every claim on one run",
                           description="Run one engine on the paper's setting (or the given sizes) and evaluate each "
                           "claim of MODELS.md section 6: holds true/false, or null when the run cannot decide. "
                           "Engines: full = gradient descent on Eq. 1 (the paper's experiment), gram = the exact "
                           "Gram flow, reduced = the 13-scalar phase model (attention frozen). Exit code 0 when the "
                           "run succeeded (whatever the claims say), 1 when it failed.",
                           epilog="examples:\n  flowlab cooccurrence claims --engine reduced --json\n"
                           "  flowlab cooccurrence claims --engine full --seed 1 --out run1")
    p.add_argument("--engine", choices=ENGINES, default="gram", help="which dynamics")
    for name, help_ in (("n", "training samples (types 1/2, 1/6, 1/6, 1/6)"), ("L", "tokens per sample"),
                        ("d", "vocabulary size (one-hot embeddings)"), ("m", "width of W_Q, W_K, W_V"),
                        ("m1", "MLP width (rows of W)")):
        p.add_argument(f"--{name}", type=positive_int, default=DEFAULTS[name], help=help_)
    p.add_argument("--seed", type=seed, default=0, help="seed of the data set and the initialisation")
    p.add_argument("--t-max", type=real, default=DEFAULTS["t_max"],
                   help="flow time of the run (full: epochs = t-max / lr)")
    p.add_argument("--lr", type=real, default=DEFAULTS["lr"], help="learning rate of --engine full")
    p.add_argument("--points", type=positive_int, default=DEFAULTS["points"], help="recorded times of the flows")
    _output_options(p, "DIR", "write claims.json, trajectory.npz and the figures (PNG, PDF) here")
    p.set_defaults(func=cmd_claims)

    p = actions.add_parser("compare", formatter_class=formatter_class,
                           help="full-model gradient flow vs the Gram flow from the same weights",
                           description="Integrate the full model's gradient flow and the Gram flow from the same "
                           "initial weights; print max_rel_diff of the loss and the observables, and invariant_drift.",
                           epilog="example:\n  flowlab cooccurrence compare --m 16 --m1 16 --json")
    p.add_argument("--m", type=positive_int, default=16, help="width of W_Q, W_K, W_V")
    p.add_argument("--m1", type=positive_int, default=16, help="MLP width")
    p.add_argument("--seed", type=seed, default=0, help="seed of the data and the weights")
    p.add_argument("--gd", action="store_true",
                   help="instead: the paper's gradient descent (n 60, L 5, d 64, m 128, m1 256, lr 0.01, 30 000 "
                   "epochs; --m/--m1 ignored) against the Gram flow from its initial weights at t = epoch x lr; "
                   "the difference is GD's O(lr) discretisation error (about a minute)")
    _output_options(p, "FILE", "also write the JSON here")
    p.set_defaults(func=cmd_compare)

    p = actions.add_parser("scaling", formatter_class=formatter_class, help="T1 against the width m (Gram flow)",
                           description="Gram flow at each width m (m1 fixed): T1 per m and the fitted exponent of "
                           "T1 ~ m^alpha (the paper: alpha = -1 up to logarithms).",
                           epilog="example:\n  flowlab cooccurrence scaling --m 64 256 1024 4096 --json")
    p.add_argument("--m", type=positive_int, nargs="+", default=list(SCALING_WIDTHS), help="widths")
    p.add_argument("--seed", type=seed, default=0, help="seed of the data and the initial Grams")
    _output_options(p, "DIR", "write scaling.json and the figure (PNG, PDF) here")
    p.set_defaults(func=cmd_scaling)


def _output_options(p, metavar: str, out_help: str) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--out", metavar=metavar, help=out_help)
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _emit(payload: dict, text: str, args) -> None:
    from flowlab.engine.io import to_json

    sys.stdout.write(to_json(payload) if args.json else text)


#: The files of a result folder (an earlier result of the same action may be replaced, nothing else).
CLAIMS_FILES = ("claims.json", "trajectory.npz", "figure1.png", "figure1.pdf", "balancing.png", "balancing.pdf")
SCALING_FILES = ("scaling.json", "scaling.png", "scaling.pdf")


def claims_text(result) -> str:
    mark = {True: "yes", False: "NO", None: "undecided"}
    lines = [f"cooccurrence claims, engine {result.engine}: T1 = {result.T1}, final loss {result.final_loss:.4g}",
             f"  {result.message}"]
    lines += [f"  {mark[c['holds']]:>9}  {c['id']:<26} {c['statement']}" for c in result.claims]
    return "\n".join(lines) + "\n"


def cmd_claims(args) -> int:
    from pathlib import Path

    from flowlab.engine.io import atomic_folder
    from flowlab.report.cooccurrence import write_run
    from flowlab.systems.cooccurrence.claims import evaluate_claims, run_engine

    check_out_dir(args, CLAIMS_FILES)
    traj = run_engine(args.engine, n=args.n, L=args.L, d=args.d, m=args.m, m1=args.m1, seed=args.seed,
                      t_max=args.t_max, points=args.points, lr=args.lr, quiet=args.quiet)
    result = evaluate_claims(traj)
    if args.out is not None:
        with atomic_folder(args.out, "--out", CLAIMS_FILES) as tmp:
            files = [str(Path(args.out) / Path(f).name) for f in write_run(tmp, traj, result)]
        if not args.quiet:
            print("wrote " + ", ".join(files), file=sys.stderr)
    _emit(result.as_dict(), claims_text(result), args)
    return 0 if result.status == "ok" else 1


def cmd_compare(args) -> int:
    from flowlab.engine.io import atomic_write_text, check_output_file, to_json
    from flowlab.systems.cooccurrence.experiments import compare, training_check

    if args.out is not None:
        check_output_file(args.out)
    if args.gd:
        result = training_check(seed=args.seed, quiet=args.quiet)
    else:
        result = compare(m=args.m, m1=args.m1, seed=args.seed)
    payload = result if isinstance(result, dict) else result.as_dict()
    if args.out is not None:
        atomic_write_text(args.out, to_json(payload))
    _emit(payload, to_json(payload), args)
    return 0 if payload.get("status", "ok") == "ok" else 1


def cmd_scaling(args) -> int:
    from flowlab.engine.io import atomic_folder, atomic_write_text, to_json
    from flowlab.report.cooccurrence import write_scaling_figure
    from flowlab.systems.cooccurrence.experiments import scaling

    check_out_dir(args, SCALING_FILES)
    result = scaling(args.m, seed=args.seed)
    payload = result if isinstance(result, dict) else result.as_dict()
    if args.out is not None:
        with atomic_folder(args.out, "--out", SCALING_FILES) as tmp:
            atomic_write_text(tmp / "scaling.json", to_json(payload))
            write_scaling_figure(tmp, payload)
    _emit(payload, to_json(payload), args)
    return 0 if payload.get("status", "ok") == "ok" else 1
