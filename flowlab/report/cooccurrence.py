"""The ``cooccurrence`` section of ``flowlab demo`` and its report (MODELS.md §6).

:func:`section` runs the exact Gram flow and the reduced phase model on one setting, evaluates the
claims on both, runs the T₁-vs-m scaling, and writes the figures (PNG + PDF), the trajectories
(NPZ), the claims (JSON) and the reduced derivation (Markdown) into ``out`` with file names starting
``cooccurrence_``; :func:`report_lines` turns the returned summary into Markdown.
"""

from __future__ import annotations

import time
from pathlib import Path

#: The demo's settings. Full mode: the paper's sizes (Appendix A) for 300 units of flow time
#: (= 30 000 epochs × lr 0.01); fast mode: a 24-word vocabulary (the Gram state has 4d² entries).
PAPER_SETTING = {"n": 60, "L": 5, "d": 64, "m": 128, "m1": 256, "t_max": 300.0, "points": 300}
FAST_SETTING = {**PAPER_SETTING, "d": 24, "points": 200}
SCALING = {"ms": (64, 256, 1024, 4096), "n": 60, "L": 5, "d": 24, "m1": 256}
PREFIX = "cooccurrence_"


def write_run(out: Path, traj, result, *, stem: str = "", figures: bool = True) -> list[str]:
    """``stem``claims.json, the (subsampled) trajectory as NPZ and (``figures``) Figure 1 and the
    balancing figure (PNG, PDF); returns the written paths."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from flowlab.engine.io import atomic_write_bytes, atomic_write_text, save_figures, to_json
    from flowlab.plots import cooccurrence as plots
    from flowlab.systems.cooccurrence.claims import subsample

    out = Path(out)
    files = [str(atomic_write_text(out / f"{stem}claims.json", to_json(result.as_dict())))]
    small = subsample(traj, keep=(result.T1,))
    buf = io.BytesIO()
    np.savez(buf, **small.columns())
    files.append(str(atomic_write_bytes(out / f"{stem}trajectory.npz", buf.getvalue())))
    for name, draw in (("figure1", plots.figure1), ("balancing", plots.balancing)) if figures else ():
        fig = np.atleast_1d(draw(small, T1=result.T1))[0].figure
        files += [str(path) for path in save_figures(fig, out / f"{stem}{name}")]
        plt.close(fig)
    return files


def write_scaling_figure(out: Path, payload: dict, stem: str = "scaling") -> list[str]:
    """The T₁-vs-m figure (PNG, PDF) of a scaling result's ``as_dict()``."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlab.engine.io import save_figures
    from flowlab.plots import cooccurrence as plots

    found = [(m, t) for m, t in zip(payload["m"], payload["T1"]) if t is not None and t > 0]
    b = payload.get("intercept")
    ax = plots.scaling([m for m, _ in found], [t for _, t in found], exponent=payload.get("alpha"),
                       prefactor=None if b is None else math.exp(b))
    files = [str(path) for path in save_figures(ax.figure, Path(out) / stem)]
    plt.close(ax.figure)
    return files


def section(out: Path, *, fast: bool, quiet: bool) -> dict:
    """Run the section (see the module docstring); returns a JSON-ready summary."""
    from flowlab.engine.io import atomic_write_text, to_json
    from flowlab.systems.cooccurrence.claims import evaluate_claims, run_engine
    from flowlab.systems.cooccurrence.experiments import scaling
    from flowlab.systems.cooccurrence.reduced import to_markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    setting = dict(FAST_SETTING if fast else PAPER_SETTING)
    summary: dict = {"settings": setting, "runs": {}, "files": []}
    summary["files"].append(str(atomic_write_text(out / f"{PREFIX}reduced_derivation.md", to_markdown())))
    for engine in ("gram", "reduced"):
        if not quiet:
            print(f"cooccurrence: {engine} run", flush=True)
        traj = run_engine(engine, seed=0, quiet=True, **setting)
        result = evaluate_claims(traj)
        summary["files"] += write_run(out, traj, result, stem=f"{PREFIX}{engine}_", figures=engine == "gram")
        summary["runs"][engine] = result.as_dict()
    sizes = {k: v for k, v in SCALING.items() if k != "ms"}
    payload = scaling(SCALING["ms"], seed=0, quiet=True, **sizes).as_dict()
    atomic_write_text(out / f"{PREFIX}scaling.json", to_json(payload))
    summary["files"] += [str(out / f"{PREFIX}scaling.json")]
    summary["files"] += write_scaling_figure(out, payload, stem=f"{PREFIX}scaling")
    summary["scaling"] = payload
    statuses = {**{e: r["status"] for e, r in summary["runs"].items()}, "scaling": payload["status"]}
    summary["status"] = "ok" if set(statuses.values()) == {"ok"} else "incomplete"
    summary["message"] = "; ".join(f"{k}: {v}" for k, v in statuses.items())
    summary["seconds"] = round(time.perf_counter() - start, 2)
    summary["files"] = [Path(f).name for f in summary["files"]]
    atomic_write_text(out / f"{PREFIX}summary.json", to_json(summary))
    return summary


def _mark(value) -> str:
    return {True: "yes", False: "**no**", None: "undecided"}[value]


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def report_lines(summary: dict) -> list[str]:
    """Markdown: the setting, the claims table (Gram flow and reduced model), the figures."""
    s, runs = summary["settings"], summary["runs"]
    gram, red = runs["gram"], runs["reduced"]
    sc = summary["scaling"]
    lines = [
        "## Word co-occurrence: Yang et al. (NeurIPS 2024), MODELS.md section 6",
        "",
        f"A one-layer transformer (Eq. 1) trained to detect the co-occurrence of two words; n = {s['n']}, "
        f"L = {s['L']}, d = {s['d']}, m = {s['m']}, m1 = {s['m1']}, flow time {s['t_max']:g} (= the paper's "
        "30 000 epochs at lr 0.01). Engines: the exact Gram flow (all four matrices trained, initial Grams "
        "drawn from their Wishart laws, sigma0 = 1/sqrt(L m), sigma1 = 1/sqrt(m1)) and the reduced phase model "
        f"(13 scalars, attention frozen, random words dropped; its ODE is derived by SymPy: "
        f"[`{PREFIX}reduced_derivation.md`]({PREFIX}reduced_derivation.md)). T1 = first time every sample is "
        f"classified correctly: Gram flow {_fmt(gram['T1'])}, reduced {_fmt(red['T1'])}; final loss "
        f"{_fmt(gram['final_loss'])} and {_fmt(red['final_loss'])}.",
        "",
        "| claim | Gram flow | reduced model | statement |",
        "|---|---|---|---|",
    ]
    reduced_by_id = {c["id"]: c["holds"] for c in red["claims"]}
    lines += [f"| `{c['id']}` | {_mark(c['holds'])} | {_mark(reduced_by_id.get(c['id']))} | "
              f"{c['statement'].replace('|', chr(92) + '|')} |" for c in gram["claims"]]
    lines += [
        "",
        "'undecided': the run cannot decide (the reduced model freezes attention). Thresholds and the "
        f"measured numbers: [`{PREFIX}gram_claims.json`]({PREFIX}gram_claims.json), "
        f"[`{PREFIX}reduced_claims.json`]({PREFIX}reduced_claims.json).",
        "",
        f"![Figure 1, Gram flow]({PREFIX}gram_figure1.png)",
        "",
        f"![Balancing ratio, Gram flow]({PREFIX}gram_balancing.png)",
        "",
        f"T1 against the width m (Gram flow, m1 = {sc['settings']['m1']}, d = {sc['settings']['d']}): fitted "
        f"exponent alpha = {_fmt(sc['alpha'])} (R^2 {_fmt(sc['r2'])}); the paper: T1 = O~(1/m), alpha = -1 up to "
        "logarithms.",
        "",
        f"![T1 against m]({PREFIX}scaling.png)",
        "",
    ]
    return lines
