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
#: Initialisations: a small Gaussian draw (seeded) and the guideline point (:func:`guideline_point`).
SMALL_SIGMA = 0.02
SEED = 0
#: The box of the (e, w) plane the sections draw and label.
BOX = {"e": (-3.0, 3.0), "w": (-3.0, 3.0)}
#: Chains of the ewa section: one per regime (p != q, so that the attention scalar matters).
EWA_CHAINS = ((0.2, 0.3), (0.5, 0.8))
EWA_SLICE = 0.8
#: Views (elevation, azimuth) of the 3-D figure of ewa: oblique, and along e onto the unigram plane.
EWA_VIEWS = ((22.0, -58.0), (12.0, -10.0))
#: Points sampled from each flow's dense output for the loss curves (smooth between solver steps).
LOSS_CURVE_POINTS = 400
#: Numeric multi-start of the ewa critical sets: an independent cross-check of the symbolic sets, whose sign cases are
#: solved exactly (the completeness proof); 96 starts in the 3-D box find the same sets as 256 at both chains.
EWA_STARTS = 96
#: Seeds of Figure 4 and the demo's transformer settings (train_transformer's defaults otherwise): the validation
#: curve on 1024 sequences every 50 steps (defaults: 4096 every 25), the held-out verdict unchanged (2^15 sequences).
FIGURE4_SEEDS = (0, 1, 2)
#: Std of the mean loss of one sequence (N = 32) at Figure 4's chain, at the bigram level (0.030 at the unigram
#: level; Monte Carlo over 20 000 sequences): the validation curve's standard error is this / sqrt(val_sequences).
SEQUENCE_LOSS_STD = 0.057
#: The final loss on 8192 held-out sequences (standard error <= 0.057 / sqrt(8192) = 0.0006 nats, against a gap of
#: 0.047 nats between the two levels at Figure 4's chain): a quarter of the default's evaluation time.
DEMO_TRANSFORMER = {"val_sequences": 1024, "log_every": 50, "eval_sequences": 2**13}


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
    from flowlab.engine.io import save_figures as save

    return [path.name for path in save(fig, base)]


def guideline_point() -> dict:
    """The demo's one guideline start {e, w, b}: the point ``flowlab guide`` picks for Figure 4's chain.

    Figure 4 trains from the same point (``train --init guideline``); the flows start from it on every chain.
    """
    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.guide import guide

    return guide(MarkovChain(*FIGURE4_CHAIN))["point"]


def guideline_check(chain, res) -> dict:
    """A flow ``res`` from the guideline start on ``chain`` judged by the conserved energy E of ``ew``.

    {"energy": E at the start, "final_energy": E at the end (null if undefined), "separatrix": E at the saddle,
    "in_I_star": whether the flow of ``ew`` from the start reaches the global minimum (exact, from E)}.
    """
    from flowlab.engine.basins import GLOBAL
    from flowlab.systems.markov.basins import invariant_labels, unigram_saddle
    from flowlab.systems.markov.models import get_model
    from flowlab.systems.markov.numeric import NumericModel

    ew = get_model("ew")
    nm = NumericModel(ew, chain)
    ends = np.asarray(res.theta)[[0, -1], :2]
    with np.errstate(all="ignore"):
        energy = nm.invariants(ends)["E"]
    return {
        "energy": float(energy[0]),
        "final_energy": float(energy[1]) if np.isfinite(energy[1]) else None,
        "separatrix": float(nm.invariants(unigram_saddle(ew))["E"]),
        "in_I_star": bool(invariant_labels(nm, ends[:1])[0] == GLOBAL),
    }


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

    def __init__(self, out: Path, files: list, *, fast: bool, quiet: bool = True):
        self.out, self.files, self.fast, self.quiet = out, files, fast, quiet
        self.crits: dict = {}  # (model name, (p, q)) -> CriticalResult
        self.grids: dict = {}  # (p, q) -> basin grid of ew
        self.results: list = []  # (p, q, model name, init label, FlowResult)
        self.small: dict | None = None  # the small Gaussian draw (e, w)

    def _steps(self, items, desc: str):
        """``items`` with a progress bar of a section's sub-steps (tqdm on stderr, none when quiet)."""
        import sys

        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, disable=self.quiet, file=sys.stderr, leave=False)

    def derivations(self) -> dict:
        """The derivations of ew, ewb and ewa (Markdown, LaTeX, PDF with pdflatex): {model: {identity: verified}}."""
        from flowlab.systems.markov.derivation import derive
        from flowlab.systems.markov.latex import to_latex, to_markdown
        from flowlab.systems.markov.models import get_model

        out, section = self.out, {}
        for name in self._steps(("ew", "ewb", "ewa"), "derivations"):
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
        for name in self._steps(("ew", "ewb"), "critical sets"):
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
        rows = []
        for pq in self._steps(FIGURE1_CHAINS, "figure 1"):
            chain = MarkovChain(*pq)
            crit = critical_sets(ew, chain, BOX)
            self.crits[("ew", pq)] = crit
            grid = basin_grid(ew, chain, BOX, grid_n)
            self.grids[pq] = grid
            rows.append((landscape(ew, chain, crit=crit, extent=BOX, resolution=120 if self.fast else 240), grid,
                         basin_landscape(grid, crit)))
        fig = plots.figure1_panels(rows)[0, 0].figure
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
                for label, init in (("small Gaussian", small), ("guideline", guideline_point())):
                    model = get_model(name)
                    theta0 = [init.get(k, 0.0) for k in model.params]
                    res = gradient_flow(model, MarkovChain(p, q), theta0, dense_output=LOSS_CURVE_POINTS)
                    tag = f"flow_{name}_p{p:g}_q{q:g}_{label.split()[0].lower()}"
                    write_table(self.out / f"{tag}.npz", res.columns())
                    self.files.append(f"{tag}.npz")
                    extra = {"guideline": guideline_check(MarkovChain(p, q), res)} if label == "guideline" else {}
                    section.append({"init_label": label, "trajectory": f"{tag}.npz", **extra, **res.as_dict()})
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
                                     linestyle="-" if first else "-.", excess=True)
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

        guide_pt = guideline_point()
        starts = np.array([[small["e"], small["w"], 0.0], [guide_pt["e"], guide_pt["w"], 0.0],
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
        for pq in self._steps(EWA_CHAINS, "ewa: critical sets"):
            crit = critical_sets(ewa, MarkovChain(*pq), box, starts=EWA_STARTS, samples=200)
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
        fig = plt.figure(figsize=(12.4, 6.4), layout="constrained")
        bundle = flows_3d(ewa, MarkovChain(*pq), starts, crit=crits[pq])
        views = [fig.add_subplot(1, 2, i + 1, projection="3d") for i in range(2)]
        for ax, view in zip(views, EWA_VIEWS):
            plots.flow_3d(bundle, ax=ax, view=view, legend=False)
        views[1].set_title("the same, seen along e: the plane e = 0 split by the saddle curve")
        plots.figure_legend(fig, views, ncol=4)
        files.extend(save_figures(fig, out / "flow3d_ewa"))
        plt.close(fig)
        fig, axes = plt.subplots(1, len(EWA_CHAINS), figsize=(10.6, 5.6), layout="constrained")
        for ax, pq in zip(axes, self._steps(EWA_CHAINS, "ewa: basin slices")):
            grid = basin_grid(ewa, MarkovChain(*pq), {"e": box["e"], "w": box["w"]}, 32 if fast else 128,
                              fixed={"a": EWA_SLICE}, crit=crits[pq], cross_check=False)
            plots.basin_map(grid, landscape=basin_landscape(grid), ax=ax, legend=False)
            tag = f"basins_ewa_p{pq[0]:g}_q{pq[1]:g}_a{EWA_SLICE:g}"
            grid.save(out / tag)
            files += [f"{tag}/basins.npz", f"{tag}/basins.json"]
            section["slices"].append({"chain": grid.chain.as_dict(), "a": EWA_SLICE, "dir": tag,
                                      "fractions": grid.fractions(), "counts": grid.counts()})
        plots.figure_legend(fig, axes, ncol=3)
        files.extend(save_figures(fig, out / "basin_slices_ewa"))
        plt.close(fig)
        return {**section, **_invariants_and_context(out, files)}

    def training(self, transformer_runs: dict | None = None) -> dict:
        """SGD on ewb and (with the torch extra) a single-layer transformer from standard and guideline inits.

        ``transformer_runs``: :func:`demo_transformer_runs` when another process computed them (else run here)."""
        import matplotlib.pyplot as plt

        from flowlab.plots import markov as plots
        from flowlab.systems.markov.train import figure4

        exp = figure4(*FIGURE4_CHAIN, seeds=FIGURE4_SEEDS, fast=self.fast, adam=False, quiet=self.quiet,
                      transformer_settings=None if self.fast else DEMO_TRANSFORMER, transformer_runs=transformer_runs)
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


def demo_transformer_runs(fast: bool, bar=None) -> dict | None:
    """The transformer runs of the demo's Figure 4 (JSON-ready, None without torch): what a second process computes."""
    import importlib.util

    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.train import figure4_transformer

    if importlib.util.find_spec("torch") is None:
        return None
    return figure4_transformer(MarkovChain(*FIGURE4_CHAIN), FIGURE4_SEEDS, fast=fast, adam=False,
                               settings=None if fast else DEMO_TRANSFORMER, bar=bar)


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
    lines = ["", "## Critical sets", "",
             "D = f(theta; 1) - f(theta; 0) is the logit gap, D* = log((1 - p)(1 - q)/(pq)) its value at the bigram "
             "model (D* > 0 iff p + q < 1), b*(theta) the optimal bias at theta; the global minima are {D = D*}, the "
             "unigram sets lie in {e = 0}. dim: the dimension of the set; in parentheses: the side of w = -1/sqrt(2) "
             "where the global minima lie.", ""]
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
        "stuck at the unigram model). Top: p = q = 0.1 (p + q < 1); bottom: p = q = 0.9 (p + q > 1). "
        "E = e^2 - w^2 - sign(w) log|w| is undefined on the line w = 0 (thin grey line): that line is invariant, "
        "no flow crosses it, and E tends to +infinity above it and to -infinity below it.",
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
        "Global / non-global / undetermined: fractions of the grid points whose flow reaches the bigram model / "
        "stops at the unigram model / cannot be told apart. Agreement: the fraction of grid points farther than "
        "0.02 (in E) from the separatrix whose flow label equals the exact label from the conserved energy "
        "(MODELS.md section 3); n/a for `ewb`, whose free bias does not conserve E. Seconds: wall time of the grid.",
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
        "P(global): the fraction of the draws (every parameter ~ N(0, sigma^2), for `ewb` the bias too) whose flow "
        "reaches the bigram model; 95% CI: the Wilson interval, widened to cover the undetermined draws. "
        "As MODELS.md says: near the origin the flow reaches the bigram "
        "model when p + q < 1 and gets stuck at the unigram model when p + q > 1.",
        "",
    ]
    return lines


def flows_report(flows: list) -> list[str]:
    lines = [
        "## Gradient flows",
        "",
        f"Initialisations: a small Gaussian draw ((e, w) ~ N(0, {SMALL_SIGMA}^2), seed {SEED}, b = 0 for `ewb`) and "
        "the guideline start, "
        + _guideline_sentence(flows),
        "",
        "Reached: `global` = the bigram model (loss H, the entropy rate), `local` = stuck at the unigram model "
        "(loss h(pi1), the binary entropy of the stationary pi1 = p/(p + q)). E drift: the largest change of the "
        "energy E = e^2 - w^2 - sign(w) log|w| along the flow. Losses in nats.",
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
        *flow_notes(flows),
        "Loss curves (the solver's dense output, sampled): the excess loss L - H over the bigram loss on a log "
        "scale, so that a flow near either level stays visible; a flow stuck at the unigram model stays at "
        "h(pi1) - H (dashed).",
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


def _i_star_text(p: float, q: float) -> str:
    """The basin I* of ew in words, by regime (MODELS.md section 3)."""
    if p + q < 1:
        return "I* = every e != 0 except I_min = {w < -1/sqrt(2), E < E_sep}"
    return "I* = {w < -1/sqrt(2), e != 0} U {-1/sqrt(2) < w < 0, E > E_sep}"


def _guideline_sentence(flows: list) -> str:
    """Where the guideline start comes from and, per chain, whether the basin map of ew guarantees it."""
    from flowlab.systems.markov.defaults import GUIDE_DEFAULTS

    runs = [f for f in flows if f["init_label"] == "guideline" and f["model"] == "ew"]
    if not runs:
        return "(no guideline run)."
    pt = runs[0]["initial"]
    fp, fq = FIGURE4_CHAIN
    per_chain = "; ".join(
        f"p = {f['chain']['p']:g}, q = {f['chain']['q']:g}: E - E_sep = "
        f"{f['guideline']['energy'] - f['guideline']['separatrix']:+.4f}, "
        + ("in I*" if f["guideline"]["in_I_star"] else "in I_min") for f in runs)
    return (
        f"(e, w) = ({pt['e']:g}, {pt['w']:g}) (b = 0 for `ewb`): the point `flowlab guide` picks for p = {fp:g}, "
        f"q = {fq:g} (the same start as Figure 4's guideline runs). `guide` chooses it from the basin map of `ew` at that "
        f"chain (labelled global, at least {GUIDE_DEFAULTS['margin']:g} from every other label) and checks it by the "
        "flow of `ewb` there. "
        "On every chain the basin map of `ew` is exact through the conserved energy E (separatrix level "
        f"E_sep = {runs[0]['guideline']['separatrix']:.6f} = -(1 + log 2)/2): the start is guaranteed to reach the "
        f"global minimum of `ew` where it lies in I* ({per_chain}). With a free bias (`ewb`) E is not conserved and "
        "nothing guarantees the outcome away from the chain `guide` checked: the flow decides."
    )


def flow_notes(flows: list) -> list[str]:
    """Bullets explaining, with the run's numbers, every flow whose outcome a reader would not expect."""
    notes = []
    for f in flows:
        c = f["chain"]
        p, q = c["p"], c["q"]
        where = f"p = {p:g}, q = {q:g}, `{f['model']}` from the {f['init_label']} start"
        expected = ("local" if p + q > 1 else "global") if f["init_label"] == "small Gaussian" else "global"
        if f["reached"] == expected:
            continue
        if f["reached"] == "undetermined":
            notes.append(f"- {where}: undetermined ({f['message']}).")
        elif f["init_label"] == "small Gaussian":
            notes.append(f"- {where}: reached `{f['reached']}`, unlike MODELS.md's rule for a small initialisation "
                         f"(p + q {'>' if p + q > 1 else '<'} 1: `{expected}`): {f['message']}.")
        else:
            notes.append(f"- {where}: reached `{f['reached']}`. " + _guideline_note(f))
    if not notes:
        return []
    return ["Outcomes a reader may not expect:", "", *notes, ""]


def _guideline_note(f: dict) -> str:
    """Why a guideline start did not reach the global minimum, from the energy E of the run."""
    g, c = f["guideline"], f["chain"]
    e0, sep, e1 = g["energy"], g["separatrix"], g["final_energy"]
    side = "above" if e0 > sep else "below"
    if not g["in_I_star"]:
        return (f"The start has E = {e0:.4f}, {side} E_sep = {sep:.4f}, so it lies in I_min of this chain "
                f"({_i_star_text(c['p'], c['q'])}): the flow of `ew` from it ends at the unigram model by the "
                f"conserved energy. The guideline point is chosen for p = {FIGURE4_CHAIN[0]:g}, "
                f"q = {FIGURE4_CHAIN[1]:g}; `flowlab guide --p {c['p']:g} --q {c['q']:g}` gives this chain's own.")
    if f["model"] != "ew":
        end = "undefined" if e1 is None else f"{e1:.4f} ({'above' if e1 > sep else 'below'} E_sep)"
        return (f"The start lies in I* of `ew` (E = {e0:.4f}, {e0 - sep:+.4f} from E_sep = {sep:.4f}), so the profiled "
                f"flow reaches the global minimum; but with a free bias E is not conserved (dE/dt = 2e^2 dL/db, "
                f"drift {f['energy_drift']:.3g}) and at the end E = {end}: the bias's transient carried the flow across "
                "the separatrix. A start close to the separatrix is guaranteed for `ew` only; `flowlab guide` checks "
                "`ewb` at its own chain.")
    return (f"This contradicts the exact label from the conserved energy (E = {e0:.4f}, E_sep = {sep:.4f}: in I*): "
            f"the flow's verdict is wrong or not converged ({f['message']}).")


def attention_report(sec: dict) -> list[str]:
    from flowlab.systems.markov.chain import MarkovChain

    lines = [
        "## The attention scalar: model `ewa` (MODELS.md section 4)",
        "",
        "[Derivation](derivation_ewa.md) (long-context limit m = pi1). Critical sets in 3-D, written at each "
        "chain (exact p, q); dim: the dimension of the set; D* = log((1 - p)(1 - q)/(pq)), the logit gap of the "
        "bigram model (" + ", ".join(f"{pq}: D* = {MarkovChain(*map(float, pq.split(','))).optimal_gap:.6f}"
                                    for pq in sec["critical"]) + "):",
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
    lines += invariants_lines(sec["invariants"])
    ctx = sec["context"]
    theta = ", ".join(f"{v:g}" for v in ctx["theta"].values())
    lines += ["", f"Finite context at ({', '.join(ctx['theta'])}) = ({theta}) (p = {EWA_CHAINS[1][0]:g}, "
              f"q = {EWA_CHAINS[1][1]:g}): exact expected loss over positions "
              f"1..N (dynamic programme) against the long-context limit {ctx['long_context_loss']:.6f}:", "",
              "| N | " + " | ".join(ctx["losses"]) + " |", "|---|" + "---|" * len(ctx["losses"]),
              "| loss | " + " | ".join(f"{v:.6f}" for v in ctx["losses"].values()) + " |", ""]
    return lines


def invariants_lines(invariants: dict) -> list[str]:
    """The conserved quantities of the profiled flows ({model: InvariantSearch.as_dict()}) in words."""
    lines = ["", "Conserved quantities of the profiled flow, derived by SymPy (method of characteristics: I is "
             "conserved when grad I . grad D = 0; [JSON](invariants.json)):", ""]
    for name, inv in invariants.items():
        for i in inv["invariants"]:
            match = f" (the energy `{i['matches']}` of the model)" if i["matches"] else ""
            proof = "proved conserved by SymPy" if i["verified"] else "not proved conserved"
            lines.append(f"- `{name}`: I = `{i['expression']}`{match}, {proof}.")
        where = ("" if inv["region"].startswith("everywhere") else
                 f" Valid where each Max/Min keeps the branch it takes at theta = 0: {inv['region']} "
                 "(pi_1 = p/(p + q)).")
        known = (" ".join(n[0].upper() + n[1:] + "." for n in inv["notes"]) if inv["notes"] else
                 f"{inv['found']} of the {inv['expected']} independent conserved quantities known in closed form.")
        lines.append(f"- `{name}`: {known}{where}")
    return lines


def training_report(sec: dict) -> list[str]:
    s = sec["summary"]
    lines = [
        "## Training: the paper's Figure 4",
        "",
        "SGD from the standard initialisation and from the guideline initialisation, "
        "mean +- std over seeds, with the unigram and bigram losses"
        + ("" if sec["transformer"] else " (the transformer panel needs the `torch` extra: "
           "`pip install \".[torch]\"`)") + ". [JSON](training.json)",
        "",
        _training_inits(s),
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
              "its initial weights projected on (e, w, a, b)); reached: `global` or `local` when the final loss is "
              "within 0.1 of the gap h(pi1) - H of H or of h(pi1) (for the transformer with 3 standard errors of the "
              "held-out loss), else `undetermined`. Losses in nats.", "", *_validation_note(s),
              "| model | init | final loss (mean +- std) | per seed | predicted / reached, per seed |",
              "|---|---|---|---|---|", *rows, "",
              "Only SGD is run here, as in the paper: the flow analysis predicts gradient descent, not an adaptive "
              "optimiser such as Adam (try `flowlab train --model transformer --optimizer adam --lr 0.001`).", ""]
    return lines


def _validation_note(s: dict) -> list[str]:
    """The transformer's sample sizes in words: the validation curve of panel (b) and the held-out verdict."""
    runs = (s.get("transformer") or {}).get("standard")
    if not runs:
        return []
    t = runs["settings"]
    return [f"Transformer: {t['steps']} SGD steps of {t['batch']} fresh sequences (N = {t['seq_len']}); the curve of "
            f"panel (b) is the loss on one fixed validation sample of {t['val_sequences']} sequences every "
            f"{t['log_every']} steps (standard error <= {SEQUENCE_LOSS_STD / t['val_sequences'] ** 0.5:.4f} nats: the "
            f"loss of one sequence has std <= {SEQUENCE_LOSS_STD} nats at both levels for this chain and N = 32; the gap "
            f"h(pi1) - H is {s['levels']['unigram'] - s['optimal_loss']:.4f}); the final loss and the verdict use "
            f"{t['eval_sequences']} fresh held-out sequences.", ""]


def _training_inits(s: dict) -> str:
    """The two initialisations of Figure 4 in words, with the guideline start of the runs."""
    from flowlab.systems.markov.defaults import STANDARD_STD
    from flowlab.systems.markov.sgd import STANDARD_SIGMA

    starts = (s.get("canonical") or {}).get("guideline", {}).get("initial") or [None]
    pt = starts[0]
    where = "" if pt is None else f" (e, w, b) = ({pt['e']:g}, {pt['w']:g}, {pt['b']:g})"
    return (f"Standard: e, w ~ N(0, {STANDARD_SIGMA:g}^2), b = 0 for `ewb`; every weight ~ N(0, {STANDARD_STD:g}^2) "
            f"for the transformer. Guideline: the point `flowlab guide` picks for this chain,{where}, the same start "
            "as the guideline flows above; the transformer starts from the rank-one weights of that point plus "
            f"N(0, {STANDARD_STD:g}^2) noise.")
