"""The analysis commands of system ``markov``: chain, derive, eval, flow, critical.

Only argparse-level helpers are imported at module level, so ``flowlab --help`` stays fast;
SymPy, NumPy and SciPy are imported inside the commands.
"""

from __future__ import annotations

import argparse
import sys

from flowlab.cli.args import (
    LOGIT_HELP,
    EpilogFormatter,
    HelpFormatter,
    add_chain,
    add_model,
    chain_from_args,
    check_out_file,
    model_from_args,
    model_spec_from_args,
    parse_box,
    parse_point,
    point_vector,
    positive_int,
    real,
    seed,
    write_output,
)
from flowlab.engine.errors import FlowlabInputError
from flowlab.systems.markov.defaults import FLOW_BUDGET
from flowlab.systems.markov.defaults import FLOW_METHODS as METHODS


def cmd_derive(args) -> int:
    from flowlab.engine.io import to_json
    from flowlab.systems.markov.derivation import derive
    from flowlab.systems.markov.latex import to_json_dict, to_latex, to_markdown

    check_out_file(args)
    model, chain = model_from_args(args), chain_from_args(args)
    d = derive(model)
    if args.format == "latex":
        text = to_latex(d, chain)
    elif args.format == "markdown":
        text = to_markdown(d, chain)
    else:
        text = to_json(to_json_dict(d, chain))
    write_output(text, args.out)
    failed = [i.name for i in d.identities if not i.verified]
    if failed:
        print(f"flowlab: identities NOT verified by SymPy: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


#: --kernel, and --logit of the commands that take a binary (--p/--q) or a k-state chain (--kernel).
KERNEL_HELP = "a k-state chain instead of --p/--q: k x k transition matrix (.json or .csv)"
KSTATE_LOGIT_HELP = (LOGIT_HELP + "; with --kernel: the logit of each next token in the parameters and the current "
                     "token x, separated by ';', e.g. 'u*x; 0; v'")


def _binary_chain(args):
    """The chain of --p/--q, required when there is no --kernel."""
    chain = chain_from_args(args)
    if chain is None:
        raise FlowlabInputError("give --p and --q (or --kernel FILE with --logit 'g0; g1; ...' for a k-state chain)")
    return chain


def _kstate_from_args(args):
    """(model, chain) of a k-state chain: --kernel FILE --logit 'g0; g1; ...' --params NAMES."""
    from flowlab.systems.markov.kstate import KStateChain, KStateModel
    from flowlab.systems.markov.logit import parse_logit, parse_params

    if args.p is not None or args.q is not None or args.model or args.free_bias:
        raise FlowlabInputError("with --kernel give --logit and --params (not --p/--q, --model or --free-bias)")
    if not args.logit or not args.params:
        raise FlowlabInputError("--kernel needs --logit 'g_0; g_1; ...' (one per next token) and --params")
    if getattr(args, "context", None) is not None:
        raise FlowlabInputError("--context goes with a binary chain (--p/--q), not with --kernel")
    chain = KStateChain.from_file(args.kernel)
    names = parse_params(args.params)
    texts = [t for t in args.logit.split(";")]
    if len(texts) != chain.k:
        raise FlowlabInputError(f"the kernel has k = {chain.k} states: give {chain.k} logits separated by ';', "
                                f"got {len(texts)}")
    return KStateModel("user", names, tuple(parse_logit(t, names) for t in texts)), chain


def _eval_kstate(args) -> int:
    """eval on a k-state chain: --kernel FILE --logit 'g0; g1; ...' --params NAMES --at POINT."""
    from flowlab.engine.io import to_json
    from flowlab.systems.markov.kstate import KStateNumeric

    model, chain = _kstate_from_args(args)
    theta = point_vector(model, parse_point(args.at))
    result = KStateNumeric(model, chain).evaluate(theta)
    if args.json:
        write_output(to_json(result), None)
    else:
        print(f"k-state model at {args.at} (k = {chain.k}, stationary law {[round(float(x), 6) for x in chain.stationary]})")
        print(f"  loss      {result['loss']:.12g}   (entropy rate {chain.entropy_rate:.12g}, "
              f"unigram {chain.unigram_loss:.12g})")
        print("  gradient  " + "  ".join(f"{k}={v:.6g}" for k, v in result["gradient"].items()))
    return 0


def cmd_eval(args) -> int:
    import numpy as np

    from flowlab.engine.io import to_json
    from flowlab.systems.markov.numeric import NumericModel

    if args.kernel:
        return _eval_kstate(args)
    if args.logit is not None and ";" in args.logit:
        raise FlowlabInputError("several logits separated by ';' (one per next token) go with --kernel FILE")
    nm = NumericModel(model_spec_from_args(args), _binary_chain(args))  # warm: compiled code from the disk cache
    theta = point_vector(nm, parse_point(args.at))
    result, chain = nm.evaluate(theta), nm.chain
    if args.context is not None:
        from flowlab.engine.checks import require_finite
        from flowlab.systems.markov.context import ContextModel

        model = nm.model

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
        write_output(to_json(result), None)
    else:
        print(f"model {nm.name} at {args.at}  ({chain}, {chain.regime})")
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


def _flow_binary(args, options):
    """(result, header, the loss's references in words) of a flow on the binary chain --p/--q."""
    from flowlab.systems.markov.flow import gradient_flow
    from flowlab.systems.markov.numeric import compile_spec

    spec, chain = model_spec_from_args(args), _binary_chain(args)
    model = compile_spec(spec)  # warm: from the on-disk cache, without SymPy (the flow reuses it)
    theta0 = point_vector(model, parse_point(args.at))
    result = gradient_flow(spec, chain, theta0, allow_degenerate=args.allow_degenerate, context=args.context,
                           **options)
    return (result, f"{model.name} from {args.at} ({chain}, {chain.regime})",
            f"H = {chain.entropy_rate:.12g}, h(pi1) = {chain.unigram_loss:.12g}")


def _flow_kstate(args, options):
    """(result, header, references) of a flow on a k-state chain (--kernel FILE --logit 'g0; ...' --params)."""
    from flowlab.engine.trajectory import gradient_flow
    from flowlab.systems.markov.system import KStateSystem

    model, chain = _kstate_from_args(args)
    theta0 = point_vector(model, parse_point(args.at))
    system = KStateSystem(model, chain)
    iid = system.reference().all_global
    if iid is not None and not args.allow_degenerate:
        raise FlowlabInputError(f"{iid}: which critical set a flow reaches is not defined; give a kernel whose rows "
                                "differ, or --allow-degenerate")
    result = gradient_flow(system, theta0, **options)
    return (result, f"k-state model from {args.at} (k = {chain.k}, {args.kernel})",
            f"entropy rate {chain.entropy_rate:.12g}, unigram {chain.unigram_loss:.12g}")


def cmd_flow(args) -> int:
    from flowlab.engine.io import check_table_path, to_json, write_table

    if args.trajectory is not None:
        check_table_path(args.trajectory, "--trajectory")
    options = dict(t_max=args.t_max, grad_tol=args.grad_tol, method=args.method, rtol=args.rtol, atol=args.atol,
                   max_steps=args.max_steps, max_seconds=args.max_seconds, progress=not args.quiet)
    result, header, references = (_flow_kstate if args.kernel else _flow_binary)(args, options)
    payload = result.as_dict()
    if args.trajectory:
        write_table(args.trajectory, result.columns())
        payload["trajectory"] = args.trajectory
    if args.json:
        write_output(to_json(payload), None)
    else:
        fin = ", ".join(f"{k}={v:.6g}" for k, v in payload["final"].items())
        print(header)
        print(f"  reached   {payload['reached']}  [{payload['status']}] {payload['message']}")
        print(f"  final     {fin}  at t = {payload['t_final']:.6g}")
        print(f"  loss      {payload['loss']:.12g}   ({references})")
        if payload["energy_drift"] is not None:
            print(f"  E drift   {payload['energy_drift']:.3g}")
    return 0 if result.status != "failed" else 1


def cmd_critical(args) -> int:
    from flowlab.engine.io import to_json
    from flowlab.report.critical_tables import format_text, result_latex, table_latex, table_text
    from flowlab.systems.markov.critical import critical_sets, regions_table

    check_out_file(args)
    model = model_from_args(args)
    box = parse_box(args.range)
    options = dict(method=args.method, starts=args.starts, seed=args.seed, samples=args.samples)
    if args.context is not None:
        if args.regions:
            raise FlowlabInputError("--regions tabulates the symbolic long-context sets; give --p/--q with --context")
        options["context"] = args.context
    if args.regions:
        if args.p is not None or args.q is not None:
            raise FlowlabInputError("--regions uses one chain per region of p + q; do not give --p/--q")
        table = regions_table(model, box, **options)
        text = to_json(table) if args.json else table_latex(table) if args.latex else table_text(table)
        write_output(text, args.out)
        return 0 if table["complete"] or args.method != "auto" else 1
    if args.p is None or args.q is None:
        raise FlowlabInputError("give --p and --q (or --regions for the table over p + q)")
    result = critical_sets(model, chain_from_args(args), box, **options)
    text = to_json(result.as_dict()) if args.json else result_latex(result) if args.latex else format_text(result)
    write_output(text, args.out)
    if result.agreement is not None and not result.agreement["agree"]:
        print("flowlab critical: the symbolic and numeric paths disagree (see 'agreement')", file=sys.stderr)
        return 1
    return 0


def cmd_chain(args) -> int:
    """Facts of a chain: binary (--p/--q) or k-state (--kernel FILE)."""
    from flowlab.engine.io import to_json

    if args.kernel:
        if args.p is not None or args.q is not None:
            raise FlowlabInputError("give either --kernel FILE or --p/--q, not both")
        from flowlab.systems.markov.kstate import KStateChain

        chain = KStateChain.from_file(args.kernel)
        message = f"{chain.k}-state chain from {args.kernel}"
    else:
        chain = chain_from_args(args)
        if chain is None:
            raise FlowlabInputError("give --p and --q, or --kernel FILE (a k x k kernel as JSON or CSV)")
        message = f"binary chain {chain} ({chain.regime})"
    facts = chain.as_dict()
    if args.json:
        sys.stdout.write(to_json({"status": "ok", "message": message, "system": "markov", "chain": facts}))
    else:
        for key, value in facts.items():
            print(f"{key:>{max(map(len, facts))}}: {value}")
    return 0



def add_parsers(sub) -> None:
    """Register ``chain``, ``derive``, ``eval``, ``flow`` and ``critical`` on the flowlab subparsers ``sub``."""
    for add in (_add_chain, _add_derive, _add_eval, _add_flow, _add_critical):
        add(sub)


def _add_chain(sub) -> None:
    fmt = HelpFormatter
    p = sub.add_parser("chain", formatter_class=fmt, help="facts of a chain: stationary law, entropy rate, unigram loss",
                       description="Stationary law, entropy rate (the bigram loss), unigram loss and the optimal gap of a "
                       "binary chain (--p/--q) or of a k-state chain (--kernel FILE: a JSON list of rows, "
                       "{\"kernel\": [...]}, or a CSV file without header).")
    add_chain(p)
    p.add_argument("--kernel", metavar="FILE", help=KERNEL_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_chain)


def _add_derive(sub) -> None:
    fmt = HelpFormatter
    p = sub.add_parser("derive", formatter_class=fmt, help="symbolic loss, gradient, Hessian, gap, invariants",
                       description="Derive a model's loss and its consequences with SymPy; print LaTeX, Markdown or JSON.")
    add_model(p, chain_required=False)
    p.add_argument("--format", choices=("latex", "markdown", "json"), default="markdown",
                   help="output format: a LaTeX document, Markdown, or a JSON object")
    p.add_argument("--out", metavar="FILE", help="write to this file (atomically) instead of stdout")
    p.set_defaults(func=cmd_derive)


def _add_eval(sub) -> None:
    fmt = HelpFormatter
    p = sub.add_parser("eval", formatter_class=fmt, help="loss, gradient, Hessian, gap and energy at a point",
                       description="Evaluate the compiled model at one point (binary chain --p/--q, or a k-state "
                       "chain --kernel FILE with --logit 'g0; g1; ...').")
    add_model(p, chain_required=False, logit_help=KSTATE_LOGIT_HELP)
    p.add_argument("--at", required=True, metavar="POINT", help="the point, e.g. e=0.3,w=-1.2")
    p.add_argument("--context", type=positive_int, metavar="N",
                   help="exact finite-context loss over positions 1..N (default: the long-context limit)")
    p.add_argument("--kernel", metavar="FILE", help=KERNEL_HELP)
    p.add_argument("--logits", dest="logit", help=argparse.SUPPRESS)  # the former spelling of --logit
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_eval)


def _add_flow(sub) -> None:
    fmt = HelpFormatter
    p = sub.add_parser("flow", formatter_class=fmt, help="integrate one gradient-flow trajectory",
                       description="Integrate d theta/dt = -grad L from a point with scipy's solve_ivp and "
                       "report which critical set it reached (binary chain --p/--q, or a k-state chain "
                       "--kernel FILE with --logit 'g0; g1; ...').")
    add_model(p, chain_required=False, logit_help=KSTATE_LOGIT_HELP)
    p.add_argument("--kernel", metavar="FILE", help=KERNEL_HELP)
    p.add_argument("--at", required=True, metavar="POINT", help="initial point, e.g. e=0.1,w=0.1")
    p.add_argument("--t-max", type=real, default=1e4, help="integration time limit")
    p.add_argument("--grad-tol", type=real, default=1e-8, help="stop when |grad L| falls below this")
    p.add_argument("--method", default="DOP853", choices=METHODS, help="scipy.integrate.solve_ivp method")
    p.add_argument("--rtol", type=real, default=1e-10, help="solver relative tolerance")
    p.add_argument("--atol", type=real, default=1e-12, help="solver absolute tolerance")
    p.add_argument("--trajectory", metavar="FILE", help="also write the trajectory (.npz or .csv)")
    p.add_argument("--allow-degenerate", action="store_true",
                   help="integrate even when p + q = 1 or the kernel's rows are equal (every critical point is "
                   "then global)")
    p.add_argument("--context", type=positive_int, metavar="N",
                   help="flow of the exact finite-context loss over positions 1..N (default: long context)")
    p.add_argument("--max-steps", type=positive_int, default=FLOW_BUDGET["max_steps"],
                   help="stop with status 'budget' after this many accepted solver steps (typical flows take "
                   "under 300; a stiff flow from large |theta| converges faster with --method LSODA)")
    p.add_argument("--max-seconds", type=real, default=FLOW_BUDGET["max_seconds"],
                   help="stop with status 'budget' after this much wall time")
    p.add_argument("--quiet", action="store_true", help="no progress bar (shown on stderr for flows longer than 2 s)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_flow)


def _add_critical(sub) -> None:
    p = sub.add_parser("critical", formatter_class=EpilogFormatter, help="critical points and sets, classified",
                       description="Find the critical sets of the loss in a box and classify them (global minimum, "
                       "local minimum/maximum, saddle, degenerate). Profiled models are solved symbolically "
                       "({D = D*} and {grad D = 0}) and cross-checked by a numeric multi-start; 'complete' is true "
                       "only when both agree. Exit code 1 when they disagree.",
                       epilog="examples:\n  flowlab critical --p 0.1 --q 0.1\n"
                       "  flowlab critical --model ewb --p 0.5 --q 0.8 --range b:-1:1 --json\n"
                       "  flowlab critical --regions --latex")
    add_model(p, chain_required=False)
    p.add_argument("--range", action="append", metavar="NAME:LO:HI",
                   help="search range of one parameter (repeatable); others default to -3:3")
    p.add_argument("--box", action="append", dest="range", help=argparse.SUPPRESS)  # the former spelling of --range
    p.add_argument("--regions", action="store_true",
                   help="the classification table for p+q<1, p+q=1 and p+q>1 instead of one chain")
    p.add_argument("--method", choices=("auto", "symbolic", "numeric"), default="auto",
                   help="auto: symbolic with a numeric cross-check when possible")
    p.add_argument("--starts", type=positive_int, default=1024, help="numeric multi-start points (Sobol)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the scrambled Sobol starts (0 to 2**32 - 1)")
    p.add_argument("--samples", type=positive_int, default=64, help="sample points reported per set")
    p.add_argument("--context", type=positive_int, metavar="N",
                   help="the exact loss over a finite context of N positions: numeric multi-start only (kinds from a "
                   "Hessian by differences of the exact gradient; never complete)")
    fmt_group = p.add_mutually_exclusive_group()
    fmt_group.add_argument("--json", action="store_true", help="print a JSON object")
    fmt_group.add_argument("--latex", action="store_true", help="print a LaTeX tabular")
    p.add_argument("--out", metavar="FILE", help="write to this file (atomically) instead of stdout")
    p.set_defaults(func=cmd_critical)
