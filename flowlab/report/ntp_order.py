"""The ``ntp_order`` section of ``flowlab demo`` and the files of ``flowlab ntp-order run --out``.

The system is this project's **reconstruction** (MODELS.md §7) of Huang, Liang, Yang, "Non-asymptotic
Convergence of Training Transformers for Next-token Prediction" (NeurIPS 2024): the paper's full text
is not available here, and every choice the public sources leave open is an option with a default
(flowlab.systems.ntp_order.training.DEFAULTS). :func:`section` runs the quoted experiment (|V| = d = 20,
steps 0.2/√d and 0.05/√d) once, writes figures (PNG + PDF), the run JSON, the traces and the dataset,
and returns a JSON-ready summary; :func:`report_lines` renders it as Markdown.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

#: Stage-2 iterations of the fast mode (a quick look: the direction is not converged there).
FAST_STEPS2 = 2000
SUBFOLDER = "ntp_order"


def write_run_files(result, folder: Path) -> list[str]:
    """Write traces.npz, figure2.png/.pdf and order.png/.pdf of ``result`` into ``folder``; the names."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlab.engine.io import atomic_write_bytes, save_figures
    from flowlab.plots import ntp_order as plots

    folder = Path(folder)
    names = []
    columns = {}
    for name, tr in (("stage1", result.run.stage1), ("stage2", result.run.stage2)):
        columns.update({f"{name}_t": tr.t, f"{name}_loss": tr.loss, f"{name}_norm": tr.norm,
                        f"{name}_dir_error": tr.dir_error, f"{name}_W": tr.W})
    buf = io.BytesIO()
    np.savez(buf, **columns, W_ov_star=result.targets.W_ov, W_kq_star=result.targets.W_kq)
    atomic_write_bytes(folder / "traces.npz", buf.getvalue())
    names.append("traces.npz")
    for name, fig in (("figure2", plots.figure2(result)[0, 0].figure), ("order", plots.partial_order(result).figure)):
        names += [path.name for path in save_figures(fig, folder / name, dpi=150)]
        plt.close(fig)
    return names


def _stage(s) -> dict:
    return {"final_loss": s.final_loss, "cos": s.cos, "final_norm": s.final_norm,
            "norm_slope": s.norm_slope.value, "norm_r2": s.norm_slope.r2,
            "dir_rate": s.dir_rate.value, "dir_r2": s.dir_rate.r2,
            "loss_rate": s.loss_rate.value, "loss_r2": s.loss_rate.r2, "iterations": s.iterations, "lr": s.lr}


def section(out: Path, *, fast: bool, quiet: bool) -> dict:
    """Run the quoted experiment (seed 0) and write its files under ``out/ntp_order``; the summary.

    ``fast`` stops stage 2 after FAST_STEPS2 iterations (said in the report). A few seconds.
    """
    from flowlab.engine.io import atomic_write_text, to_json
    from flowlab.systems.ntp_order.data import generate, save
    from flowlab.systems.ntp_order.measure import run_experiment

    start = time.perf_counter()
    folder = Path(out) / SUBFOLDER
    data = generate(seed=0)
    options = {"steps2": FAST_STEPS2} if fast else {}
    result = run_experiment(data, quiet=quiet, **options)
    atomic_write_text(folder / "run.json", to_json(result.as_dict()))
    save(data, folder / "dataset.json")
    names = ["run.json", "dataset.json", *write_run_files(result, folder)]
    return {
        "fast": fast, "settings": result.settings, "stage1": _stage(result.stage1), "stage2": _stage(result.stage2),
        "accuracy": result.accuracy, "checks": result.checks,
        "solver": {k: result.solver[k] for k in ("name", "via", "status", "message")},
        "status": result.status, "message": result.message,
        "files": [f"{SUBFOLDER}/{n}" for n in names], "seconds": time.perf_counter() - start,
    }


def _f(x, fmt="{:.4g}") -> str:
    return "n/a" if x is None else fmt.format(x)


def report_lines(summary: dict) -> list[str]:
    """The Markdown of the section."""
    s, acc, checks = summary["settings"], summary["accuracy"], summary["checks"]
    lines = [
        "## ntp_order: next-token prediction with query-dependent partial orders (reconstruction)",
        "",
        "Huang, Liang, Yang, NeurIPS 2024, **as reconstructed** by this project (MODELS.md §7; the paper's full "
        "text is not available): one-hot tokens (d = K), a collocation n: V → V, one DAG per query, attention "
        "φ = softmax(Xᵀ W_kq e_q), logits W_ov X φ. Algorithm 1: stage 1 normalised GD on W_ov over the "
        "collocation loss, stage 2 normalised GD on W_kq with W_ov fixed; targets W_ov* (closed form, checked "
        "by its QP) and W_kq* (a QP per query column, cvxpy + Clarabel: "
        f"{summary['solver']['status']}).",
        "",
        f"Setting: K = {s['vocab']}, {s['sentences']} training sentences (seed {s['data_seed']}), "
        f"η₁ = {s['lr1']:.4g}, η₂ = {s['lr2']:.4g}, {s['steps1']} + {s['steps2']} iterations, init "
        f"{s['init']} (scale {s['init_scale']}), stage-2 loss `{s['stage2_loss']}`."
        + (f" **Fast mode**: stage 2 stops after {s['steps2']} iterations, before its direction converges."
           if summary["fast"] else ""),
        "",
        "| stage | final loss | cos(W, W*) | ‖W‖ slope (R²) | 1 − cos ∝ t^−a: a (R²) | loss excess ∝ r^t: r (R²) |",
        "|---|---|---|---|---|---|",
    ]
    for name, st in (("1 (W_ov)", summary["stage1"]), ("2 (W_kq)", summary["stage2"])):
        lines.append(
            f"| {name} | {_f(st['final_loss'], '{:.3e}')} | {_f(st['cos'], '{:.5f}')} | "
            f"{_f(st['norm_slope'])} ({_f(st['norm_r2'], '{:.5f}')}) | {_f(st['dir_rate'], '{:.3f}')} "
            f"({_f(st['dir_r2'], '{:.4f}')}) | {_f(st['loss_rate'], '{:.6f}')} ({_f(st['loss_r2'], '{:.4f}')}) |"
        )
    lines += [
        "",
        f"Accuracy: training set {_f(acc['train'], '{:.3f}')}, unseen sentences whose optimum the transitive "
        f"closure implies {_f(acc['unseen_implied'], '{:.3f}')} ({acc['counts']['unseen_implied']} sentences), "
        f"unseen sentences whose optimum it does not imply {_f(acc['unseen_not_implied'], '{:.3f}')} "
        "(against the generator's hidden order; reported, not credited).",
        "",
        "Checks of the issue: " + ", ".join(f"{k}: {v}" for k, v in checks.items()) + ".",
        "",
        f"![Figure 2 (reconstructed)]({SUBFOLDER}/figure2.png)",
        "",
        f"![One query's partial order with the learned attention scores]({SUBFOLDER}/order.png)",
        "",
        f"Files: {', '.join(f'[{Path(n).name}]({n})' for n in summary['files'])}.",
        "",
    ]
    return lines
