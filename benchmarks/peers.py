"""Peers benchmark: the same ``ew`` grid and decision rule with flowlab and, when installed, diffrax and torchode.

    python benchmarks/peers.py [--grid 64] [--p 0.5 --q 0.8] [--t-max 1e4]

(``pip install -e .[bench]`` installs diffrax and torchode.) Every solver integrates the gradient flow of
``ew`` (Dormand-Prince 5(4), rtol 1e-6, atol 1e-9) from every grid point and labels it with the rule of
:mod:`flowlab.engine.basins`: 1 once the loss is below the unigram level minus 1e-12 (a proof: that
level is the only non-global critical value), 0 where |grad L| <= 1e-7 with a positive semidefinite
Hessian above the optimal loss, else -1. flowlab stops each point when it is decided; diffrax stops on
a terminating event per point (vmapped); torchode has no events, so it integrates to ``t_max`` and the
rule is applied at the end point. The peers' loss and gradient are written here from the closed form of
MODELS.md section 2 (L = ell(D), D = e^2 (1 + 2 w |w|)). Prints one JSON object: points per second of
each solver, ratios to flowlab, agreement of labels with flowlab's; a solver that is not installed or
fails is reported as such, not measured.
"""

import argparse
import json
import math
import time

import numpy as np

from flowlab import MarkovChain, get_model
from flowlab.engine.basins import FlowSettings, flow_labels, grid_axes, grid_points
from flowlab.systems.markov.system import MarkovSystem


def closed_form(xp, p: float, q: float):
    """loss(e, w) and gradient(e, w) of ew in array module ``xp`` (numpy, jax.numpy or torch)."""
    pi0, pi1 = q / (p + q), p / (p + q)
    beta, c, t0, t1 = pi0 - pi1, 4 * pi0 * pi1, p, 1 - q

    def sig1(D):  # sigma(zeta0 + D) from the bias quadratic (see flowlab.symbolic.special.profiled_sigmoid1)
        A, F = xp.exp(xp.minimum(D, 0 * D)), xp.exp(-xp.maximum(D, 0 * D))
        R = xp.sqrt(beta * beta * F * F + c * A * F)
        if beta >= 0:
            return 2 * pi1 * A / (R + beta * F + 2 * pi1 * A)
        return 2 * pi1 * (R - beta * F) / (c * F + 2 * pi1 * (R - beta * F))

    def parts(e, w):
        D = e * e * (1 + 2 * w * xp.abs(w))
        s1 = sig1(D)
        s0 = (pi1 - pi1 * s1) / pi0  # stationarity: pi0 s0 + pi1 s1 = pi1
        return D, s0, s1

    def loss(e, w):
        _, s0, s1 = parts(e, w)
        ce = lambda t, s: -t * xp.log(s) - (1 - t) * xp.log(1 - s)
        return pi0 * ce(t0, s0) + pi1 * ce(t1, s1)

    def gradient(e, w):
        _, _, s1 = parts(e, w)
        k = pi1 * (s1 - t1)  # ell'(D)
        return k * 2 * e * (1 + 2 * w * xp.abs(w)), k * 4 * e * e * xp.abs(w)

    return loss, gradient


def classify(nm, y, level, optimal, s: FlowSettings) -> np.ndarray:
    """The rule at end points (numpy, flowlab's compiled model for the Hessian)."""
    loss, grad = nm.loss(y), nm.gradient(y)
    out = np.full(len(y), -1, dtype=np.int8)
    out[loss < level - s.loss_margin] = 1
    cand = (out == -1) & (np.linalg.norm(grad, axis=1) <= s.grad_tol) & (loss - optimal > 1e-9)
    if cand.any():
        lam = np.linalg.eigvalsh(nm.hessian(y[cand]))
        idx = np.flatnonzero(cand)
        out[idx[(lam.min(axis=1) >= -s.hess_tol) & (lam.max(axis=1) >= s.curvature_min)]] = 0
    return out


def run_diffrax(pts, p, q, level, s: FlowSettings):
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp

    loss, gradient = closed_form(jnp, p, q)

    def field(t, y, args):
        ge, gw = gradient(y[0], y[1])
        return -jnp.stack([ge, gw])

    def decided(t, y, args, **kw):
        ge, gw = gradient(y[0], y[1])
        return (loss(y[0], y[1]) < level - s.loss_margin) | (jnp.sqrt(ge * ge + gw * gw) <= s.grad_tol)

    def one(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Dopri5(), 0.0, s.t_max, None, y0,
            stepsize_controller=diffrax.PIDController(rtol=s.rtol, atol=s.atol), event=diffrax.Event(decided),
            max_steps=200_000, throw=False)
        return sol.ys[-1]

    solve = jax.jit(jax.vmap(one))
    solve(jnp.asarray(pts[:8])).block_until_ready()  # compile
    t = time.perf_counter()
    y = np.asarray(solve(jnp.asarray(pts)).block_until_ready())
    return y, time.perf_counter() - t


def run_torchode(pts, p, q, s: FlowSettings):
    import torch
    import torchode as to

    _, gradient = closed_form(torch, p, q)

    def field(t, y):
        ge, gw = gradient(y[:, 0], y[:, 1])
        return -torch.stack([ge, gw], dim=1)

    y0 = torch.tensor(pts, dtype=torch.float64)
    term = to.ODETerm(field)
    solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(atol=s.atol, rtol=s.rtol, term=term))
    t_eval = torch.tensor([[0.0, s.t_max]] * len(pts), dtype=torch.float64)
    t = time.perf_counter()
    sol = solver.solve(to.InitialValueProblem(y0=y0, t_eval=t_eval))
    return sol.ys[:, -1].numpy(), time.perf_counter() - t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--q", type=float, default=0.8)
    parser.add_argument("--t-max", type=float, default=1e4)
    parser.add_argument("--peers", nargs="*", default=["diffrax", "torchode"], choices=["diffrax", "torchode"])
    args = parser.parse_args(argv)
    model, chain = get_model("ew"), MarkovChain(args.p, args.q)
    s = FlowSettings(t_max=args.t_max, workers=1)
    system = MarkovSystem(model, chain)
    ref = system.reference()
    level = ref.nonglobal_level
    pts = grid_points(grid_axes(model.params, {"e": (-3.0, 3.0), "w": (-3.0, 3.0)}, args.grid))
    flow_labels(system, pts[:64], ref, s)  # warm-up
    t = time.perf_counter()
    ours, _ = flow_labels(system, pts, ref, s)
    rate = len(pts) / (time.perf_counter() - t)
    out = {"model": "ew", "p": args.p, "q": args.q, "grid": f"{args.grid}x{args.grid}", "points": len(pts),
           "t_max": args.t_max, "flowlab": {"points_per_s": rate, "threads": 1}, "peers": {}}
    runners = {"diffrax": lambda: run_diffrax(pts, args.p, args.q, level, s),
               "torchode": lambda: run_torchode(pts, args.p, args.q, s)}
    for name, run in runners.items():
        if name not in args.peers:
            continue
        try:
            y, seconds = run()
        except ImportError as exc:
            out["peers"][name] = {"status": "not installed", "message": f"{exc} (pip install -e .[bench])"}
            continue
        except Exception as exc:  # a peer's failure is reported, not raised
            out["peers"][name] = {"status": "failed", "message": f"{type(exc).__name__}: {exc}"}
            continue
        labels = classify(system.numeric, y, level, ref.optimal_loss, s)
        peer_rate = len(pts) / seconds
        out["peers"][name] = {"status": "ok", "points_per_s": peer_rate, "flowlab_over_peer": rate / peer_rate,
                              "label_agreement_with_flowlab": float(np.mean(labels == ours)),
                              "undetermined": int(np.sum(labels == -1))}
    out["status"] = "ok"
    out["message"] = "; ".join(f"{k}: {v.get('status')}" for k, v in out["peers"].items()) or "no peers"
    print(json.dumps(out, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x)))


if __name__ == "__main__":
    main()
