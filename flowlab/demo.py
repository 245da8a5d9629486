"""``flowlab demo``: the main job on its built-in default, the paper's setting end to end.

Writes to a folder: the derivations of ``ew`` and ``ewb`` (Markdown, LaTeX, and PDF when
``pdflatex`` is installed), gradient flows on the paper's chains from a small Gaussian
initialisation and from the guideline region, their trajectories (NPZ), a loss-curve
figure (PNG, PDF), the classified critical sets (the table over p + q and the sets at
p = 0.5, q = 0.8, JSON and LaTeX), ``summary.json`` and ``report.md`` that shows it all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .io import atomic_write_bytes, atomic_write_text, to_json, write_table

#: The paper's chains: Figure 1 (p = q = 0.1, p = q = 0.9) and Figure 4 (p = 0.5, q = 0.8).
CHAINS = ((0.1, 0.1), (0.9, 0.9), (0.5, 0.8))
FIGURE1_CHAINS = ((0.1, 0.1), (0.9, 0.9))
FIGURE4_CHAIN = (0.5, 0.8)
#: Initialisations: a small Gaussian draw (seeded) and a point of the guideline region
#: (w < -1/sqrt(2) with e of order one, in the basin I* of the global minimum when p + q > 1).
SMALL_SIGMA = 0.02
SEED = 0
GUIDELINE = {"e": 1.0, "w": -1.5}


def _progress(items, quiet, desc):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=quiet, file=sys.stderr)


def compile_pdf(tex: str, out_pdf: Path) -> bool:
    """Compile a standalone LaTeX document with pdflatex; False if pdflatex is absent."""
    exe = shutil.which("pdflatex")
    if exe is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "doc.tex").write_text(tex)
        proc = subprocess.run(
            [exe, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
            cwd=tmp, capture_output=True, text=True, timeout=120, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pdflatex failed:\n{proc.stdout[-2000:]}")
        atomic_write_bytes(out_pdf, (Path(tmp) / "doc.pdf").read_bytes())
    return True


def _save_figure(fig, base: Path) -> list[str]:
    from .io import save_figure

    names = []
    for ext in ("png", "pdf"):
        save_figure(fig, base.with_suffix("." + ext))
        names.append(base.with_suffix("." + ext).name)
    return names


def _timed(phases, times: dict):
    """Yield the phases one by one, recording each phase's wall time (until the next one is asked for)."""
    for name in phases:
        t0 = time.perf_counter()
        yield name
        times[name] = time.perf_counter() - t0


def run_demo(out="flowlab-demo", *, quiet: bool = False, fast: bool = False) -> dict:
    """Run the demo and return its summary (also written to ``out/summary.json``).

    ``fast`` uses coarse grids and few samples (for the tests); the analysis is the same.
    The folder is one unit: built under a hidden temporary sibling (``.NAME.partial-*``) and
    renamed to ``out`` at the end; an interrupted run removes it and leaves ``out`` as it was.
    ``out`` must be new, empty or an earlier demo folder (which is replaced); this is checked
    before any work.
    """
    from .io import atomic_folder

    with atomic_folder(out, "demo folder", _earlier_demo) as tmp:
        summary = _run_demo(tmp, quiet=quiet, fast=fast)
    if not quiet:
        print(f"flowlab demo: wrote {len(summary['files'])} files to {out} "
              f"in {summary['wall_time_s']:.1f} s; open {Path(out) / 'report.md'}", file=sys.stderr)
    return summary


def _earlier_demo(folder: Path) -> bool:
    """True when ``folder`` holds only what an earlier demo listed in its summary.json (it may be replaced)."""
    import json

    try:
        listed = json.loads((folder / "summary.json").read_text())["files"]
        tops = {str(name).split("/")[0] for name in listed}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return all(entry.name in tops for entry in folder.iterdir())


def _run_demo(out: Path, *, quiet: bool, fast: bool) -> dict:
    """The demo's work, written into the folder ``out`` (which exists)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plots
    from .basins import basin_grid, gaussian_basin
    from .critical import critical_sets, regions_table, result_latex, table_latex
    from .derivation import derive
    from .flow import gradient_flow
    from .latex import to_latex, to_markdown
    from .markov import MarkovChain
    from .models import get_model

    start = time.perf_counter()
    files: list[str] = []
    summary: dict = {"derivations": {}, "critical": {}, "basins": [], "gaussian": [], "flows": [], "fast": fast}
    grid_n = 48 if fast else 256
    grid_3d = 10 if fast else 24
    samples = 200 if fast else 1000
    box = {"e": (-3.0, 3.0), "w": (-3.0, 3.0)}
    steps = ["derivations", "critical sets", "figure 1", "basins", "gaussian", "flows", "figures", "attention (ewa)",
             "training (figure 4)", "co-occurrence", "ntp_order"]
    bar = _progress(steps, quiet, "demo")
    phase_times: dict = {}
    it = _timed(bar, phase_times)

    next(it)  # -------------------------------------------------------------- derivations
    for name in ("ew", "ewb", "ewa"):
        d = derive(get_model(name))
        atomic_write_text(out / f"derivation_{name}.md", to_markdown(d))
        tex = to_latex(d)
        atomic_write_text(out / f"derivation_{name}.tex", tex)
        files += [f"derivation_{name}.md", f"derivation_{name}.tex"]
        if compile_pdf(tex, out / f"derivation_{name}.pdf"):
            files.append(f"derivation_{name}.pdf")
        summary["derivations"][name] = {i.name: i.verified for i in d.identities}

    next(it)  # ------------------------------------------------------------ critical sets
    crits = {}
    for name in ("ew", "ewb"):
        table = regions_table(get_model(name))
        atomic_write_text(out / f"critical_regions_{name}.json", to_json(table))
        atomic_write_text(out / f"critical_regions_{name}.tex", table_latex(table))
        crit = critical_sets(get_model(name), MarkovChain(*FIGURE4_CHAIN))
        tag = f"critical_{name}_p{FIGURE4_CHAIN[0]:g}_q{FIGURE4_CHAIN[1]:g}"
        atomic_write_text(out / f"{tag}.json", to_json(crit.as_dict()))
        atomic_write_text(out / f"{tag}.tex", result_latex(crit))
        files += [f"critical_regions_{name}.json", f"critical_regions_{name}.tex", f"{tag}.json", f"{tag}.tex"]
        summary["critical"][name] = {"table": table, "at": crit.as_dict(), "file": f"{tag}.json"}
        crits[(name, FIGURE4_CHAIN)] = crit

    next(it)  # ---------------------------------------------- figure 1: p = q = 0.1 and 0.9
    ew = get_model("ew")
    grids = {}
    fig, axes = plt.subplots(2, 2, figsize=(11, 9.6), layout="constrained")
    for row, pq in enumerate(FIGURE1_CHAINS):
        chain = MarkovChain(*pq)
        crit = critical_sets(ew, chain, box)
        crits[("ew", pq)] = crit
        grid = basin_grid(ew, chain, box, grid_n)
        grids[pq] = grid
        plots.energy_landscape(ew, chain, crit=crit, extent=box, ax=axes[row, 0], resolution=120 if fast else 240)
        plots.basin_map(grid, crit=crit, ax=axes[row, 1])
        axes[row, 0].set_title(f"({'ac'[row]}) energy and flow, " + axes[row, 0].get_title())
        axes[row, 1].set_title(f"({'bd'[row]}) basins, " + axes[row, 1].get_title())
    files += _save_figure(fig, out / "figure1")
    plt.close(fig)

    next(it)  # ----------------------------------------------------------------- basins
    grids[FIGURE4_CHAIN] = basin_grid(ew, MarkovChain(*FIGURE4_CHAIN), box, grid_n)
    for pq, grid in grids.items():
        tag = f"basins_ew_p{pq[0]:g}_q{pq[1]:g}"
        grid.save(out / tag)
        files += [f"{tag}/basins.npz", f"{tag}/basins.json"]
        summary["basins"].append({"model": "ew", "dir": tag, **_basin_entry(grid)})
    ewb = get_model("ewb")
    g3 = basin_grid(ewb, MarkovChain(*FIGURE4_CHAIN), {**box, "b": (-3.0, 3.0)}, grid_3d)
    tag = f"basins_ewb_p{FIGURE4_CHAIN[0]:g}_q{FIGURE4_CHAIN[1]:g}"
    g3.save(out / tag)
    files += [f"{tag}/basins.npz", f"{tag}/basins.json"]
    summary["basins"].append({"model": "ewb", "dir": tag, **_basin_entry(g3)})

    next(it)  # -------------------------------------------------- Gaussian initialisation
    for pq in CHAINS:
        for name in ("ew", "ewb"):
            r = gaussian_basin(get_model(name), MarkovChain(*pq), SMALL_SIGMA, samples, SEED)
            summary["gaussian"].append({k: r[k] for k in ("model", "chain", "sigma", "samples", "seed",
                                                          "prob_global", "ci95", "counts")})
    atomic_write_text(out / "gaussian.json", to_json(summary["gaussian"]))
    files.append("gaussian.json")

    next(it)  # ------------------------------------------------------------------ flows
    rng = np.random.default_rng(SEED)
    small = {"e": float(rng.normal(0, SMALL_SIGMA)), "w": float(rng.normal(0, SMALL_SIGMA))}
    results = []
    for p, q in CHAINS:
        for name in ("ew", "ewb"):
            for label, init in (("small Gaussian", small), ("guideline", GUIDELINE)):
                model = get_model(name)
                theta0 = [init.get(k, 0.0) for k in model.params]
                res = gradient_flow(model, MarkovChain(p, q), theta0)
                tag = f"flow_{name}_p{p:g}_q{q:g}_{label.split()[0].lower()}"
                write_table(out / f"{tag}.npz", res.columns())
                files.append(f"{tag}.npz")
                summary["flows"].append({"init_label": label, "trajectory": f"{tag}.npz", **res.as_dict()})
                results.append((p, q, name, label, res))

    next(it)  # ----------------------------------------------------------------- figures
    fig, axes = plt.subplots(1, len(CHAINS), figsize=(13, 3.9), layout="constrained")
    for ax, (p, q) in zip(axes, CHAINS):
        first = True
        for rp, rq, name, label, res in results:
            if (rp, rq) == (p, q) and name == "ew":
                plots.loss_curve(res, ax, label=f"{label}: {res.reached}", references=first,
                                 linestyle="-" if first else "-.")
                first = False
        ax.set_title(rf"model ew, $p={p:g}$, $q={q:g}$ ($p+q {'<' if p + q < 1 else '>'} 1$)")
    files += _save_figure(fig, out / "loss_curves")
    plt.close(fig)

    chain4 = MarkovChain(*FIGURE4_CHAIN)
    ew_runs = [res for rp, rq, name, _, res in results if (rp, rq) == FIGURE4_CHAIN and name == "ew"]
    fig, ax = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
    plots.trajectories(ew_runs, ax=ax, background="energy", crit=crits[("ew", FIGURE4_CHAIN)], extent=box)
    files += _save_figure(fig, out / "trajectories")
    plt.close(fig)

    starts = np.array([[small["e"], small["w"], 0.0], [GUIDELINE["e"], GUIDELINE["w"], 0.0],
                       [0.5, 1.0, -1.0], [-1.5, -2.0, 1.0], [2.0, -0.3, 0.5]])
    fig = plt.figure(figsize=(7.2, 6.2), layout="constrained")
    ax3 = fig.add_subplot(projection="3d")
    plots.flow_3d(ewb, chain4, starts, crit=crits[("ewb", FIGURE4_CHAIN)], ax=ax3)
    files += _save_figure(fig, out / "flow3d_ewb")
    plt.close(fig)
    next(it)  # ---------------------------------------------------- the attention scalar (ewa)
    summary["ewa"] = _attention_section(out, files, fast=fast, small=small)
    next(it)  # ------------------------------------------------------ training: the paper's Figure 4
    summary["training"] = _training_section(out, files, fast=fast)
    next(it)  # ----------------------------------------- the co-occurrence system (MODELS.md section 6)
    from . import cooccurrence_report, ntp_order_report

    summary["cooccurrence"] = cooccurrence_report.section(out, fast=fast, quiet=True)
    files += summary["cooccurrence"]["files"]
    next(it)  # ------------------------------------- the next-token partial-order system (MODELS.md section 7)
    summary["ntp_order"] = ntp_order_report.section(out, fast=fast, quiet=True)
    files += summary["ntp_order"]["files"]
    next(it, None)  # records the last phase
    bar.close()
    summary["phase_seconds"] = phase_times

    summary["wall_time_s"] = time.perf_counter() - start
    summary["files"] = sorted(files + ["summary.json", "report.md"])
    atomic_write_text(out / "summary.json", to_json(summary))
    atomic_write_text(out / "report.md", _report(summary))
    return summary


#: Chains of the ewa section: one per regime (p != q, so that the attention scalar matters).
EWA_CHAINS = ((0.2, 0.3), (0.5, 0.8))
EWA_SLICE = 0.8


def _attention_section(out: Path, files: list, *, fast: bool, small: dict) -> dict:
    """Model ewa: critical sets in 3-D, a 3-D figure, basin slices a = const, invariants, finite context."""
    import matplotlib.pyplot as plt

    from . import plots
    from .basins import basin_grid
    from .context import ContextModel
    from .critical import critical_sets
    from .invariants import derive_invariants
    from .markov import MarkovChain
    from .models import get_model
    from .numeric import NumericModel

    ewa = get_model("ewa")
    box = {"e": (-3.0, 3.0), "w": (-3.0, 3.0), "a": (-3.0, 3.0)}
    section: dict = {"critical": {}, "slices": []}
    crits = {}
    for pq in EWA_CHAINS:
        crit = critical_sets(ewa, MarkovChain(*pq), box, starts=128 if fast else 256, samples=200)
        crits[pq] = crit
        tag = f"critical_ewa_p{pq[0]:g}_q{pq[1]:g}.json"
        atomic_write_text(out / tag, to_json(crit.as_dict()))
        files.append(tag)
        section["critical"][f"{pq[0]:g},{pq[1]:g}"] = {
            "file": tag, "complete": crit.complete,
            "sets": [{"kind": s.kind, "dimension": s.dimension, "loss": s.loss, "text": s.text} for s in crit.sets],
        }
    pq = EWA_CHAINS[1]
    starts = np.array([[small["e"], small["w"], 0.01], [1.0, -1.5, 0.5], [0.5, 1.0, -1.0], [-1.5, -2.0, 1.0],
                       [1.5, 0.3, 1.5]])
    fig = plt.figure(figsize=(7.2, 6.2), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    plots.flow_3d(ewa, MarkovChain(*pq), starts, crit=crits[pq], ax=ax)
    files.extend(_save_figure(fig, out / "flow3d_ewa"))
    plt.close(fig)
    fig, axes = plt.subplots(1, len(EWA_CHAINS), figsize=(11, 6.2), layout="constrained")
    for ax, pq in zip(axes, EWA_CHAINS):
        grid = basin_grid(ewa, MarkovChain(*pq), {"e": box["e"], "w": box["w"]}, 32 if fast else 128,
                          fixed={"a": EWA_SLICE}, crit=crits[pq], cross_check=False)
        plots.basin_map(grid, ax=ax)
        tag = f"basins_ewa_p{pq[0]:g}_q{pq[1]:g}_a{EWA_SLICE:g}"
        grid.save(out / tag)
        files += [f"{tag}/basins.npz", f"{tag}/basins.json"]
        section["slices"].append({"chain": grid.chain.as_dict(), "a": EWA_SLICE, "dir": tag,
                                  "fractions": grid.fractions(), "counts": grid.counts()})
    files.extend(_save_figure(fig, out / "basin_slices_ewa"))
    plt.close(fig)
    inv = {name: derive_invariants(get_model(name)).as_dict() for name in ("ew", "ewa")}
    atomic_write_text(out / "invariants.json", to_json(inv))
    files.append("invariants.json")
    section["invariants"] = inv
    theta = np.array([1.0, -1.2, 0.8])
    chain = MarkovChain(*EWA_CHAINS[1])
    section["context"] = {
        "theta": dict(zip(ewa.params, theta.tolist())),
        "long_context_loss": float(NumericModel(ewa, chain).loss(theta)),
        "losses": {str(n): float(ContextModel(ewa, chain, n).loss(theta)) for n in (4, 16, 64, 256)},
    }
    return section


def _training_section(out: Path, files: list, *, fast: bool) -> dict:
    """SGD on ewb and (with the torch extra) a single-layer transformer from standard and guideline inits."""
    import matplotlib.pyplot as plt

    from . import plots
    from .train import figure4

    exp = figure4(*FIGURE4_CHAIN, fast=fast, adam=False)
    n = 2 if exp.get("transformer") else 1
    fig, axes = plt.subplots(1, n + (1 if n == 2 else 0), figsize=(5.2 * (n + (1 if n == 2 else 0)), 4.2),
                             layout="constrained", squeeze=False)
    plots.figure4_panels(exp, axes=list(axes[0]))
    files.extend(_save_figure(fig, out / "figure4"))
    plt.close(fig)
    summary = exp["summary"]
    atomic_write_text(out / "training.json", to_json(summary))
    files.append("training.json")
    return {"summary": summary, "transformer": bool(exp.get("transformer"))}


def _training_report(sec: dict) -> list[str]:
    s = sec["summary"]
    lines = [
        "## Training: the paper's Figure 4",
        "",
        "SGD from the standard initialisation and from the guideline initialisation (`flowlab guide`), "
        "mean +- std over seeds, with the unigram and bigram losses"
        + ("" if sec["transformer"] else " (the transformer panel needs the `torch` extra: "
           "`pip install \".[torch]\"`)") + ". [JSON](training.json)",
        "",
        "![Figure 4](figure4.png)",
        "",
    ]
    rows = []
    for group in ("canonical", "transformer"):
        for init, r in (s.get(group) or {}).items():
            if isinstance(r, dict) and "mean" in r:
                verdicts = ", ".join(f"{a} / {b}" for a, b in zip(r.get("predicted", []), r.get("ended", [])))
                rows.append(f"| {group} | {init} | {r['mean']:.5f} +- {r.get('std', 0.0):.5f} | "
                            + ", ".join(f"{v:.5f}" for v in r.get("final_losses", [])) + f" | {verdicts} |")
    lines += [f"Unigram loss h(pi1) = {s['unigram_loss']:.5f}, bigram loss H = {s['bigram_loss']:.5f}. "
              "Predicted: the gradient flow of the canonical model from the same start (for the transformer, from "
              "its initial weights projected on (e, w, a, b)); ended: within 0.1 of the gap h(pi1) - H of a level "
              "(for the transformer with 3 standard errors of the held-out loss), else undetermined.", "",
              "| model | init | final loss (mean +- std) | per seed | predicted / ended, per seed |",
              "|---|---|---|---|---|", *rows, ""]
    return lines


def _basin_entry(grid) -> dict:
    return {
        "chain": grid.chain.as_dict(),
        "grid": {k: [float(v[0]), float(v[-1]), int(v.size)] for k, v in grid.axes.items()},
        "counts": grid.counts(),
        "fractions": grid.fractions(),
        "cross_check": grid.cross_check,
        "seconds": grid.timings["total_s"],
    }


def _attention_report(sec: dict) -> list[str]:
    lines = [
        "## The attention scalar: model `ewa` (MODELS.md section 4)",
        "",
        "[Derivation](derivation_ewa.md) (long-context limit m = pi1). Critical sets in 3-D:",
        "",
        "| p, q | kind | dim | loss | set |",
        "|---|---|---|---|---|",
    ]
    for pq, c in sec["critical"].items():
        lines += [f"| {pq} ([JSON]({c['file']}), complete: {c['complete']}) | {s['kind']} | {s['dimension']} | "
                  f"{s['loss']:.6f} | `{s['text']}` |" for s in c["sets"]]
    lines += ["", "Flows in 3-D at p = 0.5, q = 0.8 with the global-minimum surface and the unigram plane:", "",
              "![3-D flow of ewa](flow3d_ewa.png)", "",
              f"Basin slices at a = {EWA_SLICE:g} for p + q < 1 (left) and p + q > 1 (right):", "",
              "![basin slices](basin_slices_ewa.png)", "",
              "| p | q | a | global | non-global | undetermined |", "|---|---|---|---|---|---|"]
    for sl in sec["slices"]:
        c, f = sl["chain"], sl["fractions"]
        lines.append(f"| {c['p']:g} | {c['q']:g} | {sl['a']:g} | {f['global']:.4f} | {f['nonglobal']:.4f} | "
                     f"{f['undetermined']:.4f} |")
    lines += ["", "Conserved quantities derived by SymPy (method of characteristics; [JSON](invariants.json)):", ""]
    for name, inv in sec["invariants"].items():
        for i in inv["invariants"]:
            match = f" (= `{i['matches']}` of the model)" if i["matches"] else ""
            lines.append(f"- `{name}`: `{i['expression']}`{match}, verified: {i['verified']}")
        lines.append(f"- `{name}`: {inv['found']} of {inv['expected']} invariants found; region: {inv['region']}"
                     + ("; " + "; ".join(inv["notes"]) if inv["notes"] else ""))
    ctx = sec["context"]
    lines += ["", f"Finite context at theta = {ctx['theta']} (p = 0.5, q = 0.8): exact expected loss over positions "
              f"1..N (dynamic programme) against the long-context limit {ctx['long_context_loss']:.6f}:", "",
              "| N | " + " | ".join(ctx["losses"]) + " |", "|---|" + "---|" * len(ctx["losses"]),
              "| loss | " + " | ".join(f"{v:.6f}" for v in ctx["losses"].values()) + " |", ""]
    return lines


def _report(summary: dict) -> str:
    from . import cooccurrence_report, ntp_order_report

    lines = [
        "# flowlab demo report",
        "",
        "The paper's setting (Makkuva et al., NeurIPS 2024): model `ew` (bias profiled) and `ewb` "
        "(bias free) on binary Markov chains. Losses in nats."
        + (" **Fast mode**: coarse grids and few samples." if summary.get("fast") else ""),
        "",
        "## Derivations",
        "",
    ]
    for name, ids in summary["derivations"].items():
        ok = sum(ids.values())
        lines.append(
            f"- `{name}`: [Markdown](derivation_{name}.md), [LaTeX](derivation_{name}.tex)"
            + (f", [PDF](derivation_{name}.pdf)" if f"derivation_{name}.pdf" in summary["files"] else "")
            + f" — {ok}/{len(ids)} identities proved by SymPy"
        )
    if not any(f.startswith("derivation_") and f.endswith(".pdf") for f in summary["files"]):
        lines += ["", "The derivation PDFs were **not made**: `pdflatex` is not installed (on Debian/Ubuntu: "
                  "`apt-get install texlive-latex-base`; then rerun the demo). The `.tex` files compile as they are."]
    lines += ["", "## Critical sets", ""]
    for name, crit in summary["critical"].items():
        table, at = crit["table"], crit["at"]
        regions = list(table["regions"])
        chains = ", ".join(f"{r}: p = {v['p']}, q = {v['q']}" for r, v in table["regions"].items())
        lines += [
            f"Model `{name}`, by region of p + q ({chains}; complete in every region: "
            f"{all(table['complete'].values())}; [JSON](critical_regions_{name}.json), "
            f"[LaTeX](critical_regions_{name}.tex)):",
            "",
            "| set | " + " | ".join(regions) + " |",
            "|---|" + "---|" * len(regions),
        ]
        for row in table["rows"]:
            cells = [
                (row[r]["kind"] + (f" ({row[r]['location']})" if row[r].get("location") else "")) if r in row else "-"
                for r in regions
            ]
            lines.append(f"| `{row['set']}` | " + " | ".join(cells) + " |")
        c = at["chain"]
        lines += [
            "",
            f"At p = {c['p']:g}, q = {c['q']:g} (complete: {at['complete']}; [JSON]({crit['file']})):",
            "",
            "| kind | dim | loss | set |",
            "|---|---|---|---|",
        ]
        lines += [f"| {s['kind']} | {s['dimension']} | {s['loss']:.6f} | `{s['text']}` |" for s in at["sets"]]
        lines.append("")
    lines += [
        "## Figure 1: energy, flow and basins",
        "",
        "Left: contours of the conserved energy E (colour), the normalised flow -grad L/|grad L| "
        "(streamlines), the critical sets and the separatrix through the saddle. Right: the basins computed "
        "by integrating the flow from every grid point (green: I*, reaches the bigram model; red: I_min, "
        "stuck at the unigram model). Top: p = q = 0.1 (p + q < 1); bottom: p = q = 0.9 (p + q > 1).",
        "",
        "![Figure 1](figure1.png)",
        "",
        "## Basins of convergence",
        "",
        "| model | p | q | grid | global | non-global | undetermined | agreement with the invariant | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in summary["basins"]:
        c, f = b["chain"], b["fractions"]
        grid = "x".join(str(v[2]) for v in b["grid"].values())
        x = b["cross_check"]
        agree = "n/a" if not x or x["agreement_far"] is None else f"{x['agreement_far']:.5f}"
        lines.append(
            f"| {b.get('model', 'ew')} | {c['p']:g} | {c['q']:g} | [{grid}]({b['dir']}/basins.json) | {f['global']:.4f} | "
            f"{f['nonglobal']:.4f} | {f['undetermined']:.4f} | {agree} | {b['seconds']:.2f} |"
        )
    lines += [
        "",
        "Agreement: the fraction of grid points farther than 0.02 (in E) from the separatrix whose flow label "
        "equals the exact label from the conserved energy (MODELS.md section 3).",
        "",
        f"## Gaussian initialisation (sigma = {SMALL_SIGMA})",
        "",
        "| model | p | q | P(global) | 95% CI | global / non-global / undetermined |",
        "|---|---|---|---|---|---|",
    ]
    for g in summary["gaussian"]:
        c, n = g["chain"], g["counts"]
        lines.append(
            f"| {g['model']} | {c['p']:g} | {c['q']:g} | {g['prob_global']:.4f} | "
            f"[{g['ci95'][0]:.4f}, {g['ci95'][1]:.4f}] | {n['global']} / {n['nonglobal']} / {n['undetermined']} |"
        )
    lines += [
        "",
        "As MODELS.md says: near the origin the flow reaches the bigram model when p + q < 1 and gets stuck "
        "at the unigram model when p + q > 1.",
        "",
        "## Gradient flows",
        "",
        f"Initialisations: a small Gaussian draw (sigma = {SMALL_SIGMA}, seed {SEED}) and the guideline "
        f"point e = {GUIDELINE['e']}, w = {GUIDELINE['w']} (b = 0 for `ewb`).",
        "",
        "| p | q | model | init | reached | final loss | H | h(pi1) | E drift |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in summary["flows"]:
        c = f["chain"]
        drift = "n/a" if f["energy_drift"] is None else f"{f['energy_drift']:.1e}"
        lines.append(
            f"| {c['p']:g} | {c['q']:g} | {f['model']} | {f['init_label']} | **{f['reached']}** | "
            f"{f['loss']:.6f} | {c['entropy_rate']:.6f} | {c['unigram_loss']:.6f} | {drift} |"
        )
    lines += [
        "",
        "E is conserved by the profiled flow (`ew`); with a free bias (`ewb`) it changes at rate "
        "2e^2 dL/db, so its drift there is not an error.",
        "",
        "![loss curves](loss_curves.png)",
        "",
        "At p = 0.5, q = 0.8, the two flows of `ew` over the energy landscape:",
        "",
        "![trajectories](trajectories.png)",
        "",
        "Model `ewb` (bias free) at p = 0.5, q = 0.8 in 3-D: flows from five starts, the global-minimum "
        "curve (lifted by b = b*(theta)) and the unigram line:",
        "",
        "![3-D flow](flow3d_ewb.png)",
        "",
    ]
    lines += _attention_report(summary["ewa"])
    lines += _training_report(summary["training"])
    lines += cooccurrence_report.report_lines(summary["cooccurrence"])
    lines += ntp_order_report.report_lines(summary["ntp_order"])
    lines += [
        "",
        f"Wall time: {summary['wall_time_s']:.1f} s.",
        "",
    ]
    return "\n".join(lines)
