"""The Markov sections of ``flowlab demo``: the paper's setting, one method per section, and its report text.

:class:`MarkovSections` runs the sections in order (derivations, critical sets, Figure 1, basins,
Gaussian initialisation, flows, figures, the attention scalar ``ewa``, training); a later section
reuses what an earlier one computed (critical sets, basin grids, flows, the small Gaussian draw).
Each section writes its files into the demo folder, lists them, and returns its part of
``summary.json``; :func:`report_lines` renders those parts as the Markov part of ``report.md``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from flowlab.engine.io import atomic_write_bytes, atomic_write_text, to_json, write_table

#: The paper's chains: Figure 1 (p = q = 0.1, p = q = 0.9) and Figure 4 (p = 0.5, q = 0.8).
CHAINS = ((0.1, 0.1), (0.9, 0.9), (0.5, 0.8))
FIGURE1_CHAINS = ((0.1, 0.1), (0.9, 0.9))
FIGURE4_CHAIN = (0.5, 0.8)
#: Initialisations: a small Gaussian draw (seeded) and a point of the guideline region
#: (w < -1/sqrt(2) with e of order one, in the basin I* of the global minimum when p + q > 1).
SMALL_SIGMA = 0.02
SEED = 0
GUIDELINE = {"e": 1.0, "w": -1.5}
#: The box of the (e, w) plane the sections draw and label.
BOX = {"e": (-3.0, 3.0), "w": (-3.0, 3.0)}
#: Chains of the ewa section: one per regime (p != q, so that the attention scalar matters).
EWA_CHAINS = ((0.2, 0.3), (0.5, 0.8))
EWA_SLICE = 0.8


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


def save_figures(fig, base: Path) -> list[str]:
    """Save ``fig`` as ``base``.png and ``base``.pdf; returns the two file names."""
    from flowlab.engine.io import save_figure

    names = []
    for ext in ("png", "pdf"):
        save_figure(fig, base.with_suffix("." + ext))
        names.append(base.with_suffix("." + ext).name)
    return names


def basin_entry(grid) -> dict:
    """The summary of a basin grid: chain, axes, counts, fractions, cross-check and time."""
    return {
        "chain": grid.chain.as_dict(),
        "grid": {k: [float(v[0]), float(v[-1]), int(v.size)] for k, v in grid.axes.items()},
        "counts": grid.counts(),
        "fractions": grid.fractions(),
        "cross_check": grid.cross_check,
        "seconds": grid.seconds,
    }


class MarkovSections:
    """The Markov sections of the demo, written into ``out``; every file written is appended to ``files``.

    Call the sections in the order they are defined: ``figure1`` adds to the critical sets of
    ``critical``, ``basins`` to the grids of ``figure1``, and ``figures`` and ``attention`` use the
    flows and the small Gaussian draw of ``flows``.
    """

    def __init__(self, out: Path, files: list, *, fast: bool):
        self.out, self.files, self.fast = out, files, fast
        self.crits: dict = {}  # (model name, (p, q)) -> CriticalResult
        self.grids: dict = {}  # (p, q) -> basin grid of ew
        self.results: list = []  # (p, q, model name, init label, FlowResult)
        self.small: dict | None = None  # the small Gaussian draw (e, w)

    def derivations(self) -> dict:
        """The derivations of ew, ewb and ewa (Markdown, LaTeX, PDF with pdflatex): {model: {identity: verified}}."""
        from flowlab.systems.markov.derivation import derive
        from flowlab.systems.markov.latex import to_latex, to_markdown
        from flowlab.systems.markov.models import get_model

        out, section = self.out, {}
        for name in ("ew", "ewb", "ewa"):
            d = derive(get_model(name))
            atomic_write_text(out / f"derivation_{name}.md", to_markdown(d))
            tex = to_latex(d)
            atomic_write_text(out / f"derivation_{name}.tex", tex)
            self.files.extend([f"derivation_{name}.md", f"derivation_{name}.tex"])
            if compile_pdf(tex, out / f"derivation_{name}.pdf"):
                self.files.append(f"derivation_{name}.pdf")
            section[name] = {i.name: i.verified for i in d.identities}
        return section

    def critical(self) -> dict:
        """The critical sets of ew and ewb by region of p + q, and at the Figure 4 chain (JSON, LaTeX)."""
        from flowlab.report.critical_tables import result_latex, table_latex
        from flowlab.systems.markov.chain import MarkovChain
        from flowlab.systems.markov.critical import critical_sets, regions_table
        from flowlab.systems.markov.models import get_model

        out, section = self.out, {}
        for name in ("ew", "ewb"):
            table = regions_table(get_model(name))
            atomic_write_text(out / f"critical_regions_{name}.json", to_json(table))
            atomic_write_text(out / f"critical_regions_{name}.tex", table_latex(table))
            crit = critical_sets(get_model(name), MarkovChain(*FIGURE4_CHAIN))
            tag = f"critical_{name}_p{FIGURE4_CHAIN[0]:g}_q{FIGURE4_CHAIN[1]:g}"
            atomic_write_text(out / f"{tag}.json", to_json(crit.as_dict()))
            atomic_write_text(out / f"{tag}.tex", result_latex(crit))
            self.files.extend([f"critical_regions_{name}.json", f"critical_regions_{name}.tex", f"{tag}.json",
                               f"{tag}.tex"])
            section[name] = {"table": table, "result": crit.as_dict(), "file": f"{tag}.json"}
            self.crits[(name, FIGURE4_CHAIN)] = crit
        return section

    def figure1(self) -> None:
        """The paper's Figure 1 for p = q = 0.1 and 0.9: energy and flow, and the basins of ew."""
        import matplotlib.pyplot as plt

        from flowlab.plots import markov as plots
        from flowlab.systems.markov.basins import basin_grid
        from flowlab.systems.markov.chain import MarkovChain
        from flowlab.systems.markov.critical import critical_sets
        from flowlab.systems.markov.landscape import basin_landscape, landscape
        from flowlab.systems.markov.models import get_model

        ew = get_model("ew")
        grid_n = 48 if self.fast else 256
        fig, axes = plt.subplots(2, 2, figsize=(11, 9.6), layout="constrained")
        for row, pq in enumerate(FIGURE1_CHAINS):
            chain = MarkovChain(*pq)
            crit = critical_sets(ew, chain, BOX)
            self.crits[("ew", pq)] = crit
            grid = basin_grid(ew, chain, BOX, grid_n)
            self.grids[pq] = grid
            plots.energy_landscape(landscape(ew, chain, crit=crit, extent=BOX, resolution=120 if self.fast else 240),
                                   ax=axes[row, 0])
            plots.basin_map(grid, landscape=basin_landscape(grid, crit), ax=axes[row, 1])
            axes[row, 0].set_title(f"({'ac'[row]}) energy and flow, " + axes[row, 0].get_title())
            axes[row, 1].set_title(f"({'bd'[row]}) basins, " + axes[row, 1].get_title())
        self.files.extend(save_figures(fig, self.out / "figure1"))
        plt.close(fig)

    def basins(self) -> list:
        """Basin grids of ew (Figure 1's chains and Figure 4's) and of ewb in 3-D at Figure 4's chain."""
        from flowlab.systems.markov.basins import basin_grid
        from flowlab.systems.markov.chain import MarkovChain
        from flowlab.systems.markov.models import get_model

        section = []
        self.grids[FIGURE4_CHAIN] = basin_grid(get_model("ew"), MarkovChain(*FIGURE4_CHAIN), BOX,
                                               48 if self.fast else 256)
        for pq, grid in self.grids.items():
            tag = f"basins_ew_p{pq[0]:g}_q{pq[1]:g}"
            grid.save(self.out / tag)
            self.files.extend([f"{tag}/basins.npz", f"{tag}/basins.json"])
            section.append({"model": "ew", "dir": tag, **basin_entry(grid)})
        g3 = basin_grid(get_model("ewb"), MarkovChain(*FIGURE4_CHAIN), {**BOX, "b": (-3.0, 3.0)},
                        10 if self.fast else 24)
        tag = f"basins_ewb_p{FIGURE4_CHAIN[0]:g}_q{FIGURE4_CHAIN[1]:g}"
        g3.save(self.out / tag)
        self.files.extend([f"{tag}/basins.npz", f"{tag}/basins.json"])
        section.append({"model": "ewb", "dir": tag, **basin_entry(g3)})
        return section

    def gaussian(self) -> list:
        """P(global) from a small Gaussian initialisation, for ew and ewb on every chain."""
        from flowlab.systems.markov.basins import gaussian_basin
        from flowlab.systems.markov.chain import MarkovChain
        from flowlab.systems.markov.models import get_model

        section = []
        for pq in CHAINS:
            for name in ("ew", "ewb"):
                r = gaussian_basin(get_model(name), MarkovChain(*pq), SMALL_SIGMA, 200 if self.fast else 1000,
                                   SEED).as_dict()
                section.append({k: r[k] for k in ("model", "chain", "sigma", "samples", "seed",
                                                  "prob_global", "ci95", "counts")})
        atomic_write_text(self.out / "gaussian.json", to_json(section))
        self.files.append("gaussian.json")
        return section

    def flows(self) -> list:
        """Gradient flows of ew and ewb on every chain from the small Gaussian draw and the guideline point."""
        from flowlab.systems.markov.chain import MarkovChain
        from flowlab.systems.markov.flow import gradient_flow
        from flowlab.systems.markov.models import get_model

        rng = np.random.default_rng(SEED)
        self.small = small = {"e": float(rng.normal(0, SMALL_SIGMA)), "w": float(rng.normal(0, SMALL_SIGMA))}
        section = []
        for p, q in CHAINS:
            for name in ("ew", "ewb"):
                for label, init in (("small Gaussian", small), ("guideline", GUIDELINE)):
                    model = get_model(name)
                    theta0 = [init.get(k, 0.0) for k in model.params]
                    res = gradient_flow(model, MarkovChain(p, q), theta0)
                    tag = f"flow_{name}_p{p:g}_q{q:g}_{label.split()[0].lower()}"
                    write_table(self.out / f"{tag}.npz", res.columns())
                    self.files.append(f"{tag}.npz")
                    section.append({"init_label": label, "trajectory": f"{tag}.npz", **res.as_dict()})
                    self.results.append((p, q, name, label, res))
        return section

    def figures(self) -> None:
        """Loss curves of the flows of ew, their trajectories over the energy, and flows of ewb in 3-D."""
        import matplotlib.pyplot as plt

        from flowlab.plots import markov as plots
        from flowlab.systems.markov.chain import MarkovChain
        from flowlab.systems.markov.landscape import flows_3d, landscape
        from flowlab.systems.markov.models import get_model

        out, results, small = self.out, self.results, self.small
        fig, axes = plt.subplots(1, len(CHAINS), figsize=(13, 3.9), layout="constrained")
        for ax, (p, q) in zip(axes, CHAINS):
            first = True
            for rp, rq, name, label, res in results:
                if (rp, rq) == (p, q) and name == "ew":
                    plots.loss_curve(res, ax, label=f"{label}: {res.reached}", references=first,
                                     linestyle="-" if first else "-.")
                    first = False
            ax.set_title(rf"model ew, $p={p:g}$, $q={q:g}$ ($p+q {'<' if p + q < 1 else '>'} 1$)")
        self.files.extend(save_figures(fig, out / "loss_curves"))
        plt.close(fig)

        ew_runs = [res for rp, rq, name, _, res in results if (rp, rq) == FIGURE4_CHAIN and name == "ew"]
        fig, ax = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
        plots.trajectories(ew_runs, ax=ax, background=landscape(ew_runs[0].model, ew_runs[0].chain,
                                                                 crit=self.crits[("ew", FIGURE4_CHAIN)], extent=BOX))
        self.files.extend(save_figures(fig, out / "trajectories"))
        plt.close(fig)

        starts = np.array([[small["e"], small["w"], 0.0], [GUIDELINE["e"], GUIDELINE["w"], 0.0],
                           [0.5, 1.0, -1.0], [-1.5, -2.0, 1.0], [2.0, -0.3, 0.5]])
        fig = plt.figure(figsize=(7.2, 6.2), layout="constrained")
        ax3 = fig.add_subplot(projection="3d")
        plots.flow_3d(flows_3d(get_model("ewb"), MarkovChain(*FIGURE4_CHAIN), starts,
                               crit=self.crits[("ewb", FIGURE4_CHAIN)]), ax=ax3)
        self.files.extend(save_figures(fig, out / "flow3d_ewb"))
        plt.close(fig)

    def attention(self) -> dict:
        """Model ewa: critical sets in 3-D, a 3-D figure, basin slices a = const, invariants, finite context."""
        import matplotlib.pyplot as plt

        from flowlab.plots import markov as plots
        from flowlab.systems.markov.basins import basin_grid
        from flowlab.systems.markov.chain import MarkovChain
        from flowlab.systems.markov.critical import critical_sets
        from flowlab.systems.markov.landscape import basin_landscape, flows_3d
        from flowlab.systems.markov.models import get_model

        out, files, fast, small = self.out, self.files, self.fast, self.small
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
        plots.flow_3d(flows_3d(ewa, MarkovChain(*pq), starts, crit=crits[pq]), ax=ax)
        files.extend(save_figures(fig, out / "flow3d_ewa"))
        plt.close(fig)
        fig, axes = plt.subplots(1, len(EWA_CHAINS), figsize=(11, 6.2), layout="constrained")
        for ax, pq in zip(axes, EWA_CHAINS):
            grid = basin_grid(ewa, MarkovChain(*pq), {"e": box["e"], "w": box["w"]}, 32 if fast else 128,
                              fixed={"a": EWA_SLICE}, crit=crits[pq], cross_check=False)
            plots.basin_map(grid, landscape=basin_landscape(grid), ax=ax)
            tag = f"basins_ewa_p{pq[0]:g}_q{pq[1]:g}_a{EWA_SLICE:g}"
            grid.save(out / tag)
            files += [f"{tag}/basins.npz", f"{tag}/basins.json"]
            section["slices"].append({"chain": grid.chain.as_dict(), "a": EWA_SLICE, "dir": tag,
                                      "fractions": grid.fractions(), "counts": grid.counts()})
        files.extend(save_figures(fig, out / "basin_slices_ewa"))
        plt.close(fig)
        return {**section, **_invariants_and_context(out, files)}

    def training(self) -> dict:
        """SGD on ewb and (with the torch extra) a single-layer transformer from standard and guideline inits."""
        import matplotlib.pyplot as plt

        from flowlab.plots import markov as plots
        from flowlab.systems.markov.train import figure4

        exp = figure4(*FIGURE4_CHAIN, fast=self.fast, adam=False)
        n = 2 if exp.get("transformer") else 1
        fig, axes = plt.subplots(1, n + (1 if n == 2 else 0), figsize=(5.2 * (n + (1 if n == 2 else 0)), 4.2),
                                 layout="constrained", squeeze=False)
        plots.figure4_panels(exp, axes=list(axes[0]))
        self.files.extend(save_figures(fig, self.out / "figure4"))
        plt.close(fig)
        summary = exp["summary"]
        atomic_write_text(self.out / "training.json", to_json(summary))
        self.files.append("training.json")
        return {"summary": summary, "transformer": bool(exp.get("transformer"))}


def _invariants_and_context(out: Path, files: list) -> dict:
    """The ewa section's invariants of ew and ewa (SymPy) and the finite-context losses of ewa."""
    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.context import ContextModel
    from flowlab.systems.markov.invariants import derive_invariants
    from flowlab.systems.markov.models import get_model
    from flowlab.systems.markov.numeric import NumericModel

    ewa = get_model("ewa")
    section = {}
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


# ------------------------------------------------------------------------------ report text
def report_lines(summary: dict) -> list[str]:
    """The Markov part of ``report.md``, section by section, from the demo's summary."""
    return [
        *derivations_report(summary["derivations"], summary["files"]),
        *critical_report(summary["critical"]),
        *basins_report(summary["basins"]),
        *gaussian_report(summary["gaussian"]),
        *flows_report(summary["flows"]),
        *attention_report(summary["ewa"]),
        *training_report(summary["training"]),
    ]


def derivations_report(derivations: dict, files: list) -> list[str]:
    lines = ["## Derivations", ""]
    for name, ids in derivations.items():
        ok = sum(ids.values())
        lines.append(
            f"- `{name}`: [Markdown](derivation_{name}.md), [LaTeX](derivation_{name}.tex)"
            + (f", [PDF](derivation_{name}.pdf)" if f"derivation_{name}.pdf" in files else "")
            + f" — {ok}/{len(ids)} identities proved by SymPy"
        )
    if not any(f.startswith("derivation_") and f.endswith(".pdf") for f in files):
        lines += ["", "The derivation PDFs were **not made**: `pdflatex` is not installed (on Debian/Ubuntu: "
                  "`apt-get install texlive-latex-base`; then rerun the demo). The `.tex` files compile as they are."]
    return lines


def critical_report(critical: dict) -> list[str]:
    lines = ["", "## Critical sets", ""]
    for name, crit in critical.items():
        table, at = crit["table"], crit["result"]
        regions = list(table["regions"])
        chains = ", ".join(f"{r}: p = {v['p']}, q = {v['q']}" for r, v in table["regions"].items())
        lines += [
            f"Model `{name}`, by region of p + q ({chains}; complete in every region: "
            f"{table['complete']}; [JSON](critical_regions_{name}.json), "
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
    return lines


def basins_report(basins: list) -> list[str]:
    """Figure 1 and the table of basin grids."""
    lines = [
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
    for b in basins:
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
    ]
    return lines


def gaussian_report(gaussian: list) -> list[str]:
    lines = [
        f"## Gaussian initialisation (sigma = {SMALL_SIGMA})",
        "",
        "| model | p | q | P(global) | 95% CI | global / non-global / undetermined |",
        "|---|---|---|---|---|---|",
    ]
    for g in gaussian:
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
    ]
    return lines


def flows_report(flows: list) -> list[str]:
    lines = [
        "## Gradient flows",
        "",
        f"Initialisations: a small Gaussian draw (sigma = {SMALL_SIGMA}, seed {SEED}) and the guideline "
        f"point e = {GUIDELINE['e']}, w = {GUIDELINE['w']} (b = 0 for `ewb`).",
        "",
        "| p | q | model | init | reached | final loss | H | h(pi1) | E drift |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in flows:
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
    return lines


def attention_report(sec: dict) -> list[str]:
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


def training_report(sec: dict) -> list[str]:
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
                verdicts = ", ".join(f"{a} / {b}" for a, b in zip(r.get("predicted", []), r.get("reached", [])))
                rows.append(f"| {group} | {init} | {r['mean']:.5f} +- {r.get('std', 0.0):.5f} | "
                            + ", ".join(f"{v:.5f}" for v in r.get("final_losses", [])) + f" | {verdicts} |")
    lines += [f"Unigram loss h(pi1) = {s['levels']['unigram']:.5f}, bigram loss H = {s['optimal_loss']:.5f}. "
              "Predicted: the gradient flow of the canonical model from the same start (for the transformer, from "
              "its initial weights projected on (e, w, a, b)); ended: within 0.1 of the gap h(pi1) - H of a level "
              "(for the transformer with 3 standard errors of the held-out loss), else undetermined.", "",
              "| model | init | final loss (mean +- std) | per seed | predicted / ended, per seed |",
              "|---|---|---|---|---|", *rows, ""]
    return lines
