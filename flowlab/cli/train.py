"""The ``flowlab train`` and ``flowlab guide`` subcommands (registered by :func:`add_parsers`).

Only argparse and sys are imported at module level, so ``flowlab --help`` stays fast; NumPy,
the analysis and torch are imported inside the commands.
"""

from __future__ import annotations

import sys

from flowlab.cli.args import (
    FIGURE4_CHAIN,
    EpilogFormatter,
    add_chain,
    chain_from_args,
    check_out_file,
    num,
    parse_point,
    point_vector,
    positive_int,
    real,
    seed,
)
from flowlab.engine.errors import FlowlabInputError

# The defaults of flowlab.systems.markov.train and .transformer themselves (flowlab.systems.markov.defaults
# imports nothing, so --help stays free of NumPy / torch).
from flowlab.systems.markov.defaults import (  # noqa: F401  (re-exported names of the train command)
    CANONICAL_DEFAULTS,
    CANONICAL_INITS,
    GUIDE_DEFAULTS,
    OPTIMIZERS,
    TRAINING_LIMITS,
    TRANSFORMER_DEFAULTS,
    TRANSFORMER_INITS,
)

TRAIN_MODELS = ("ewb", "transformer")
TORCH_HINT = 'pip install -e ".[torch]"'


def add_parsers(sub, formatter_class=EpilogFormatter) -> None:
    """Register ``train`` and ``guide`` on the subparsers ``sub`` of the flowlab parser."""

    _add_train(sub, formatter_class)
    _add_guide(sub, formatter_class)


def _both(name) -> str:
    c, t = CANONICAL_DEFAULTS.get(name), TRANSFORMER_DEFAULTS.get(name)
    return f" (default: {c} for ewb, {t} for transformer)"


def _add_train(sub, formatter_class) -> None:
    p = sub.add_parser(
        "train", formatter_class=formatter_class, help="check by training: SGD on ewb or a real transformer",
        description="Train on sequences sampled from the chain and compare where training ends with where the "
        "flow analysis predicts. --model ewb: mini-batch SGD on the canonical model (NumPy), final loss = the exact "
        "expected loss. --model transformer: a single-layer PyTorch transformer (the torch extra), final loss "
        "measured on held-out sequences. Exit code 1 when training does not end where the analysis predicts. "
        "Defaults reproduce the paper's Figure 4 (p = 0.5, q = 0.8): standard ends at the unigram loss, "
        "guideline at the bigram loss.",
        epilog="examples:\n  flowlab train --init standard --json\n  flowlab train --init guideline\n"
        "  flowlab train --at e=1,w=-1.5,b=0 --p 0.9 --q 0.9\n"
        "  flowlab train --model transformer --init guideline --seed 1\n"
        "  flowlab train --model transformer --init rank-one --at e=1,w=-1.5,a=0\n"
        "  flowlab train --table --out agreement.json",
    )
    p.add_argument("--model", choices=TRAIN_MODELS, default="ewb", help="what is trained")
    add_chain(p, default=FIGURE4_CHAIN)
    p.add_argument("--init", choices=TRANSFORMER_INITS, default=None,
                   help="standard: small Gaussian (ewb: e, w ~ N(0, 0.01^2), b = 0; transformer: weights N(0, 0.02^2)); "
                   "guideline: the point `flowlab guide` recommends; rank-one (transformer): the weights of --at "
                   "(default: standard, or the --at point for ewb)")
    p.add_argument("--at", metavar="POINT",
                   help="ewb: the initial point e=..,w=..[,b=..]; transformer with --init rank-one: e=..,w=..[,a=..,b=..]")
    p.add_argument("--steps", type=positive_int, default=None, help="SGD steps" + _both("steps"))
    p.add_argument("--batch", type=positive_int, default=None, help="sequences per step" + _both("batch"))
    p.add_argument("--seq-len", type=positive_int, default=None, help="sequence length N" + _both("seq_len"))
    p.add_argument("--lr", type=real, default=None, help="learning rate" + _both("lr"))
    p.add_argument("--momentum", type=real, default=None, help="momentum in [0, 1)" + _both("momentum"))
    p.add_argument("--seed", type=seed, default=0, help="seed of the initialisation and of the sampled data, 0 to 2**32 - 1")
    p.add_argument("--log-every", type=positive_int, default=None, help="log every this many steps" + _both("log_every"))
    g = p.add_argument_group("transformer only")
    g.add_argument("--d", type=positive_int, default=TRANSFORMER_DEFAULTS["d"],
                   help="model width (FFN width 4d); runs (of either model) estimated to need more than "
                   f"{TRAINING_LIMITS['bytes'] / 2**30:g} GiB or {TRAINING_LIMITS['seconds']:g} s are refused "
                   "before any work, with the estimate")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=TRANSFORMER_DEFAULTS["optimizer"], help="optimiser")
    g.add_argument("--noise", type=real, default=None,
                   help="std of the Gaussian added to the rank-one weights (default: 0.02 for guideline, 0 for rank-one)")
    g.add_argument("--layer-norm", action="store_true", help="pre-LN before attention and FFN, and a final LN")
    g.add_argument("--eval-sequences", type=positive_int, default=TRANSFORMER_DEFAULTS["eval_sequences"],
                   help="held-out sequences for the final loss (counted in the time estimate, see --d)")
    g.add_argument("--threads", type=positive_int, default=TRANSFORMER_DEFAULTS["threads"],
                   help="torch intra-op threads (use 1 when the cores are busy with other work)")
    p.add_argument("--table", action="store_true",
                   help="instead of one run: the agreement table (flow prediction vs SGD on ewb) over a handful of "
                   "(p, q) and initialisations")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result here (atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)


def _add_guide(sub, formatter_class) -> None:
    p = sub.add_parser(
        "guide", formatter_class=formatter_class, help="recommended initialisation from the basin analysis",
        description="Recommend an initialisation for the chain: the region of the (e, w) plane that reaches the "
        "bigram model (I*), and a concrete point chosen on a basin grid of model ew (labelled global, at least "
        "--margin from every non-global label, e >= --e-min, smallest norm), checked by the flow of ewb, with the "
        "reasoning (critical sets, separatrix level).",
        epilog="examples:\n  flowlab guide\n  flowlab guide --p 0.1 --q 0.1 --json",
    )
    add_chain(p, default=FIGURE4_CHAIN)
    p.add_argument("--grid", type=positive_int, default=GUIDE_DEFAULTS["grid"], help="basin grid points per axis")
    p.add_argument("--extent", type=real, default=GUIDE_DEFAULTS["extent"], help="grid over [-extent, extent]^2")
    p.add_argument("--margin", type=real, default=GUIDE_DEFAULTS["margin"],
                   help="minimum distance from the point to a non-global label")
    p.add_argument("--e-min", type=real, default=GUIDE_DEFAULTS["e_min"], help="minimum embedding e of the point")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result here (atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_guide)


def _emit(result: dict, text: str, args) -> None:
    from flowlab.engine.io import atomic_write_text, to_json

    payload = to_json(result)
    if args.out:
        atomic_write_text(args.out, payload)
        if not args.quiet:
            print(f"wrote {args.out}", file=sys.stderr)
    sys.stdout.write(payload if args.json else text)


def _sgd_settings(args, defaults) -> dict:
    names = ("steps", "batch", "seq_len", "lr", "momentum", "log_every")
    return {n: defaults[n] if getattr(args, n) is None else getattr(args, n) for n in names}


def _canonical_text(r) -> str:
    s = r.settings
    lines = [
        f"SGD on model ewb, {r.chain} ({r.chain.regime}), init {r.init}, seed {s['seed']}",
        "  initial   " + ", ".join(f"{k} = {v:.6g}" for k, v in r.initial.items()),
        "  final     " + ", ".join(f"{k} = {v:.6g}" for k, v in r.final.items()),
        f"  settings  steps {s['steps']}, batch {s['batch']}, seq_len {s['seq_len']}, lr {num(s['lr'])}, "
        f"momentum {num(s['momentum'])}",
        f"  final loss (exact expected) {r.final_loss:.6f}   bigram H = {r.optimal_loss:.6f}   "
        f"unigram h(pi1) = {r.levels['unigram']:.6f}",
        f"  SGD ended: {r.reached}   flow predicts: {r.predicted}   agrees: {_agrees(r.agrees)}   ({r.seconds:.2f} s)",
    ]
    return "\n".join(lines) + "\n"


def _transformer_text(r: dict) -> str:
    s, c = r["settings"], r["chain"]
    lines = [
        f"single-layer transformer, p={num(c['p'])}, q={num(c['q'])} ({c['regime']}), init {r['init']}, seed {s['seed']}",
        f"  settings  d {s['d']}, seq_len {s['seq_len']}, steps {s['steps']}, batch {s['batch']}, {s['optimizer']} "
        f"lr {num(s['lr'])}, momentum {num(s['momentum'])}, layer_norm {s['layer_norm']}, {r['parameters']} parameters",
        f"  final loss (held-out, {s['eval_sequences']} sequences) {r['final_loss']:.6f} +- {r['final_loss_se']:.6f}   "
        f"bigram H = {r['optimal_loss']:.6f}   unigram h(pi1) = {r['levels']['unigram']:.6f}",
        "  initial weights projected on (e, w, a, b): "
        + ("n/a (layer norm)" if r["initial"] is None else
           ", ".join(f"{k} = {_fmt(v, '.4g')}" for k, v in r["initial"].items())),
        f"  rank-one fraction at the end: W_V {_fmt(r['rank_one_fraction']['W_V'][-1])}, "
        f"W_1 {_fmt(r['rank_one_fraction']['W_1'][-1])}",
        f"  training ended: {r['reached']}   canonical analysis predicts: {r['predicted']}   agrees: {_agrees(r['agrees'])}   "
        f"({r['seconds']:.1f} s)",
    ]
    return "\n".join(lines) + "\n"


def _agrees(v) -> str:
    """True / False, or 'n/a' when the prediction or the end is undetermined (exit code 1: not confirmed)."""
    return "n/a (undetermined)" if v is None else str(v)


def _fmt(v, spec=".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def cmd_train(args) -> int:
    check_out_file(args)
    chain = chain_from_args(args)
    point = parse_point(args.at) if args.at is not None else None
    if args.table:
        return _train_table(args, point)
    if args.model == "ewb":
        return _train_ewb(args, chain, point)
    return _train_transformer(args, chain, point)


def _train_table(args, point) -> int:
    """--table: the agreement table over a handful of (p, q) and initialisations (model ewb)."""
    from flowlab.systems.markov.train import agreement_table, table_text

    if args.model != "ewb" or args.init or point is not None or args.p is not None:
        raise FlowlabInputError("--table trains model ewb over its own (p, q) and initialisations: "
                                "drop --model transformer, --init, --at and --p/--q")
    rows = agreement_table(seed=args.seed, **_sgd_settings(args, CANONICAL_DEFAULTS))
    agree = sum(r["agrees"] is True for r in rows)
    payload = {"status": "ok" if agree == len(rows) else "disagree",
               "message": f"{agree} of {len(rows)} runs end where the flow analysis predicts",
               "system": "markov", "model": "ewb", "rows": rows, "agree": agree, "total": len(rows)}
    _emit(payload, table_text(rows), args)
    return 0 if agree == len(rows) else 1


def _train_ewb(args, chain, point) -> int:
    """SGD on the canonical model ewb (NumPy), from --init or the point --at."""
    from flowlab.systems.markov.models import get_model
    from flowlab.systems.markov.train import train_canonical

    if args.layer_norm or args.optimizer != "sgd" or args.noise is not None:
        raise FlowlabInputError("--layer-norm, --optimizer and --noise apply to --model transformer only")
    if args.init is not None and point is not None:
        raise FlowlabInputError("give either --init or --at for model ewb, not both")
    if args.init == "rank-one":
        raise FlowlabInputError("--init rank-one is for --model transformer; for ewb give the point with --at")
    if point is not None:
        model = get_model("ewb")
        point.setdefault("b", 0.0)
        init = dict(zip(model.params, point_vector(model, point)))
    else:
        init = args.init or "standard"
    result = train_canonical(chain, init, args.seed, **_sgd_settings(args, CANONICAL_DEFAULTS))
    _emit(result.as_dict(), _canonical_text(result), args)
    return 0 if result.agrees else 1


def _transformer_init(args, point) -> str:
    """The transformer's initialisation, with --at and --noise checked against it."""
    init = args.init or "standard"
    if init == "rank-one":
        if point is None:
            raise FlowlabInputError("--init rank-one needs --at e=..,w=..[,a=..,b=..]")
        unknown = sorted(set(point) - {"e", "w", "a", "b"})
        missing = sorted({"e", "w"} - set(point))
        if unknown or missing:
            raise FlowlabInputError(
                "a rank-one point has parameters e, w (required) and a, b (optional)"
                + (f"; unknown: {','.join(unknown)}" if unknown else "")
                + (f"; missing: {','.join(missing)}" if missing else "")
            )
    elif point is not None:
        raise FlowlabInputError("--at goes with --init rank-one for the transformer")
    if args.noise is not None and args.noise < 0:
        raise FlowlabInputError(f"--noise must be >= 0, got {args.noise}")
    return init


def _train_transformer(args, chain, point) -> int:
    """A single-layer PyTorch transformer; the cost is estimated (and refused if too high) before any work."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise FlowlabInputError(f"--model transformer needs PyTorch, which is not installed: {TORCH_HINT}")
    init = _transformer_init(args, point)
    from flowlab.systems.markov.transformer import check_training_cost, train_transformer

    settings = _sgd_settings(args, TRANSFORMER_DEFAULTS)
    check_training_cost(d=args.d, seq_len=settings["seq_len"], steps=settings["steps"], batch=settings["batch"],
                        eval_sequences=args.eval_sequences, val_sequences=TRANSFORMER_DEFAULTS["val_sequences"],
                        log_every=settings["log_every"])  # before the progress bar: a refusal is one line
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings["steps"], desc=f"transformer {init}", file=sys.stderr, unit="step")
    try:
        result = train_transformer(
            chain, init=init, seed=args.seed, point=point, d=args.d, optimizer=args.optimizer, noise=args.noise,
            layer_norm=args.layer_norm, eval_sequences=args.eval_sequences, threads=args.threads,
            progress=(lambda k: bar.update(k - bar.n)) if bar is not None else None, **settings,
        )
    finally:
        if bar is not None:
            bar.close()
    _emit(result, _transformer_text(result), args)
    return 0 if result["agrees"] else 1


def cmd_guide(args) -> int:
    from flowlab.systems.markov.guide import guide, guide_text

    check_out_file(args)
    chain = chain_from_args(args)
    result = guide(chain, grid=args.grid, extent=args.extent, margin=args.margin, e_min=args.e_min)
    _emit(result, guide_text(result), args)
    return 0 if result["predicted"] == "global" else 1
