"""The ``flowlab demo`` command: the paper's setting end to end, written to a folder."""

from __future__ import annotations

from flowlab.cli.args import HelpFormatter


def cmd_demo(args) -> int:
    from flowlab.report.demo import run_demo

    run_demo(args.out, quiet=args.quiet, fast=args.fast)
    return 0



def add_parsers(sub) -> None:
    """Register ``demo`` on the flowlab subparsers ``sub``."""
    fmt = HelpFormatter
    p = sub.add_parser("demo", formatter_class=fmt, help="the main job: the paper's setting end to end",
                       description="The paper's setting end to end, written to a folder: derivations (Markdown, "
                       "LaTeX, PDF when pdflatex is present), critical sets by region of p + q, Figure 1 (energy, flow "
                       "and basins for p = q = 0.1 and 0.9), basin maps and Gaussian-initialisation probabilities, "
                       "flows at p = 0.5, q = 0.8, figures (PNG and PDF), JSON/NPZ, and report.md.")
    p.add_argument("--out", metavar="DIR", default="flowlab-demo", help="output folder (new, empty or an earlier demo's)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--fast", action="store_true", help="coarse grids and few samples (a quick look; used by the tests)")
    p.set_defaults(func=cmd_demo)
