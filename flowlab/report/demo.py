"""``flowlab demo``: the main job on its built-in default, the paper's setting end to end.

Writes to a folder: the derivations of ``ew`` and ``ewb`` (Markdown, LaTeX, and PDF when
``pdflatex`` is installed), gradient flows on the paper's chains from a small Gaussian
initialisation and from the guideline region, their trajectories (NPZ), a loss-curve
figure (PNG, PDF), the classified critical sets (the table over p + q and the sets at
p = 0.5, q = 0.8, JSON and LaTeX), ``summary.json`` and ``report.md`` that shows it all.

This module orchestrates: the sections of the Markov system live in :mod:`flowlab.report.markov`,
those of the co-occurrence and next-token-order systems in :mod:`flowlab.report.cooccurrence` and
:mod:`flowlab.report.ntp_order`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from flowlab.engine.io import atomic_write_text, to_json


def _progress(items, quiet, desc):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=quiet, file=sys.stderr)


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
    from flowlab.engine.io import atomic_folder

    with atomic_folder(out, "demo folder", _earlier_demo) as tmp:
        summary = _run_demo(tmp, quiet=quiet, fast=fast)
    if not quiet:
        print(f"flowlab demo: wrote {len(summary['files'])} files to {out} "
              f"in {summary['seconds']:.1f} s; open {Path(out) / 'report.md'}", file=sys.stderr)
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
    """The demo's work, written into the folder ``out`` (which exists): the sections of the Markov system
    (:class:`flowlab.report.markov.MarkovSections`), then those of the co-occurrence and next-token-order systems."""
    import matplotlib

    matplotlib.use("Agg")

    from flowlab.report import cooccurrence as cooccurrence_report
    from flowlab.report import ntp_order as ntp_order_report
    from flowlab.report.markov import MarkovSections

    start = time.perf_counter()
    files: list[str] = []
    summary: dict = {"derivations": {}, "critical": {}, "basins": [], "gaussian": [], "flows": [], "fast": fast}
    markov = MarkovSections(out, files, fast=fast)

    def other_system(report):
        """The section of another system: it lists its own files."""
        def run():
            section = report.section(out, fast=fast, quiet=True)
            files.extend(section["files"])
            return section
        return run

    # phase (as the progress bar and seconds_by_phase name it) -> (key in the summary or None, section)
    phases = {
        "derivations": ("derivations", markov.derivations),
        "critical sets": ("critical", markov.critical),
        "figure 1": (None, markov.figure1),
        "basins": ("basins", markov.basins),
        "gaussian": ("gaussian", markov.gaussian),
        "flows": ("flows", markov.flows),
        "figures": (None, markov.figures),
        "attention (ewa)": ("ewa", markov.attention),
        "training (figure 4)": ("training", markov.training),
        "co-occurrence": ("cooccurrence", other_system(cooccurrence_report)),  # MODELS.md section 6
        "ntp_order": ("ntp_order", other_system(ntp_order_report)),  # MODELS.md section 7
    }
    bar = _progress(list(phases), quiet, "demo")
    phase_times: dict = {}
    for name in _timed(bar, phase_times):
        key, section = phases[name]
        result = section()
        if key is not None:
            summary[key] = result
    bar.close()
    summary["seconds_by_phase"] = phase_times

    summary["seconds"] = time.perf_counter() - start
    summary["status"] = "completed"
    summary["message"] = "every section ran; report.md describes the results"
    summary["files"] = sorted(files + ["summary.json", "report.md"])
    atomic_write_text(out / "summary.json", to_json(summary))
    atomic_write_text(out / "report.md", _report(summary))
    return summary


def _report(summary: dict) -> str:
    from flowlab.report import cooccurrence as cooccurrence_report
    from flowlab.report import markov
    from flowlab.report import ntp_order as ntp_order_report

    lines = [
        "# flowlab demo report",
        "",
        "The paper's setting (Makkuva et al., NeurIPS 2024): model `ew` (bias profiled) and `ewb` "
        "(bias free) on binary Markov chains. Losses in nats."
        + (" **Fast mode**: coarse grids and few samples." if summary.get("fast") else ""),
        "",
        *markov.report_lines(summary),
        *cooccurrence_report.report_lines(summary["cooccurrence"]),
        *ntp_order_report.report_lines(summary["ntp_order"]),
        "",
        f"Wall time: {summary['seconds']:.1f} s.",
        "",
    ]
    return "\n".join(lines)
