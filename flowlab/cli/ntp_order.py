"""The ``flowlab ntp-order`` subcommands (registered by :func:`add_parsers`): run, targets, data.

The ``ntp_order`` system is this project's *reconstruction* (MODELS.md §7) of Huang, Liang, Yang,
"Non-asymptotic Convergence of Training Transformers for Next-token Prediction" (NeurIPS 2024).
Only argparse and sys are imported at module level, so ``flowlab --help`` stays fast.
"""

from __future__ import annotations

import sys

from flowlab.cli.args import EpilogFormatter, non_negative_int, positive_int, real, seed

#: Mirrors of flowlab.systems.ntp_order.training.DEFAULTS and data.GENERATE_DEFAULTS (kept equal
#: by a test; importing those modules here would import NumPy on --help).
TRAIN_DEFAULTS = {"method": "normalized", "steps1": 1000, "steps2": 20000, "init": "gaussian", "init_scale": 0.01,
                  "stage2_loss": "ce"}
DATA_DEFAULTS = {"vocab": 20, "sentences": 200, "min_len": 3, "max_len": 6, "unseen": 200, "seed": 0}
METHODS = ("normalized", "gd", "flow")
INITS = ("gaussian", "zero")
#: The files of ``run --out`` (an earlier result of ``run`` may be replaced, nothing else).
RUN_FILES = ("run.json", "dataset.json", "traces.npz", "figure2.png", "figure2.pdf", "order.png", "order.pdf")
STAGE2_LOSSES = ("ce", "attention")
RECONSTRUCTION = ("A reconstruction (MODELS.md section 7) of Huang, Liang, Yang, NeurIPS 2024, whose full text is "
                  "not available: one-hot tokens, a collocation n: V -> V, a DAG per query; stage 1 normalised GD "
                  "on W_ov over the collocation loss, stage 2 on W_kq with W_ov fixed.")


def _data_arguments(p) -> None:
    p.add_argument("--vocab", type=positive_int, default=None, help=f"vocabulary size K = d (default: {DATA_DEFAULTS['vocab']})")
    p.add_argument("--sentences", type=positive_int, default=None,
                   help=f"training sentences (default: {DATA_DEFAULTS['sentences']})")
    p.add_argument("--seed", type=seed, default=0, help="seed of the generated data and of the initialisation")
    p.add_argument("--min-len", type=positive_int, default=DATA_DEFAULTS["min_len"], help="shortest sentence")
    p.add_argument("--max-len", type=positive_int, default=DATA_DEFAULTS["max_len"], help="longest sentence")
    p.add_argument("--unseen", type=non_negative_int, default=DATA_DEFAULTS["unseen"],
                   help="unseen sentences wanted of each kind (implied / not implied by the closure)")


def add_parsers(sub, formatter_class=EpilogFormatter) -> None:
    """Register ``ntp-order`` (with ``run``, ``targets``, ``data``) on the flowlab subparsers ``sub``."""
    top = sub.add_parser("ntp-order", formatter_class=formatter_class,
                         help="next-token prediction with query-dependent partial orders (reconstruction)",
                         description=RECONSTRUCTION)
    cmds = top.add_subparsers(dest="ntp_command", metavar="ACTION", required=True)

    p = cmds.add_parser("run", formatter_class=formatter_class, help="targets, two-stage training, rates, accuracy",
                        description=RECONSTRUCTION + " Prints the fitted rates, the cosines to the "
                        "max-margin targets and the accuracy on training and unseen sentences. Exit 1 when a QP or a "
                        "stage fails.",
                        epilog="examples:\n  flowlab ntp-order run --json\n  flowlab ntp-order run --seed 1 --out run1\n"
                        "  flowlab ntp-order run --data data.json --stage2-loss attention")
    _data_arguments(p)
    p.add_argument("--data", metavar="FILE", help="a dataset JSON file instead of generated data")
    p.add_argument("--method", choices=METHODS, default=TRAIN_DEFAULTS["method"],
                   help="normalized: normalised GD (Algorithm 1); gd: plain GD; flow: gradient flow (solve_ivp)")
    p.add_argument("--steps1", type=positive_int, default=TRAIN_DEFAULTS["steps1"], help="stage-1 iterations")
    p.add_argument("--steps2", type=positive_int, default=TRAIN_DEFAULTS["steps2"], help="stage-2 iterations")
    p.add_argument("--lr1", type=real, default=None, help="stage-1 step (default: 0.2/sqrt(d))")
    p.add_argument("--lr2", type=real, default=None, help="stage-2 step (default: 0.05/sqrt(d))")
    p.add_argument("--init", choices=INITS, default=TRAIN_DEFAULTS["init"], help="initialisation of W_ov and W_kq")
    p.add_argument("--init-scale", type=real, default=TRAIN_DEFAULTS["init_scale"], help="std of the Gaussian init")
    p.add_argument("--stage2-loss", choices=STAGE2_LOSSES, default=TRAIN_DEFAULTS["stage2_loss"],
                   help="ce: next-token cross-entropy with W_ov fixed; attention: -log attention on the optimal token")
    p.add_argument("--fit-from", type=real, default=0.1, help="fit the rates over t >= this fraction of the run")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--out", metavar="DIR", help="write run.json, traces.npz, dataset.json and the figures here")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_run)

    p = cmds.add_parser("targets", formatter_class=formatter_class, help="the max-margin targets W_ov*, W_kq*",
                        description="W_ov* (closed form, checked against its QP) and W_kq* (one QP per "
                        "query column), solved with cvxpy + Clarabel, for a dataset file.",
                        epilog="example:\n  flowlab ntp-order targets --data data.json --json")
    p.add_argument("--data", metavar="FILE", required=True, help="the dataset JSON file")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--out", metavar="FILE", help="also write the JSON here (atomically)")
    p.set_defaults(func=cmd_targets)

    p = cmds.add_parser("data", formatter_class=formatter_class, help="write a generated dataset as JSON",
                        description="Generate a realizable dataset (seeded) and write it as JSON: "
                        "collocation, one DAG per query, training sentences, unseen sentences implied / not implied "
                        "by the closure.",
                        epilog="example:\n  flowlab ntp-order data --vocab 20 --sentences 200 --seed 0 --out data.json")
    _data_arguments(p)
    p.add_argument("--out", metavar="FILE", required=True, help="the JSON file to write")
    p.set_defaults(func=cmd_data)


def _generated(args):
    from flowlab.systems.ntp_order.data import generate

    vocab = DATA_DEFAULTS["vocab"] if args.vocab is None else args.vocab
    sentences = DATA_DEFAULTS["sentences"] if args.sentences is None else args.sentences
    return generate(vocab, sentences, args.seed, min_len=args.min_len, max_len=args.max_len, unseen=args.unseen)


def _emit_json(obj, args, text: str | None = None) -> None:
    from flowlab.engine.io import to_json

    sys.stdout.write(to_json(obj) if args.json or text is None else text)


def _run_text(r) -> str:
    lines = ["ntp_order (reconstruction of Huang, Liang, Yang 2024; MODELS.md section 7)",
             f"  K = {r.settings['vocab']}, {r.settings['sentences']} sentences, method {r.settings['method']}, "
             f"stage-2 loss {r.settings['stage2_loss']}"]
    for name, s in (("stage 1 (W_ov)", r.stage1), ("stage 2 (W_kq)", r.stage2)):
        lines.append(f"  {name}: loss {s.final_loss:.3e}, cos to target {_p(s.cos, 6)}, |W| {s.final_norm:.2f}; "
                     f"norm slope {_v(s.norm_slope)}, 1-cos ~ t^-{_v(s.dir_rate)}, loss-excess ratio {_v(s.loss_rate, 6)}")
    a = r.accuracy
    lines.append(f"  accuracy: train {_p(a['train'])}, unseen implied {_p(a['unseen_implied'])}, unseen not implied "
                 f"{_p(a['unseen_not_implied'])} (not credited)")
    lines.append(f"  solver: {r.solver['name']} ({r.solver['status']}); {r.status}: {r.message} ({r.seconds:.1f} s)")
    return "\n".join(lines) + "\n"


def _v(fit, digits: int = 4) -> str:
    return "n/a" if fit.value is None else f"{fit.value:.{digits}g} (R2 {fit.r2:.4f})"


def _p(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def cmd_run(args) -> int:
    from pathlib import Path

    from flowlab.engine.errors import FlowlabInputError
    from flowlab.engine.io import atomic_folder, check_output_dir
    from flowlab.systems.ntp_order.data import load, save
    from flowlab.systems.ntp_order.measure import run_experiment

    if args.out is not None:
        check_output_dir(args.out, "--out", RUN_FILES)
    if args.data is not None:
        if args.vocab is not None or args.sentences is not None:
            raise FlowlabInputError("--data gives the dataset: do not combine it with --vocab/--sentences")
        data = load(args.data)
    else:
        data = _generated(args)
    result = run_experiment(data, fit_from=args.fit_from, quiet=args.quiet, method=args.method, steps1=args.steps1,
                            steps2=args.steps2, lr1=args.lr1, lr2=args.lr2, init=args.init, init_scale=args.init_scale,
                            stage2_loss=args.stage2_loss, seed=args.seed)
    out = result.as_dict()
    if args.out:
        from flowlab.engine.io import atomic_write_text, to_json
        from flowlab.report.ntp_order import write_run_files

        folder = Path(args.out)
        with atomic_folder(folder, "--out", RUN_FILES) as tmp:
            atomic_write_text(tmp / "run.json", to_json(out))
            save(data, tmp / "dataset.json")
            files = write_run_files(result, tmp)
        if not args.quiet:
            print(f"wrote {folder / 'run.json'}, {folder / 'dataset.json'}, " + ", ".join(files), file=sys.stderr)
    _emit_json(out, args, _run_text(result))
    return 0 if result.status in ("completed", "degenerate") else 1


def cmd_targets(args) -> int:
    from flowlab.engine.io import atomic_write_text, check_output_file, to_json
    from flowlab.systems.ntp_order.data import load
    from flowlab.systems.ntp_order.targets import max_margin_targets

    if args.out is not None:
        check_output_file(args.out)
    t = max_margin_targets(load(args.data))
    out = t.as_dict()
    if args.out is not None:
        atomic_write_text(args.out, to_json(out))
    import numpy as np

    qp = "n/a" if t.ov_qp_error is None else f"{t.ov_qp_error:.1e}"
    text = (f"W_ov*: closed form, |closed form - QP| = {qp}; |W_kq*|_F = {np.linalg.norm(t.W_kq):.4f}\n"
            f"solver {t.solver['name']} via {t.solver['via']}: {t.status}: {t.message}\n")
    _emit_json(out, args, text)
    return 0 if t.status == "optimal" else 1


def cmd_data(args) -> int:
    from flowlab.engine.io import check_output_file
    from flowlab.systems.ntp_order.data import save

    check_output_file(args.out)
    data = _generated(args)
    save(data, args.out)
    print(f"wrote {args.out}: K = {data.vocab}, {len(data.sentences)} training sentences, "
          f"{len(data.unseen_implied)} unseen implied, {len(data.unseen_not_implied)} unseen not implied",
          file=sys.stderr)
    return 0
