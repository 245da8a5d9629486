"""``flowlab demo``: the main job on its built-in default, the paper's setting end to end.

Writes to a folder: the derivations of ``ew`` and ``ewb`` (Markdown, LaTeX, and PDF when
``pdflatex`` is installed), gradient flows on the paper's chains from a small Gaussian
initialisation and from the guideline point of ``flowlab guide``, their trajectories (NPZ), a loss-curve
figure (PNG, PDF), the classified critical sets (the table over p + q and the sets at
p = 0.5, q = 0.8, JSON and LaTeX), ``summary.json`` and ``report.md`` that shows it all.

This module orchestrates: the sections of the Markov system live in :mod:`flowlab.report.markov`,
those of the co-occurrence and next-token-order systems in :mod:`flowlab.report.cooccurrence` and
:mod:`flowlab.report.ntp_order`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from flowlab.engine.defaults import available_cpus
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


def run_demo(out="flowlab-demo", *, quiet: bool = False, fast: bool = False, parallel: bool | None = None) -> dict:
    """Run the demo and return its summary (also written to ``out/summary.json``).

    ``fast`` uses coarse grids and few samples (for the tests); the analysis is the same.
    ``parallel``: run the transformer runs of Figure 4 in a second process beside the other sections;
    ``None`` (default) does so when this process may use two CPUs or more, busy or not: the two processes are
    single-threaded and independent (nothing waits on a descheduled thread), so beside a process that keeps one
    of two cores busy they share the CPUs with it and finish sooner (measured with benchmarks/demo.py: 117 s
    against 143 s in one process).
    The results are the same either way (seeded runs, one thread each).
    The folder is one unit: built under a hidden temporary sibling (``.NAME.partial-*``) and
    renamed to ``out`` at the end; an interrupted run removes it and leaves ``out`` as it was.
    ``out`` must be new, empty or an earlier demo folder (which is replaced); this is checked
    before any work.
    """
    from flowlab.engine.io import atomic_folder

    with atomic_folder(out, "demo folder", _earlier_demo) as tmp:
        summary = _run_demo(tmp, quiet=quiet, fast=fast, parallel=parallel)
    if not quiet:
        print(f"flowlab demo: wrote {len(summary['files'])} files to {out} "
              f"in {summary['seconds']:.1f} s; open {Path(out) / 'report.md'}", file=sys.stderr)
    return summary


def _listed(section: dict, files: list) -> dict:
    """``section`` after adding the files it lists to ``files``."""
    files.extend(section["files"])
    return section


def _earlier_demo(folder: Path) -> bool:
    """True when ``folder`` holds only what an earlier demo listed in its summary.json (it may be replaced)."""
    import json

    try:
        listed = json.loads((folder / "summary.json").read_text())["files"]
        tops = {str(name).split("/")[0] for name in listed}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return all(entry.name in tops for entry in folder.iterdir())


def _run_demo(out: Path, *, quiet: bool, fast: bool, parallel: bool | None = None) -> dict:
    """The demo's work, written into the folder ``out`` (which exists): the sections of the Markov system
    (:class:`flowlab.report.markov.MarkovSections`), then those of the co-occurrence and next-token-order systems."""
    import matplotlib

    matplotlib.use("Agg")

    from flowlab.report import cooccurrence as cooccurrence_report
    from flowlab.report import ntp_order as ntp_order_report
    from flowlab.report import sweep as sweep_report
    from flowlab.report.markov import MarkovSections

    start = time.perf_counter()
    files: list[str] = []
    summary: dict = {"derivations": {}, "critical": {}, "basins": [], "gaussian": [], "flows": [], "fast": fast}
    markov = MarkovSections(out, files, fast=fast, quiet=quiet)
    if parallel is None:
        parallel = available_cpus() >= 2
    background = _Background(out, fast) if parallel else None

    def other_system(key, report):
        """The section of another system (from the second process when there is one): it lists its own files."""
        def run():
            return _listed(report.section(out, fast=fast, quiet=quiet) if background is None
                           else background.result(quiet)[key], files)
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
        "sweep": ("sweep", lambda: _listed(sweep_report.section(out, fast=fast, quiet=quiet), files)),
        "training (figure 4)": ("training", lambda: markov.training(
            None if background is None else background.result(quiet)["transformer"])),
        "co-occurrence": ("cooccurrence", other_system("cooccurrence", cooccurrence_report)),  # MODELS.md section 6
        "ntp_order": ("ntp_order", other_system("ntp_order", ntp_order_report)),  # MODELS.md section 7
    }
    bar = _progress(list(phases), quiet, "demo")
    phase_times: dict = {}
    try:
        for name in _timed(bar, phase_times):
            key, section = phases[name]
            result = section()
            if key is not None:
                summary[key] = result
    finally:
        bar.close()
        if background is not None:
            background.stop()
    if background is not None:  # concurrent with the phases above (not part of their sum)
        phase_times["second process (transformer runs, other systems)"] = background.seconds
    summary["seconds_by_phase"] = phase_times

    summary["seconds"] = time.perf_counter() - start
    summary["status"] = "completed"
    summary["message"] = "every section ran; report.md describes the results"
    summary["files"] = sorted(files + ["summary.json", "report.md"])
    atomic_write_text(out / "summary.json", to_json(summary))
    atomic_write_text(out / "report.md", _report(summary))
    return summary


class _Background:
    """The sections that need nothing from the others in a second Python process: the transformer runs of Figure 4
    (:func:`flowlab.report.markov.demo_transformer_runs`) and the co-occurrence and next-token-order sections (which
    write their files into the demo folder ``out``). It reports progress as JSON lines on its stdout and writes its
    JSON result to a temporary file (no pickling); :meth:`result` waits for it (mirroring its progress bars) and
    returns {"transformer", "cooccurrence", "ntp_order"}."""

    def __init__(self, out: Path, fast: bool):
        import subprocess
        import tempfile

        fd, self.path = tempfile.mkstemp(prefix="flowlab-demo-", suffix=".json")
        os.close(fd)
        self.errors = tempfile.TemporaryFile()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MPLBACKEND": "Agg"}
        self.t0, self.seconds, self.done = time.perf_counter(), None, None
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from flowlab.report.demo import _child; _child()", self.path, str(int(fast)),
             str(out)], stdout=subprocess.PIPE, stderr=self.errors, text=True, env=env)

    def result(self, quiet: bool) -> dict:
        if self.done is None:
            self.done = self._wait(quiet)
        return self.done

    def _wait(self, quiet: bool) -> dict:
        from tqdm.auto import tqdm

        bars: dict = {}
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "bar" in msg:
                bars[msg["bar"]] = tqdm(total=msg["total"], desc=msg["bar"], disable=quiet, file=sys.stderr,
                                        leave=False)
            elif "update" in msg:
                bars[msg["desc"]].update(msg["update"])
            else:
                bars.pop(msg["close"]).close()
        if self.proc.wait() != 0:
            self.errors.seek(0)
            tail = self.errors.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"the transformer runs failed in the second process:\n{tail}")
        self.seconds = time.perf_counter() - self.t0
        return json.loads(Path(self.path).read_text())

    def stop(self) -> None:
        """End the process if it still runs (an interrupted demo) and remove its files."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.errors.close()
        Path(self.path).unlink(missing_ok=True)


class _LineBar:
    """A progress bar that prints JSON lines on stdout (the second process's bars, mirrored by :class:`_Background`)."""

    def __init__(self, desc: str, total: int):
        self.desc = desc
        print(json.dumps({"bar": desc, "total": total}), flush=True)

    def update(self, n: int) -> None:
        print(json.dumps({"desc": self.desc, "update": n}), flush=True)

    def close(self) -> None:
        print(json.dumps({"close": self.desc}), flush=True)


def _child() -> None:
    """Entry of the second process: ``python -c ... RESULT_PATH FAST OUT`` (see :class:`_Background`)."""
    from flowlab.report import cooccurrence as cooccurrence_report
    from flowlab.report import ntp_order as ntp_order_report
    from flowlab.report.markov import demo_transformer_runs

    path, fast, out = Path(sys.argv[1]), sys.argv[2] == "1", Path(sys.argv[3])
    result = {"transformer": demo_transformer_runs(fast, bar=_LineBar)}
    for key, report in (("cooccurrence", cooccurrence_report), ("ntp_order", ntp_order_report)):
        bar = _LineBar(key, 1)
        result[key] = report.section(out, fast=fast, quiet=True)
        bar.update(1)
        bar.close()
    atomic_write_text(path, to_json(result))


def _report(summary: dict) -> str:
    from flowlab.report import cooccurrence as cooccurrence_report
    from flowlab.report import markov
    from flowlab.report import ntp_order as ntp_order_report
    from flowlab.report import sweep as sweep_report

    lines = [
        "# flowlab demo report",
        "",
        "The paper's setting (Makkuva et al., NeurIPS 2024): binary Markov chains with switching probabilities "
        "p = P(0 -> 1) and q = P(1 -> 0), and the canonical single-layer model with embedding scale e, FFN weight w "
        "and bias b: model `ew` (logit gap D = e^2 (1 + 2w|w|), bias profiled: b at its optimum for each (e, w)), "
        "`ewb` (bias free) and `ewa` (with an attention scalar a). Losses in nats (cross-entropy per token); "
        "H is the entropy rate (the bigram model, the global minimum) and h(pi1) the unigram loss."
        + (" **Fast mode**: coarse grids and few samples." if summary.get("fast") else ""),
        "",
        *markov.report_lines(summary),
        *sweep_report.report_lines(summary["sweep"]),
        *cooccurrence_report.report_lines(summary["cooccurrence"]),
        *ntp_order_report.report_lines(summary["ntp_order"]),
        "",
        f"Wall time: {summary['seconds']:.1f} s.",
        "",
    ]
    return "\n".join(lines)
