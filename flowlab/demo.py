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
    import io

    names = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=200)
        atomic_write_bytes(base.with_suffix("." + ext), buf.getvalue())
        names.append(base.with_suffix("." + ext).name)
    return names


def run_demo(out="flowlab-demo", *, quiet: bool = False) -> dict:
    """Run the demo and return its summary (also written to ``out/summary.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .derivation import derive
    from .flow import gradient_flow
    from .latex import to_latex, to_markdown
    from .markov import MarkovChain
    from .models import get_model
    from .plots import loss_curve

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    summary: dict = {"derivations": {}, "flows": []}

    for name in _progress(("ew", "ewb"), quiet, "derivations"):
        d = derive(get_model(name))
        atomic_write_text(out / f"derivation_{name}.md", to_markdown(d))
        tex = to_latex(d)
        atomic_write_text(out / f"derivation_{name}.tex", tex)
        files += [f"derivation_{name}.md", f"derivation_{name}.tex"]
        if compile_pdf(tex, out / f"derivation_{name}.pdf"):
            files.append(f"derivation_{name}.pdf")
        summary["derivations"][name] = {i.name: i.verified for i in d.identities}

    from .critical import critical_sets, regions_table, result_latex, table_latex

    summary["critical"] = {}
    for name in _progress(("ew", "ewb"), quiet, "critical sets"):
        table = regions_table(get_model(name))
        atomic_write_text(out / f"critical_regions_{name}.json", to_json(table))
        atomic_write_text(out / f"critical_regions_{name}.tex", table_latex(table))
        crit = critical_sets(get_model(name), MarkovChain(*FIGURE4_CHAIN))
        tag = f"critical_{name}_p{FIGURE4_CHAIN[0]:g}_q{FIGURE4_CHAIN[1]:g}"
        atomic_write_text(out / f"{tag}.json", to_json(crit.as_dict()))
        atomic_write_text(out / f"{tag}.tex", result_latex(crit))
        files += [f"critical_regions_{name}.json", f"critical_regions_{name}.tex", f"{tag}.json", f"{tag}.tex"]
        summary["critical"][name] = {"table": table, "at": crit.as_dict(), "file": f"{tag}.json"}

    rng = np.random.default_rng(SEED)
    small = {"e": float(rng.normal(0, SMALL_SIGMA)), "w": float(rng.normal(0, SMALL_SIGMA))}
    runs = [
        (p, q, model, label, init)
        for p, q in CHAINS
        for model in ("ew", "ewb")
        for label, init in (("small Gaussian", small), ("guideline", GUIDELINE))
    ]
    results = []
    for p, q, name, label, init in _progress(runs, quiet, "flows"):
        model = get_model(name)
        theta0 = [init.get(k, 0.0) for k in model.params]
        res = gradient_flow(model, MarkovChain(p, q), theta0)
        tag = f"flow_{name}_p{p:g}_q{q:g}_{label.split()[0].lower()}"
        write_table(out / f"{tag}.npz", res.columns())
        files.append(f"{tag}.npz")
        entry = {"init_label": label, "trajectory": f"{tag}.npz", **res.as_dict()}
        summary["flows"].append(entry)
        results.append((p, q, name, label, res))

    fig, axes = plt.subplots(1, len(CHAINS), figsize=(13, 3.8), layout="constrained", sharey=False)
    for ax, (p, q) in zip(axes, CHAINS):
        first = True
        for rp, rq, name, label, res in results:
            if (rp, rq) == (p, q) and name == "ew":
                loss_curve(res, ax, label=f"{label}: {res.reached}", references=first,
                           linestyle="-" if first else "-.")
                first = False
        ax.set_title(rf"model ew, $p={p:g}$, $q={q:g}$ ($p+q {'<' if p + q < 1 else '>'} 1$)")
    files += _save_figure(fig, out / "loss_curves")
    plt.close(fig)

    summary["wall_time_s"] = time.perf_counter() - start
    summary["files"] = sorted(files + ["summary.json", "report.md"])
    atomic_write_text(out / "summary.json", to_json(summary))
    atomic_write_text(out / "report.md", _report(summary))
    if not quiet:
        print(f"flowlab demo: wrote {len(summary['files'])} files to {out} "
              f"in {summary['wall_time_s']:.1f} s; open {out / 'report.md'}", file=sys.stderr)
    return summary


def _report(summary: dict) -> str:
    lines = [
        "# flowlab demo report",
        "",
        "The paper's setting (Makkuva et al., NeurIPS 2024): model `ew` (bias profiled) and `ewb` "
        "(bias free) on binary Markov chains. Losses in nats.",
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
        f"Wall time: {summary['wall_time_s']:.1f} s.",
        "",
    ]
    return "\n".join(lines)
