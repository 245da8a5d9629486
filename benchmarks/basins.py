"""Basin benchmark: the batch engine against a per-point solve_ivp (LSODA) loop, same process.

    python benchmarks/basins.py [--grid 256 512] [--p 0.5 --q 0.8] [--subsample 200] [--engine-grid 192]

``engine`` (issue 16): points per second of the labelling on one grid, in the same process and
interleaved: today's path (log-domain profiled logit and the loss in every decision, one thread), the
cheaper profiled math on one thread, and on two threads; their ratios and whether the labels are
identical. Per run, ``wall_over_labels`` is the wall time of ``basin_grid`` over its labelling phase.

Prints one JSON object with, per grid size: points per second of the batch engine (labelling
phase), the same for a loop of ``solve_ivp(method="LSODA")`` over a random subsample of the grid
with the same decision rules (terminal events), their ratio, the agreement of the two on the
subsample, and the agreement of the batch labels with the analytic ``ew`` basins of MODELS.md
section 3 (implemented here from the formulas, not by flowlab) away from the separatrix.
"""

import argparse
import json
import math
import time

import numpy as np
from scipy.integrate import solve_ivp

from flowlab import MarkovChain, NumericModel, get_model
from flowlab.engine.basins import flow_labels, grid_axes, grid_points
from flowlab.systems.markov.basins import FlowSettings, basin_grid
from flowlab.systems.markov.system import MarkovSystem

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


def engine_rates(model, chain, n: int, repeats: int) -> dict:
    """Labelling points/s of today's path and the new ones (one and two threads), interleaved, best of ``repeats``."""
    fast, today = MarkovSystem(model, chain), MarkovSystem(model, chain)
    today.fast_profiled = False  # the log-domain gradient and the loss in every decision (the path before issue 16)
    ref = fast.reference()
    pts = grid_points(grid_axes(model.params, {k: (-3.0, 3.0) for k in model.params}, n))
    paths = {"today_1_thread": (today, 1), "new_1_thread": (fast, 1), "new_2_threads": (fast, 2)}
    best, labels = dict.fromkeys(paths, math.inf), {}
    for _ in range(repeats):
        for name, (system, workers) in paths.items():
            t = time.perf_counter()
            labels[name], _ = flow_labels(system, pts, ref, FlowSettings(workers=workers))
            best[name] = min(best[name], time.perf_counter() - t)
    rate = {k: len(pts) / v for k, v in best.items()}
    return {
        "grid": f"{n}x{n}", "points": len(pts), "repeats": repeats, "points_per_s": rate,
        "ratio_new_1_thread_vs_today": rate["new_1_thread"] / rate["today_1_thread"],
        "ratio_new_2_threads_vs_today": rate["new_2_threads"] / rate["today_1_thread"],
        "ratio_2_threads_vs_1": rate["new_2_threads"] / rate["new_1_thread"],
        "labels_identical": all(np.array_equal(labels["today_1_thread"], v) for v in labels.values()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--q", type=float, default=0.8)
    parser.add_argument("--subsample", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine-grid", type=int, default=192, help="grid of the engine comparison (0: skip)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    model, chain = get_model("ew"), MarkovChain(args.p, args.q)
    settings = FlowSettings()
    nm = NumericModel(model, chain)
    out = {"model": "ew", "p": args.p, "q": args.q, "settings": settings.__dict__, "runs": []}
    basin_grid(model, chain, grid=16)  # warm-up: compile, import
    if args.engine_grid:
        out["engine"] = engine_rates(model, chain, args.engine_grid, args.repeats)
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
