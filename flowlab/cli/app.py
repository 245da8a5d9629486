"""The ``flowlab`` command: the top-level parser and ``main``. Each command family lives in its own module
(cli/analysis, basins, plot, train, cooccurrence, ntp_order, demo), with its shared argument helpers in
cli/args.

Heavy modules (SymPy, SciPy, matplotlib) are imported inside the subcommands, so that
``flowlab --help`` starts fast.
"""

from __future__ import annotations

import argparse
import sys

from flowlab import __version__
from flowlab.cli import analysis, basins, cache, cooccurrence, demo, ntp_order, plot, sweep, train
from flowlab.cli.args import EXIT_INPUT, Parser, one_line
from flowlab.engine.errors import FlowlabInputError

#: The command families in the order ``flowlab --help`` lists them.
FAMILIES = (analysis, basins, plot, train, cooccurrence, ntp_order, sweep, demo, cache)


def build_parser() -> argparse.ArgumentParser:
    """The ``flowlab`` parser: every family registers its commands."""
    parser = Parser(
        prog="flowlab",
        description="Gradient-flow analysis of canonical models of how transformers train: binary Markov "
        "chains (Makkuva et al., NeurIPS 2024; the commands chain ... guide), word co-occurrence (Yang et al., "
        "NeurIPS 2024; cooccurrence) and next-token prediction with partial orders (Huang et al., NeurIPS 2024, "
        "reconstructed; ntp-order). `flowlab demo` runs all three end to end.",
        epilog="Exit codes: 0 success, 1 analysis failure, 2 invalid input.",
    )
    parser.add_argument("--version", action="version", version=f"flowlab {__version__}")
    parser.add_argument("--no-cache", action="store_true",
                        help="neither read nor write the on-disk cache of compiled models (see `flowlab cache`)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for family in FAMILIES:
        family.add_parsers(sub)
    return parser


EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def main(argv=None) -> int:
    """Run one command; return its exit code (0 success, 1 analysis failure, 2 invalid input, 130 Ctrl-C).

    Input errors are FlowlabInputError, raised at the boundary (output paths included, before
    any work). Anything else that escapes a command is a failure of flowlab, not of the input:
    one line naming the command and the error type, exit 1; FLOWLAB_DEBUG=1 shows the traceback.
    """
    command = "flowlab"
    try:
        args = build_parser().parse_args(argv)
        command = f"flowlab {args.command}"
        from flowlab.symbolic import cache as disk_cache  # here: hashlib and json are not needed by --help

        disk_cache.set_enabled(not args.no_cache)
        return args.func(args)
    except SystemExit as exc:  # argparse: --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    except FlowlabInputError as exc:
        print(f"{command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"{command}: interrupted; no partial output was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `flowlab chain ... | head -1`: the reader left, nothing to report
        _silence_stdout()
        return EXIT_FAILURE
    except Exception as exc:  # the last resort: see the docstring
        import os

        if os.environ.get("FLOWLAB_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        print(f"{command}: failed ({type(exc).__name__}: {one_line(exc)}); this is not an input error; "
              "set FLOWLAB_DEBUG=1 to see the traceback", file=sys.stderr)
        return EXIT_FAILURE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
