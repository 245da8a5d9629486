"""The ``flowlab plot`` command (system ``markov``): one figure, written as PNG, PDF or SVG.

Only argparse-level helpers are imported at module level, so ``flowlab --help`` stays fast;
matplotlib and the analyses are imported inside the command.
"""

from __future__ import annotations

import sys

from flowlab.cli.args import (
    EpilogFormatter,
    add_model,
    chain_from_args,
    int_in,
    model_from_args,
    parse_box,
    parse_point,
    point_vector,
    positive_int,
    real,
)
from flowlab.engine.errors import FlowlabInputError
from flowlab.systems.markov.defaults import PLOT_LIMITS

PLOT_KINDS = ("landscape", "basins", "trajectories", "loss", "flow3d")


def cmd_plot(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlab.engine.io import check_figure_path, save_figure
    from flowlab.plots import markov as plots
    from flowlab.systems.markov.landscape import basin_landscape, flows_3d, landscape

    model, chain = model_from_args(args), chain_from_args(args)
    out = check_figure_path(args.out)  # refuse a bad extension before any work
    box = parse_box(args.range)
    starts = [point_vector(model, parse_point(a)) for a in args.at or ()]
    if args.kind in ("trajectories", "loss", "flow3d") and not starts:
        raise FlowlabInputError(f"plot {args.kind} needs at least one --at start point, e.g. --at e=0.1,w=0.1")
    three_d = args.kind == "flow3d"
    if args.fix and args.kind != "basins":
        raise FlowlabInputError("--fix (a slice) applies to plot basins only")
    n_free = len(model.params) - (len(parse_point(args.fix)) if args.fix else 0)
    if three_d != (n_free == 3) and args.kind != "loss":
        raise FlowlabInputError(
            f"plot {args.kind} draws {'three-parameter flows in 3-D' if three_d else 'a plane of two parameters'}; "
            f"{model.name!r} has {len(model.params)} ({', '.join(model.params)})"
        )
    from flowlab.systems.markov.critical import make_box

    box = make_box(model, box)
    fig = plt.figure(figsize=(7.2, 6.2) if three_d else (6.4, 5.6), layout="constrained")
    ax = fig.add_subplot(projection="3d") if three_d else fig.add_subplot()
    if args.kind == "landscape":
        plots.energy_landscape(landscape(model, chain, extent=box, resolution=args.resolution), ax=ax)
    elif args.kind == "basins":
        from flowlab.systems.markov.basins import basin_grid

        chain.require_nondegenerate("basins")
        fixed = parse_point(args.fix) if args.fix else None
        box = {k: v for k, v in box.items() if not fixed or k not in fixed}
        grid = basin_grid(model, chain, box, args.grid, quiet=args.quiet, fixed=fixed)
        plots.basin_map(grid, landscape=basin_landscape(grid), ax=ax)
    else:
        from flowlab.systems.markov.flow import gradient_flow

        if args.kind == "flow3d":
            plots.flow_3d(flows_3d(model, chain, starts, t_max=args.t_max), ax=ax)
        else:
            results = [gradient_flow(model, chain, s, t_max=args.t_max, dense_output=400) for s in starts]
            if args.kind == "trajectories":
                plots.trajectories(results, ax=ax, background=landscape(model, chain, extent=box))
            else:
                for i, res in enumerate(results):
                    plots.loss_curve(res, ax, label=f"from {args.at[i]}: {res.reached}", references=i == 0)
    save_figure(fig, out, dpi=args.dpi)
    plt.close(fig)
    print(f"wrote {out}", file=sys.stderr)
    return 0



def add_parsers(sub) -> None:
    """Register ``plot`` on the flowlab subparsers ``sub``."""
    p = sub.add_parser("plot", formatter_class=EpilogFormatter, help="one figure: landscape, basins, trajectories, ...",
                       description="Draw one figure and write it as PNG, PDF or SVG (by the extension of --out). "
                       "landscape: energy contours, normalised flow and critical sets (paper Fig. 1 a/c); basins: "
                       "the basin map computed by the flow (Fig. 1 b/d); trajectories: flows from --at points over the "
                       "landscape; loss: their loss curves; flow3d: flows of a three-parameter model in 3-D.",
                       epilog="examples:\n  flowlab plot landscape --p 0.1 --q 0.1 --out fig1a.pdf\n"
                       "  flowlab plot basins --p 0.9 --q 0.9 --grid 256 --out fig1d.png\n"
                       "  flowlab plot trajectories --p 0.5 --q 0.8 --at e=0.02,w=0.01 --at e=1,w=-1.5 --out traj.svg\n"
                       "  flowlab plot flow3d --model ewb --p 0.5 --q 0.8 --at e=1,w=-1.5,b=0 --out flow3d.png")
    p.add_argument("kind", choices=PLOT_KINDS, help="which figure")
    add_model(p, chain_required=True)
    p.add_argument("--out", required=True, metavar="FILE", help="output file: .png, .pdf or .svg")
    p.add_argument("--range", action="append", metavar="NAME:LO:HI",
                   help="plotted range of one parameter (repeatable); others default to -3:3")
    p.add_argument("--at", action="append", metavar="POINT", help="a start point, e.g. e=0.1,w=0.1 (repeatable)")
    p.add_argument("--grid", type=positive_int, default=256, help="basin grid points per axis")
    p.add_argument("--fix", metavar="NAME=VALUE,...", help="basins: hold parameters fixed (a slice), e.g. a=0.5")
    p.add_argument("--resolution", type=lambda t: int_in(t, 8, PLOT_LIMITS["resolution"]), default=300,
                   help=f"landscape sampling per axis, 8 to {PLOT_LIMITS['resolution']} (about 100 bytes per point)")
    p.add_argument("--t-max", type=real, default=1e4, help="flow time limit for trajectories")
    p.add_argument("--dpi", type=lambda t: int_in(t, 1, PLOT_LIMITS["dpi"]), default=200,
                   help=f"resolution of PNG output, at most {PLOT_LIMITS['dpi']} (4 bytes per pixel of a 6.4 x 5.6 inch figure)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_plot)
