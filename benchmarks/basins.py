"""Basin benchmark: the batch engine against a per-point solve_ivp (LSODA) loop, same process.

    python benchmarks/basins.py [--grid 256 512] [--p 0.5 --q 0.8] [--subsample 200] [--engine-grid 512]
                                [--repeats 2] [--baseline 2a8dcfe]

``engine`` (issue 16): points per second of the labelling of one ``--engine-grid`` grid, interleaved and
best of ``--repeats``: on one process, on two (``workers=2``: this process and a helper from a fork server,
the pool's start-up counted in every run; ``first_run_seconds`` includes starting the fork server), and by
flowlab as it was at the ``--baseline`` revision (issue 16's "today": one process, run in a subprocess
from ``git archive``, timing only its labelling); their ratios, whether the labels are identical, and the
load average before and after (wall-time ratios mean little on a machine that is not idle).
Per run, ``wall_over_labels`` is the wall time of ``basin_grid`` over its labelling phase.

Prints one JSON object with, per grid size: points per second of the batch engine (labelling
phase), the same for a loop of ``solve_ivp(method="LSODA")`` over a random subsample of the grid
with the same decision rules (terminal events), their ratio, the agreement of the two on the
subsample, and the agreement of the batch labels with the analytic ``ew`` basins of MODELS.md
section 3 (implemented here from the formulas, not by flowlab) away from the separatrix.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

from flowlab import MarkovChain, NumericModel, get_model
from flowlab.engine.basins import flow_labels, grid_axes, grid_points
from flowlab.engine.defaults import available_cpus
from flowlab.systems.markov.basins import FlowSettings, basin_grid
from flowlab.systems.markov.system import MarkovSystem

ROOT = Path(__file__).resolve().parents[1]
LOAD_BEFORE = os.getloadavg()
SADDLE_W = -1 / math.sqrt(2)
SEPARATRIX = -(1 + math.log(2)) / 2


def analytic(p, q, e, w):
    energy = e * e - w * w - np.sign(w) * np.log(np.abs(w))
    if p + q < 1:
        stuck = (w < SADDLE_W) & (energy < SEPARATRIX)
    else:
        stuck = (w > 0) | ((w > SADDLE_W) & (w < 0) & (energy < SEPARATRIX))
    far = (e != 0) & (w != 0) & (np.abs(energy - SEPARATRIX) > 0.02)
    return np.where(stuck, 0, 1), far


def lsoda_labels(nm, points, level, s: FlowSettings):
    """The same decisions as the batch engine, one solve_ivp call per point."""
    comp, p, q = nm.compiled, nm.chain.p, nm.chain.q

    def rhs(_t, y):
        return -np.array(comp.gradient(*y, p, q), dtype=float)

    def ev_global(_t, y):
        return float(comp.loss(*y, p, q)[0]) - (level - s.loss_margin)

    def ev_converged(_t, y):
        return float(np.linalg.norm(rhs(_t, y))) - s.grad_tol

    ev_global.terminal = ev_converged.terminal = True
    labels = np.full(len(points), -1)
    for i, y0 in enumerate(points):
        sol = solve_ivp(rhs, (0, s.t_max), y0, method="LSODA", rtol=s.rtol, atol=s.atol,
                        events=[ev_global, ev_converged])
        y = sol.y[:, -1]
        if sol.t_events[0].size or float(comp.loss(*y, p, q)[0]) < level - s.loss_margin:
            labels[i] = 1  # the loss crossed below the non-global level (or started there)
        elif sol.status == 1:
            lam = np.linalg.eigvalsh(nm.hessian(y))
            if lam.min() >= -s.hess_tol and lam.max() >= s.curvature_min:
                labels[i] = 0
    return labels


#: Labels the benchmark grid with flowlab as it was at a git revision (run with that tree first on sys.path).
BASELINE_SCRIPT = """
import json, math, sys, time
import numpy as np
from flowlab import MarkovChain, get_model
from flowlab.engine.basins import FlowSettings, flow_labels, grid_axes, grid_points
from flowlab.systems.markov.system import MarkovSystem
p, q, n, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
system = MarkovSystem(get_model("ew"), MarkovChain(p, q))
ref = system.reference()
pts = grid_points(grid_axes(system.params, {k: (-3.0, 3.0) for k in system.params}, n))
flow_labels(system, pts[:2048], ref, FlowSettings())  # warm-up
t = time.perf_counter()
labels, _ = flow_labels(system, pts, ref, FlowSettings())
seconds = time.perf_counter() - t
np.save(out, labels)
print(json.dumps({"seconds": seconds}))
"""


def baseline_run(rev: str, p: float, q: float, n: int) -> tuple[float, np.ndarray]:
    """(labelling seconds, labels) of flowlab at git revision ``rev`` (``git archive`` into a temporary folder,
    run in a subprocess with that tree first on the path: the package cannot be imported twice in one
    process), one process, the same grid and settings."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = subprocess.run(["git", "archive", rev, "flowlab"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=tree, check=True)
        out = Path(tmp) / "labels.npy"
        env = {**os.environ, "PYTHONPATH": tmp, "FLOWLAB_NO_CACHE": "1"}
        res = subprocess.run([sys.executable, "-c", BASELINE_SCRIPT, str(p), str(q), str(n), str(out)], cwd=tmp,
                             env=env, check=True, capture_output=True, text=True)
        return json.loads(res.stdout.strip().splitlines()[-1])["seconds"], np.load(out, allow_pickle=False)


def engine_rates(model, chain, n: int, repeats: int, baseline: str | None) -> dict:
    """Labelling points/s on one process and on two (a pool started per call: its start-up is counted), and of
    flowlab at the ``baseline`` revision, interleaved, best of ``repeats``; their ratios; labels identical."""
    system = MarkovSystem(model, chain)
    ref = system.reference()
    pts = grid_points(grid_axes(model.params, {k: (-3.0, 3.0) for k in model.params}, n))
    paths = {"one_process": 1, "two_processes": 2}
    best, labels, first = dict.fromkeys([*paths, *(["baseline"] if baseline else [])], math.inf), {}, {}
    for _ in range(repeats):
        if baseline:
            seconds, labels["baseline"] = baseline_run(baseline, chain.p, chain.q, n)
            best["baseline"] = min(best["baseline"], seconds)
        for name, workers in paths.items():
            t = time.perf_counter()
            labels[name], stats = flow_labels(system, pts, ref, FlowSettings(workers=workers))
            seconds = time.perf_counter() - t
            assert stats["workers"] == workers
            first.setdefault(name, seconds)
            best[name] = min(best[name], seconds)
    rate = {k: len(pts) / v for k, v in best.items()}
    out = {
        "grid": f"{n}x{n}", "points": len(pts), "repeats": repeats, "points_per_s": rate,
        "first_run_seconds": first, "ratio_2_vs_1_process": rate["two_processes"] / rate["one_process"],
        "labels_identical": all(np.array_equal(labels["one_process"], v) for v in labels.values()),
        "loadavg_before": list(LOAD_BEFORE), "loadavg_after": list(os.getloadavg()), "cpus": available_cpus(),
    }
    if baseline:
        out.update({"baseline": baseline,
                    "ratio_1_process_vs_baseline": rate["one_process"] / rate["baseline"],
                    "ratio_2_processes_vs_baseline": rate["two_processes"] / rate["baseline"]})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--q", type=float, default=0.8)
    parser.add_argument("--subsample", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine-grid", type=int, default=512, help="grid of the engine comparison (0: skip)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", default="2a8dcfe", help="git revision of 'today' (issue 16); '' to skip")
    args = parser.parse_args(argv)
    model, chain = get_model("ew"), MarkovChain(args.p, args.q)
    settings = FlowSettings()
    nm = NumericModel(model, chain)
    out = {"model": "ew", "p": args.p, "q": args.q, "settings": settings.__dict__, "runs": []}
    basin_grid(model, chain, grid=16)  # warm-up: compile, import
    if args.engine_grid:
        out["engine"] = engine_rates(model, chain, args.engine_grid, args.repeats, args.baseline or None)
    for n in args.grid:
        g = basin_grid(model, chain, grid=n, cross_check=False)
        E, W = np.meshgrid(g.axes["e"], g.axes["w"], indexing="ij")
        ref, far = analytic(args.p, args.q, E, W)
        batch_rate = g.label.size / g.seconds_by_phase["labels"]
        pts = np.stack([E.ravel(), W.ravel()], axis=1)
        idx = np.random.default_rng(args.seed).choice(len(pts), args.subsample, replace=False)
        t = time.perf_counter()
        loop = lsoda_labels(nm, pts[idx], g.reference.nonglobal_level, settings)
        loop_rate = args.subsample / (time.perf_counter() - t)
        out["runs"].append({
            "grid": f"{n}x{n}",
            "points": int(g.label.size),
            "batch_label_s": g.seconds_by_phase["labels"],
            "batch_total_s": g.seconds,
            "wall_over_labels": g.seconds / g.seconds_by_phase["labels"],
            "seconds_by_phase": g.seconds_by_phase,
            "batch_points_per_s": batch_rate,
            "lsoda_loop_points_per_s": loop_rate,
            "lsoda_subsample": args.subsample,
            "speedup": batch_rate / loop_rate,
            "batch_vs_lsoda_label_agreement": float(np.mean(loop == g.label.ravel()[idx])),
            "agreement_with_analytic_far_from_separatrix": float(np.mean(g.label[far] == ref[far])),
            "points_far_from_separatrix": int(far.sum()),
            "undetermined_fraction": float(np.mean(g.label == -1)),
        })
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
