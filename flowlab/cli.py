"""The ``flowlab`` command. It parses arguments, calls the public API and writes outputs.

Heavy modules (SymPy, SciPy, matplotlib) are imported inside the subcommands, so that
``flowlab --help`` starts fast.
"""

from __future__ import annotations

import argparse
import math
import sys

from . import __version__

# Preset model names and solver methods: the library's own (flowlab._defaults imports nothing, so
# --help stays fast).
from ._defaults import FLOW_BUDGET, PLOT_LIMITS
from ._defaults import FLOW_METHODS as METHODS
from ._defaults import PRESET_NAMES as MODEL_NAMES
from .errors import FlowlabInputError

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


def _int_in(text: str, lo: int, hi: int | None = None) -> int:
    """An integer lo <= value (<= hi), or argparse.ArgumentTypeError naming what is allowed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < lo or (hi is not None and value > hi):
        allowed = f"at least {lo}" if hi is None else f"an integer from {lo} to {hi}"
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    return _int_in(text, 1)


def _seed(text: str) -> int:
    """argparse type: a seed, 0 <= seed <= 2**32 - 1."""
    return _int_in(text, 0, MAX_SEED)


def _positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def num(x) -> str:
    """A number with the digits that matter: the shortest text that reads back as the same float."""
    return repr(float(x))


def _float(text: str) -> float:
    """argparse type: a finite float (NaN and inf are refused with a clear message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: 'flowlab CMD: error: MESSAGE (see flowlab CMD --help)', exit 2."""

    def error(self, message):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _one_line(text) -> str:
    """``text`` on one line (newlines and runs of blanks become one space)."""
    return " ".join(str(text).split())


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the uninformative None/False of required options and flags."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


class _RawEpilogFormatter(_HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the examples in the epilog kept on their own lines."""


def _add_model(parser, *, chain_required: bool) -> None:
    parser.add_argument("--model", default=None, help=f"preset model: {', '.join(MODEL_NAMES)} (default: ew)")
    parser.add_argument("--logit", metavar="EXPR",
                        help="a user-defined logit in the parameters, the token x and the attention average m, e.g. "
                        "'e**2*(1 + 2*w*Abs(w))*x - e**2/2' (parsed with a whitelist, never evaluated)")
    parser.add_argument("--params", metavar="NAMES", help="the parameters of --logit, e.g. e,w")
    parser.add_argument("--free-bias", action="store_true", help="with --logit: the bias b is a coordinate of the flow")
    parser.add_argument("--p", type=_float, required=chain_required, default=None,
                        help="switching probability P(0->1), in (0, 1)")
    parser.add_argument("--q", type=_float, required=chain_required, default=None,
                        help="switching probability P(1->0), in (0, 1)")


def _model(args):
    """The preset model (--model) or the user-defined one (--logit/--params)."""
    from .models import get_model, user_model

    if args.logit is None:
        if args.params is not None or args.free_bias:
            raise FlowlabInputError("--params and --free-bias go with --logit")
        return get_model("ew" if args.model is None else args.model)
    if args.model is not None:
        raise FlowlabInputError("give either --model or --logit, not both")
    if not args.params:
        raise FlowlabInputError("--logit needs --params (the parameter names, e.g. e,w)")
    return user_model(args.logit, args.params, bias="free" if args.free_bias else "profiled")


def _write(text: str, out: str | None) -> None:
    if out:
        from .io import atomic_write_text

        atomic_write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _check_out_file(args, name: str = "out", what: str = "--out") -> None:
    """Refuse an output file that cannot be written (a folder, an unwritable place) before any work."""
    if getattr(args, name, None) is not None:
        from .io import check_output_file

        check_output_file(getattr(args, name), what)


def _chain(args):
    from .markov import MarkovChain

    if (args.p is None) != (args.q is None):
        raise FlowlabInputError("give both --p and --q, or neither")
    return None if args.p is None else MarkovChain(args.p, args.q)


def cmd_derive(args) -> int:
    from .derivation import derive
    from .io import to_json
    from .latex import to_json_dict, to_latex, to_markdown

    _check_out_file(args)
    model, chain = _model(args), _chain(args)
    d = derive(model)
    if args.format == "latex":
        text = to_latex(d, chain)
    elif args.format == "markdown":
        text = to_markdown(d, chain)
    else:
        text = to_json(to_json_dict(d, chain))
    _write(text, args.out)
    failed = [i.name for i in d.identities if not i.verified]
    if failed:
        print(f"flowlab: identities NOT verified by SymPy: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _eval_kstate(args) -> int:
    """eval on a k-state chain: --kernel FILE --logits 'g0; g1; ...' --params NAMES --at POINT."""
    from .io import to_json
    from .kstate import KStateChain, KStateModel, KStateNumeric
    from .parse import parse_logit, parse_params

    if args.p is not None or args.q is not None or args.model or args.logit:
        raise FlowlabInputError("with --kernel give --logits and --params (not --p/--q, --model or --logit)")
    if not args.logits or not args.params:
        raise FlowlabInputError("--kernel needs --logits 'g_0; g_1; ...' (one per next token) and --params")
    chain = KStateChain.from_file(args.kernel)
    names = parse_params(args.params)
    texts = [t for t in args.logits.split(";")]
    if len(texts) != chain.k:
        raise FlowlabInputError(f"the kernel has k = {chain.k} states: give {chain.k} logits separated by ';', "
                                f"got {len(texts)}")
    model = KStateModel("user", names, tuple(parse_logit(t, names) for t in texts))
    theta = point_vector(model, parse_point(args.at))
    result = KStateNumeric(model, chain).evaluate(theta)
    if args.json:
        _write(to_json(result), None)
    else:
        print(f"k-state model at {args.at} (k = {chain.k}, stationary law {[round(float(x), 6) for x in chain.stationary]})")
        print(f"  loss      {result['loss']:.12g}   (entropy rate {chain.entropy_rate:.12g}, "
              f"unigram {chain.unigram_loss:.12g})")
        print("  gradient  " + "  ".join(f"{k}={v:.6g}" for k, v in result["gradient"].items()))
    return 0


def cmd_eval(args) -> int:
    import numpy as np

    from .io import to_json
    from .numeric import NumericModel

    if args.kernel:
        return _eval_kstate(args)
    if args.logits:
        raise FlowlabInputError("--logits (one logit per next token) goes with --kernel FILE")
    model, chain = _model(args), _chain(args)
    if chain is None:
        raise FlowlabInputError("give --p and --q (or --kernel FILE with --logits for a k-state chain)")
    theta = point_vector(model, parse_point(args.at))
    result = NumericModel(model, chain).evaluate(theta)
    if args.context is not None:
        from .context import ContextModel
        from .numeric import require_finite

        cm = ContextModel(model, chain, args.context)
        with np.errstate(all="ignore"):
            loss, grad = cm.loss_and_gradient(theta)
        require_finite({f"finite-context (N = {args.context}) loss": loss, "finite-context gradient": grad},
                       model.params, theta)
        result["long_context"] = {"loss": result["loss"], "gradient": result["gradient"]}
        result.update(context=args.context, loss=float(loss), gradient=dict(zip(model.params, grad.tolist())),
                      gradient_norm=float(np.linalg.norm(grad)), context_dropped_mass=cm.terms.dropped_mass)
        if model.bias == "profiled":
            result["optimal_bias"] = float(cm.optimal_bias(theta))
        for key in ("hessian", "gap"):  # long-context quantities: kept under long_context
            result["long_context"][key] = result.pop(key)
    if args.json:
        _write(to_json(result), None)
    else:
        print(f"model {model.name} at {args.at}  ({chain}, {chain.regime})")
        print(f"  loss      {result['loss']:.12g}   (H = {chain.entropy_rate:.12g}, h(pi1) = {chain.unigram_loss:.12g})")
        if args.context is not None:
            print(f"  (finite context N = {args.context}; long-context loss {result['long_context']['loss']:.12g})")
        print("  gradient  " + "  ".join(f"{k}={v:.6g}" for k, v in result["gradient"].items()))
        long = result.get("long_context", result)
        print("  hessian   " + "  ".join(str([round(x, 6) for x in row]) for row in long["hessian"]))
        print(f"  gap D     {long['gap']:.12g}   (D* = {chain.optimal_gap:.12g}, long context)")
        for k, v in result["invariants"].items():
            print(f"  {k:<9} {v if v is None else format(v, '.12g')}")
    if chain.degenerate:
        print("flowlab: note: p + q = 1, the chain is i.i.d. (unigram = bigram)", file=sys.stderr)
    return 0


def cmd_flow(args) -> int:
    from .flow import gradient_flow
    from .io import check_table_path, to_json, write_table

    if args.trajectory is not None:
        check_table_path(args.trajectory, "--trajectory")
    model, chain = _model(args), _chain(args)
    theta0 = point_vector(model, parse_point(args.at))
    result = gradient_flow(
        model, chain, theta0, t_max=args.t_max, grad_tol=args.grad_tol, method=args.method,
        rtol=args.rtol, atol=args.atol, allow_degenerate=args.allow_degenerate, context=args.context,
        max_steps=args.max_steps, max_seconds=args.max_seconds, progress=not args.quiet,
    )
    payload = result.as_dict()
    if args.trajectory:
        write_table(args.trajectory, result.columns())
        payload["trajectory"] = args.trajectory
    if args.json:
        _write(to_json(payload), None)
    else:
        fin = ", ".join(f"{k}={v:.6g}" for k, v in payload["final"].items())
        print(f"{model.name} from {args.at} ({chain}, {chain.regime})")
        print(f"  reached   {payload['reached']}  [{payload['status']}] {payload['message']}")
        print(f"  final     {fin}  at t = {payload['t_final']:.6g}")
        print(f"  loss      {payload['loss']:.12g}   (H = {chain.entropy_rate:.12g}, h(pi1) = {chain.unigram_loss:.12g})")
        if payload["energy_drift"] is not None:
            print(f"  E drift   {payload['energy_drift']:.3g}")
    return 0 if result.status != "failed" else 1


def cmd_critical(args) -> int:
    from .critical import critical_sets, format_text, regions_table, result_latex, table_latex, table_text
    from .io import to_json

    _check_out_file(args)
    model = _model(args)
    box = parse_box(args.box)
    options = dict(method=args.method, starts=args.starts, seed=args.seed, samples=args.samples)
    if args.regions:
        if args.p is not None or args.q is not None:
            raise FlowlabInputError("--regions uses one chain per region of p + q; do not give --p/--q")
        table = regions_table(model, box, **options)
        text = to_json(table) if args.json else table_latex(table) if args.latex else table_text(table)
        _write(text, args.out)
        return 0 if all(table["complete"].values()) or args.method != "auto" else 1
    if args.p is None or args.q is None:
        raise FlowlabInputError("give --p and --q (or --regions for the table over p + q)")
    result = critical_sets(model, _chain(args), box, **options)
    text = to_json(result.as_dict()) if args.json else result_latex(result) if args.latex else format_text(result)
    _write(text, args.out)
    if result.agreement is not None and not result.agreement["agree"]:
        print("flowlab critical: the symbolic and numeric paths disagree (see 'agreement')", file=sys.stderr)
        return 1
    return 0


def cmd_basins(args) -> int:
    from .basins import BasinGrid, FlowSettings, basin_grid, gaussian_basin
    from .io import atomic_folder, atomic_write_text, check_output_dir, to_json

    files = ("gaussian.json",) if args.gaussian is not None else BasinGrid.FILES
    if args.out is not None:
        check_output_dir(args.out, "--out", files)
    model, chain = _model(args), _chain(args)
    settings = FlowSettings(t_max=args.t_max, rtol=args.rtol, atol=args.atol, chunk=args.chunk)
    if args.gaussian is not None:
        if args.range or args.grid is not None:
            raise FlowlabInputError("--gaussian samples random initialisations: do not combine it with --grid/--range")
        result = gaussian_basin(model, chain, args.gaussian, args.samples, args.seed, method=args.method,
                                settings=settings, quiet=args.quiet, max_seconds=args.max_seconds)
        if args.out:
            with atomic_folder(args.out, "--out", files) as tmp:
                atomic_write_text(tmp / files[0], to_json(result))
        if args.json:
            sys.stdout.write(to_json(result))
        else:
            lo, hi = result["ci95"]
            c = result["counts"]
            print(f"{model.name} at {chain} ({chain.regime}), theta0 ~ N(0, {num(args.gaussian)}^2 I), "
                  f"{args.samples} draws (seed {args.seed})")
            print(f"  P(global) = {result['prob_global']:.4f}   95% CI [{lo:.4f}, {hi:.4f}]")
            print(f"  counts: global {c['global']}, non-global {c['nonglobal']}, undetermined {c['undetermined']}")
        return 0
    grid = 128 if args.grid is None else args.grid
    fixed = parse_point(args.fix) if args.fix else None
    result = basin_grid(model, chain, parse_box(args.range), grid, method=args.method, settings=settings,
                        max_seconds=args.max_seconds, quiet=args.quiet, fixed=fixed)
    payload = result.as_dict()
    if args.out:
        paths = result.save(args.out)
        payload["files"] = [str(p) for p in paths]
    if args.json:
        sys.stdout.write(to_json(payload))
    else:
        c, f = payload["counts"], payload["fractions"]
        shape = "x".join(str(n) for n in payload["shape"])
        print(f"{model.name} at {chain} ({chain.regime}), {shape} grid"
              + (f" at {args.fix}" if args.fix else "") + f", method {args.method}: {payload['timings']['total_s']:.2f} s")
        print(f"  global     {c['global']:>9}  ({f['global']:.4f})  -> {', '.join(result.reference.global_sets)}")
        print(f"  non-global {c['nonglobal']:>9}  ({f['nonglobal']:.4f})  -> {', '.join(result.reference.nonglobal_min_sets)}")
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


def cmd_chain(args) -> int:
    """Facts of a chain: binary (--p/--q) or k-state (--kernel FILE)."""
    from .io import to_json

    if args.kernel:
        if args.p is not None or args.q is not None:
            raise FlowlabInputError("give either --kernel FILE or --p/--q, not both")
        from .kstate import KStateChain

        chain = KStateChain.from_file(args.kernel)
        facts = chain.as_dict()
    else:
        chain = _chain(args)
        if chain is None:
            raise FlowlabInputError("give --p and --q, or --kernel FILE (a k x k kernel as JSON or CSV)")
        facts = chain.as_dict()
    if args.json:
        sys.stdout.write(to_json(facts))
    else:
        for key, value in facts.items():
            print(f"{key:>{max(map(len, facts))}}: {value}")
    return 0


PLOT_KINDS = ("landscape", "basins", "trajectories", "loss", "flow3d")


def cmd_plot(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plots
    from .io import check_figure_path, save_figure

    model, chain = _model(args), _chain(args)
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
    from .critical import make_box

    box = make_box(model, box)
    fig = plt.figure(figsize=(7.2, 6.2) if three_d else (6.4, 5.6), layout="constrained")
    ax = fig.add_subplot(projection="3d") if three_d else fig.add_subplot()
    if args.kind == "landscape":
        plots.energy_landscape(model, chain, extent=box, ax=ax, resolution=args.resolution)
    elif args.kind == "basins":
        from .basins import basin_grid

        chain.require_nondegenerate("basins")
        fixed = parse_point(args.fix) if args.fix else None
        box = {k: v for k, v in box.items() if not fixed or k not in fixed}
        plots.basin_map(basin_grid(model, chain, box, args.grid, quiet=args.quiet, fixed=fixed), ax=ax)
    else:
        from .flow import gradient_flow

        if args.kind == "flow3d":
            plots.flow_3d(model, chain, starts, ax=ax, t_max=args.t_max)
        else:
            results = [gradient_flow(model, chain, s, t_max=args.t_max) for s in starts]
            if args.kind == "trajectories":
                plots.trajectories(results, ax=ax, background="energy", extent=box)
            else:
                for i, res in enumerate(results):
                    plots.loss_curve(res, ax, label=f"from {args.at[i]}: {res.reached}", references=i == 0)
    save_figure(fig, out, dpi=args.dpi)
    plt.close(fig)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, quiet=args.quiet, fast=args.fast)
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    parser = _Parser(
        prog="flowlab",
        description="Gradient-flow analysis of canonical models of how transformers train: binary Markov "
        "chains (Makkuva et al., NeurIPS 2024; the commands chain ... guide), word co-occurrence (Yang et al., "
        "NeurIPS 2024; cooccurrence) and next-token prediction with partial orders (Huang et al., NeurIPS 2024, "
        "reconstructed; ntp-order). `flowlab demo` runs all three end to end.",
        epilog="Exit codes: 0 success, 1 analysis failure, 2 invalid input.",
    )
    parser.add_argument("--version", action="version", version=f"flowlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("chain", formatter_class=fmt, help="facts of a chain: stationary law, entropy rate, unigram loss",
                       description="Stationary law, entropy rate (the bigram loss), unigram loss and the optimal gap of a "
                       "binary chain (--p/--q) or of a k-state chain (--kernel FILE: a JSON list of rows, "
                       "{\"kernel\": [...]}, or a CSV file without header).")
    p.add_argument("--p", type=_float, help="switching probability P(0->1), in (0, 1)")
    p.add_argument("--q", type=_float, help="switching probability P(1->0), in (0, 1)")
    p.add_argument("--kernel", metavar="FILE", help="a k x k transition matrix (.json or .csv)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_chain)

    p = sub.add_parser("derive", formatter_class=fmt, help="symbolic loss, gradient, Hessian, gap, invariants",
                       description="Derive a model's loss and its consequences with SymPy; print LaTeX, Markdown or JSON.")
    _add_model(p, chain_required=False)
    p.add_argument("--format", choices=("latex", "markdown", "json"), default="markdown")
    p.add_argument("--out", help="write to this file (atomically) instead of stdout")
    p.set_defaults(func=cmd_derive)

    p = sub.add_parser("eval", formatter_class=fmt, help="loss, gradient, Hessian, gap and energy at a point",
                       description="Evaluate the compiled model at one point (binary chain --p/--q, or a k-state "
                       "chain --kernel FILE with --logits).")
    _add_model(p, chain_required=False)
    p.add_argument("--at", required=True, help="the point, e.g. e=0.3,w=-1.2")
    p.add_argument("--context", type=_positive_int, metavar="N",
                   help="exact finite-context loss over positions 1..N (default: the long-context limit)")
    p.add_argument("--kernel", metavar="FILE", help="a k-state chain: k x k transition matrix (.json or .csv)")
    p.add_argument("--logits", metavar="'G0; G1; ...'",
                   help="with --kernel: the softmax logit of each next token, in the parameters and the current token x")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("flow", formatter_class=fmt, help="integrate one gradient-flow trajectory",
                       description="Integrate d theta/dt = -grad L from a point with scipy's solve_ivp and "
                       "report which critical set it reached.")
    _add_model(p, chain_required=True)
    p.add_argument("--at", required=True, help="initial point, e.g. e=0.1,w=0.1")
    p.add_argument("--t-max", type=_float, default=1e4, help="integration time limit")
    p.add_argument("--grad-tol", type=_float, default=1e-8, help="stop when |grad L| falls below this")
    p.add_argument("--method", default="DOP853", choices=METHODS)
    p.add_argument("--rtol", type=_float, default=1e-10, help="solver relative tolerance")
    p.add_argument("--atol", type=_float, default=1e-12, help="solver absolute tolerance")
    p.add_argument("--trajectory", metavar="FILE", help="also write the trajectory (.npz or .csv)")
    p.add_argument("--allow-degenerate", action="store_true",
                   help="integrate even when p + q = 1 (every critical point is then global)")
    p.add_argument("--context", type=_positive_int, metavar="N",
                   help="flow of the exact finite-context loss over positions 1..N (default: long context)")
    p.add_argument("--max-steps", type=_positive_int, default=FLOW_BUDGET["max_steps"],
                   help="stop with status 'budget' after this many accepted solver steps (typical flows take "
                   "under 300; a stiff flow from large |theta| converges faster with --method LSODA)")
    p.add_argument("--max-seconds", type=_float, default=FLOW_BUDGET["max_seconds"],
                   help="stop with status 'budget' after this much wall time")
    p.add_argument("--quiet", action="store_true", help="no progress bar (shown on stderr for flows longer than 2 s)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_flow)

    p = sub.add_parser("critical", formatter_class=_RawEpilogFormatter, help="critical points and sets, classified",
                       description="Find the critical sets of the loss in a box and classify them (global minimum, "
                       "local minimum/maximum, saddle, degenerate). Profiled models are solved symbolically "
                       "({D = D*} and {grad D = 0}) and cross-checked by a numeric multi-start; 'complete' is true "
                       "only when both agree. Exit code 1 when they disagree.",
                       epilog="examples:\n  flowlab critical --p 0.1 --q 0.1\n"
                       "  flowlab critical --model ewb --p 0.5 --q 0.8 --box b:-1:1 --json\n"
                       "  flowlab critical --regions --latex")
    _add_model(p, chain_required=False)
    p.add_argument("--box", action="append", metavar="NAME:LO:HI",
                   help="search box of one parameter (repeatable); others default to -3:3")
    p.add_argument("--regions", action="store_true",
                   help="the classification table for p+q<1, p+q=1 and p+q>1 instead of one chain")
    p.add_argument("--method", choices=("auto", "symbolic", "numeric"), default="auto",
                   help="auto: symbolic with a numeric cross-check when possible")
    p.add_argument("--starts", type=_positive_int, default=1024, help="numeric multi-start points (Sobol)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the scrambled Sobol starts (0 to 2**32 - 1)")
    p.add_argument("--samples", type=_positive_int, default=64, help="sample points reported per set")
    fmt_group = p.add_mutually_exclusive_group()
    fmt_group.add_argument("--json", action="store_true", help="print a JSON object")
    fmt_group.add_argument("--latex", action="store_true", help="print a LaTeX tabular")
    p.add_argument("--out", help="write to this file (atomically) instead of stdout")
    p.set_defaults(func=cmd_critical)

    p = sub.add_parser("basins", formatter_class=_RawEpilogFormatter, help="basins of convergence over a grid or random starts",
                       description="Label initialisations by where the gradient flow takes them: 1 = a global minimum, "
                       "0 = a non-global minimum, -1 = undetermined by --t-max. Grid mode writes DIR/basins.npz "
                       "(one axis per parameter and 'label', indexing ij in parameter order) and DIR/basins.json; "
                       "--gaussian estimates P(global) for theta0 ~ N(0, sigma^2 I) with a 95%% interval.",
                       epilog="examples:\n  flowlab basins --p 0.1 --q 0.1 --grid 256 --out basins-0.1\n"
                       "  flowlab basins --p 0.5 --q 0.8 --gaussian 0.02 --samples 2000 --json\n"
                       "  flowlab basins --p 0.9 --q 0.9 --grid 512 --method invariant --out inv")
    _add_model(p, chain_required=True)
    p.add_argument("--grid", type=_positive_int, default=None, help="points per axis (default 128)")
    p.add_argument("--range", action="append", metavar="NAME:LO:HI",
                   help="grid range of one parameter (repeatable); others default to -3:3")
    p.add_argument("--fix", metavar="NAME=VALUE,...", help="hold parameters fixed: a slice, e.g. a=0.5 for model ewa")
    p.add_argument("--method", choices=("flow", "invariant"), default="flow",
                   help="flow: batch integration (any model); invariant: exact from the conserved E (ew)")
    p.add_argument("--gaussian", type=_float, metavar="SIGMA", help="random starts theta0 ~ N(0, SIGMA^2 I) instead of a grid")
    p.add_argument("--samples", type=_positive_int, default=1000, help="number of random starts (with --gaussian)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random starts (0 to 2**32 - 1)")
    p.add_argument("--t-max", type=_float, default=1e4, help="flow time after which a point is undetermined")
    p.add_argument("--rtol", type=_float, default=1e-6, help="batch integrator relative tolerance")
    p.add_argument("--atol", type=_float, default=1e-9, help="batch integrator absolute tolerance")
    p.add_argument("--chunk", type=_positive_int, default=65536, help="points integrated together (bounds memory)")
    p.add_argument("--max-seconds", type=_positive_float, default=1800.0,
                   help="refuse grids estimated to take longer")
    p.add_argument("--out", metavar="DIR", help="write basins.npz and basins.json (grid) or gaussian.json here")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_basins)

    p = sub.add_parser("plot", formatter_class=_RawEpilogFormatter, help="one figure: landscape, basins, trajectories, ...",
                       description="Draw one figure and write it as PNG, PDF or SVG (by the extension of --out). "
                       "landscape: energy contours, normalised flow and critical sets (paper Fig. 1 a/c); basins: "
                       "the basin map computed by the flow (Fig. 1 b/d); trajectories: flows from --at points over the "
                       "landscape; loss: their loss curves; flow3d: flows of a three-parameter model in 3-D.",
                       epilog="examples:\n  flowlab plot landscape --p 0.1 --q 0.1 --out fig1a.pdf\n"
                       "  flowlab plot basins --p 0.9 --q 0.9 --grid 256 --out fig1d.png\n"
                       "  flowlab plot trajectories --p 0.5 --q 0.8 --at e=0.02,w=0.01 --at e=1,w=-1.5 --out traj.svg\n"
                       "  flowlab plot flow3d --model ewb --p 0.5 --q 0.8 --at e=1,w=-1.5,b=0 --out flow3d.png")
    p.add_argument("kind", choices=PLOT_KINDS, help="which figure")
    _add_model(p, chain_required=True)
    p.add_argument("--out", required=True, help="output file: .png, .pdf or .svg")
    p.add_argument("--range", action="append", metavar="NAME:LO:HI",
                   help="plotted range of one parameter (repeatable); others default to -3:3")
    p.add_argument("--at", action="append", metavar="POINT", help="a start point, e.g. e=0.1,w=0.1 (repeatable)")
    p.add_argument("--grid", type=_positive_int, default=256, help="basin grid points per axis")
    p.add_argument("--fix", metavar="NAME=VALUE,...", help="basins: hold parameters fixed (a slice), e.g. a=0.5")
    p.add_argument("--resolution", type=lambda t: _int_in(t, 8, PLOT_LIMITS["resolution"]), default=300,
                   help=f"landscape sampling per axis, 8 to {PLOT_LIMITS['resolution']} (about 100 bytes per point)")
    p.add_argument("--t-max", type=_float, default=1e4, help="flow time limit for trajectories")
    p.add_argument("--dpi", type=lambda t: _int_in(t, 1, PLOT_LIMITS["dpi"]), default=200,
                   help=f"resolution of PNG output, at most {PLOT_LIMITS['dpi']} (4 bytes per pixel of a 6.4 x 5.6 inch figure)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_plot)

    from .train_cli import add_parsers as add_training_parsers

    add_training_parsers(sub, fmt)

    from .cooccurrence_cli import add_parsers as add_cooccurrence_parsers

    add_cooccurrence_parsers(sub, fmt)

    from .ntp_order_cli import add_parsers as add_ntp_order_parsers

    add_ntp_order_parsers(sub, fmt)

    p = sub.add_parser("demo", formatter_class=fmt, help="the main job: the paper's setting end to end",
                       description="The paper's setting end to end, written to a folder: derivations (Markdown, "
                       "LaTeX, PDF when pdflatex is present), critical sets by region of p + q, Figure 1 (energy, flow "
                       "and basins for p = q = 0.1 and 0.9), basin maps and Gaussian-initialisation probabilities, "
                       "flows at p = 0.5, q = 0.8, figures (PNG and PDF), JSON/NPZ, and report.md.")
    p.add_argument("--out", default="flowlab-demo", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--fast", action="store_true", help="coarse grids and few samples (a quick look; used by the tests)")
    p.set_defaults(func=cmd_demo)
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
        return args.func(args)
    except SystemExit as exc:  # argparse: --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    except FlowlabInputError as exc:
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
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
        print(f"{command}: failed ({type(exc).__name__}: {_one_line(exc)}); this is not an input error; "
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
