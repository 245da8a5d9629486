"""Argument helpers shared by every ``flowlab`` command family: types, the parser, model and chain options.

One vocabulary of options (checked over every command by tests/test_cli_vocabulary.py):

- every option has help; ``--help`` shows every default except None (the help then says what
  happens) and the False of a switch -- 0 and 0.0 are shown; a default is never stated twice;
- ``--p P --q Q`` is the binary chain: always a pair, never argparse-required (:func:`add_chain`,
  :func:`chain_from_args`); a command that needs a chain and has no default refuses with one
  message; ``train`` and ``guide`` default to the paper's Figure 4 chain (0.5, 0.8);
- ``--model`` is always a fixed choice; a user logit is always ``--logit`` (with ``--kernel``: one
  per next token, separated by ';'); the interval of one parameter is always ``--range NAME:LO:HI``
  (``--logits`` and ``--box`` are former spellings, still parsed but not shown);
- a path says FILE or DIR (``--out``, ``--trajectory``, ``--kernel``, ``--data``); a point is
  ``--at POINT``; ``--seed`` is an integer 0..2**32 - 1 with default 0; ``--json`` prints one JSON
  object and ``--quiet`` silences progress output.
- ``--system``: no command applies to several systems today. The Markov commands (chain ... guide)
  belong to system markov; the families ``cooccurrence`` and ``ntp-order`` are named by their
  system; ``demo`` runs all three as one report.

Only argparse, math and sys (and the import-free flowlab.systems.markov.defaults) are imported at
module level, so ``flowlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import sys

from flowlab.engine.errors import FlowlabInputError

# Preset model names: the library's own (flowlab.systems.markov.defaults imports nothing, so --help stays fast).
from flowlab.systems.markov.defaults import PRESET_NAMES as MODEL_NAMES

EXIT_INPUT = 2


def parse_point(text: str) -> dict[str, float]:
    """Parse ``name=value,name=value`` (e.g. ``e=0.3,w=-1.2``) without evaluating anything."""
    point = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise FlowlabInputError(
                f"malformed point {text!r}: expected name=value pairs separated by commas, "
                "e.g. e=0.3,w=-1.2"
            )
        if name in point:
            raise FlowlabInputError(f"parameter {name!r} is given twice in {text!r}")
        try:
            number = float(value)
        except ValueError:
            raise FlowlabInputError(f"the value of {name!r} is not a number: {value!r}") from None
        if not math.isfinite(number):
            raise FlowlabInputError(f"the value of {name!r} must be finite, got {value!r}")
        point[name] = number
    return point


def point_vector(model, point: dict[str, float]):
    """The point in the model's parameter order; every parameter given, no unknown names."""
    unknown = [n for n in point if n not in model.params]
    missing = [n for n in model.params if n not in point]
    if unknown or missing:
        raise FlowlabInputError(
            f"model {model.name!r} has parameters {','.join(model.params)}"
            + (f"; unknown: {','.join(unknown)}" if unknown else "")
            + (f"; missing: {','.join(missing)}" if missing else "")
        )
    return [point[n] for n in model.params]


#: Largest accepted |lo|, |hi| of a --box/--range.
MAX_COORDINATE = 1e6


def parse_box(items) -> dict[str, tuple[float, float]]:
    """``["e:-3:3", "w:-2:2"]`` -> {"e": (-3.0, 3.0), "w": (-2.0, 2.0)}, without evaluating anything."""
    box = {}
    for item in items or ():
        parts = item.split(":")
        if len(parts) != 3 or not parts[0].strip():
            raise FlowlabInputError(f"malformed box {item!r}: expected name:lo:hi, e.g. e:-3:3")
        name = parts[0].strip()
        try:
            lo, hi = float(parts[1]), float(parts[2])
        except ValueError:
            raise FlowlabInputError(f"box {item!r}: lo and hi must be numbers") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
            raise FlowlabInputError(f"box {item!r}: need finite lo < hi")
        if max(abs(lo), abs(hi)) > MAX_COORDINATE:
            raise FlowlabInputError(
                f"box {item!r}: coordinates must lie within +-{MAX_COORDINATE:g} (the presets' logits grow like "
                "|theta|^4: 1e24 there, and float64 overflows beyond about 1e77)"
            )
        if name in box:
            raise FlowlabInputError(f"box of {name!r} given twice")
        box[name] = (lo, hi)
    return box


#: Seeds: the non-negative integers that every generator flowlab uses accepts (NumPy's legacy
#: and new generators, SciPy's Sobol scrambling, torch.manual_seed).
MAX_SEED = 2**32 - 1


def int_in(text: str, lo: int, hi: int | None = None) -> int:
    """An integer lo <= value (<= hi), or argparse.ArgumentTypeError naming what is allowed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < lo or (hi is not None and value > hi):
        allowed = f"at least {lo}" if hi is None else f"an integer from {lo} to {hi}"
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    return int_in(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return int_in(text, 0)


def seed(text: str) -> int:
    """argparse type: a seed, 0 <= seed <= 2**32 - 1."""
    return int_in(text, 0, MAX_SEED)


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = real(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def num(x) -> str:
    """A number with the digits that matter: the shortest text that reads back as the same float."""
    return repr(float(x))


def real(text: str) -> float:
    """argparse type: a finite float (NaN and inf are refused with a clear message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: 'flowlab CMD: error: MESSAGE (see flowlab CMD --help)', exit 2."""

    def error(self, message):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def one_line(text) -> str:
    """``text`` on one line (newlines and runs of blanks become one space)."""
    return " ".join(str(text).split())


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show every default (0 and 0.0 included), except None (the help says what happens then) and the
    False of a switch; a help text that states its default itself gets no second one."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return action.help
        if "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class EpilogFormatter(HelpFormatter):
    """Defaults shown; a text with line breaks (the examples of an epilog) is kept as written, a
    description without them is wrapped to the terminal."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


#: The chain of the paper's Figure 4: the default of the commands that reproduce it (train, guide).
FIGURE4_CHAIN = (0.5, 0.8)


def add_chain(parser, *, required: bool = False, default: tuple[float, float] | None = None) -> None:
    """--p and --q, the binary chain: always a pair, never argparse-required (one rule for every command).

    ``required``: :func:`chain_from_args` refuses to go on without them; ``default``: the chain used
    when neither is given (shown in the help).
    """
    need = " (required)" if required else ""
    p_default = f" (default: {default[0]}, with --q {default[1]})" if default else ""
    q_default = f" (default: {default[1]}, with --p {default[0]})" if default else ""
    parser.add_argument("--p", type=real, metavar="P", default=None,
                        help=f"switching probability P(0->1), in (0, 1); given with --q{need}{p_default}")
    parser.add_argument("--q", type=real, metavar="Q", default=None,
                        help=f"switching probability P(1->0), in (0, 1); given with --p{need}{q_default}")
    parser.set_defaults(chain_required=required, chain_default=default)


LOGIT_HELP = ("a user-defined logit in the parameters, the token x and the attention average m, e.g. "
              "'e**2*(1 + 2*w*Abs(w))*x - e**2/2' (parsed with a whitelist, never evaluated)")


def add_model(parser, *, chain_required: bool, logit_help: str = LOGIT_HELP) -> None:
    """The model options (--model, or --logit with --params and --free-bias) and the chain (--p, --q)."""
    parser.add_argument("--model", default=None, choices=MODEL_NAMES,
                        help="preset model (default: ew; not with --logit)")
    parser.add_argument("--logit", metavar="EXPR", help=logit_help)
    parser.add_argument("--params", metavar="NAMES", help="the parameters of --logit, e.g. e,w")
    parser.add_argument("--free-bias", action="store_true", help="with --logit: the bias b is a coordinate of the flow")
    add_chain(parser, required=chain_required)


def model_spec_from_args(args):
    """The model of --model, or of --logit/--params/--free-bias, as a spec (no SymPy: a warm ``eval`` reads the
    compiled model from the on-disk cache)."""
    from flowlab.systems.markov.numeric import ModelSpec

    if args.logit is None:
        if args.params is not None or args.free_bias:
            raise FlowlabInputError("--params and --free-bias go with --logit")
        return ModelSpec(preset="ew" if args.model is None else args.model)
    if args.model is not None:
        raise FlowlabInputError("give either --model or --logit, not both")
    if not args.params:
        raise FlowlabInputError("--logit needs --params (the parameter names, e.g. e,w)")
    return ModelSpec(logit=args.logit, params=args.params, bias="free" if args.free_bias else "profiled")


def model_from_args(args):
    """The preset model (--model) or the user-defined one (--logit/--params)."""
    return model_spec_from_args(args).build()


def write_output(text: str, out: str | None) -> None:
    """``text`` to the file ``out`` (atomically, with a note on stderr), or to stdout when ``out`` is None."""
    if out:
        from flowlab.engine.io import atomic_write_text

        atomic_write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def check_out_file(args, name: str = "out", what: str = "--out") -> None:
    """Refuse an output file that cannot be written (a folder, an unwritable place) before any work."""
    if getattr(args, name, None) is not None:
        from flowlab.engine.io import check_output_file

        check_output_file(getattr(args, name), what)


def check_out_dir(args, files, name: str = "out", what: str = "--out") -> None:
    """Refuse an output folder that cannot take ``files`` before any work (nothing is created)."""
    if getattr(args, name, None) is not None:
        from flowlab.engine.io import check_output_dir

        check_output_dir(getattr(args, name), what, files)


def chain_from_args(args):
    """The binary chain of --p/--q: both or neither; without them the command's default chain, or
    None, or (when the command needs one) an error."""
    from flowlab.systems.markov.chain import MarkovChain

    if (args.p is None) != (args.q is None):
        raise FlowlabInputError("give both --p and --q, or neither")
    if args.p is not None:
        return MarkovChain(args.p, args.q)
    default = getattr(args, "chain_default", None)
    if default is not None:
        return MarkovChain(*default)
    if getattr(args, "chain_required", False):
        raise FlowlabInputError("give --p and --q (the switching probabilities of the binary chain)")
    return None
