"""The exact Gram flow of the co-occurrence transformer (MODELS.md §6).

F depends on the weights only through h = W_Vᵀ u (u = Wᵀa) and A = W_Kᵀ W_Q. With c̃ = −∂L̂/∂h and
M = ∂L̂/∂A (both functions of (h, A) alone, ``trajectory.loss_gradients``), gradient flow on
(W, W_V, W_K, W_Q) closes on the Grams S = ‖u‖², h, C = W_Vᵀ W_V, A, B_K = W_Kᵀ W_K,
B_Q = W_Qᵀ W_Q (u̇ = m1 W_V c̃ because aᵀa = m1, Ẇ_V = u c̃ᵀ, Ẇ_K = −W_Q Mᵀ, Ẇ_Q = −W_K M):

    Ṡ = 2 m1 hᵀc̃      ḣ = S c̃ + m1 C c̃      Ċ = c̃ hᵀ + h c̃ᵀ
    Ȧ = −(M B_Q + B_K M)      Ḃ_K = −(M Aᵀ + A Mᵀ)      Ḃ_Q = −(Aᵀ M + Mᵀ A)

The state has 1 + d + 4d² numbers whatever m and m1 are. At a Gaussian initialisation the initial
Grams are Wishart: [u, W_V]ᵀ[u, W_V] ~ W_{d+1}(m, diag(m1 σ_1², σ_0², …, σ_0²)) (u_k = Σ_j a_j W_jk
~ N(0, m1 σ_1²), independent of W_V) and [W_K, W_Q]ᵀ[W_K, W_Q] ~ W_{2d}(m, σ_0² I); they are drawn
by the Bartlett decomposition (O(p²) work for any m ≥ p), so widths m, m1 of 10⁴–10⁶ and beyond cost
nothing extra. Conserved: S − m1 tr C and tr B_K − tr B_Q, checked along every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flowlab.engine.checks import finite_array, integer, real_number
from flowlab.engine.errors import FlowlabInputError

from .full import Weights, check_weights, init_scales, single_thread_blas
from .trajectory import Trajectory, forward, loss_gradients, observables, softplus_neg

#: Largest vocabulary the Gram flow accepts (the state has 4d² entries, each RHS costs ~8d³).
MAX_D = 512
#: Largest widths (they only enter as numbers and through the Wishart degrees of freedom).
MAX_WIDTH = 10**12


@dataclass(frozen=True)
class GramState:
    """S = ‖Wᵀa‖², h = W_Vᵀ Wᵀ a, C = W_Vᵀ W_V, A = W_Kᵀ W_Q, B_K = W_Kᵀ W_K, B_Q = W_Qᵀ W_Q."""

    S: float
    h: np.ndarray
    C: np.ndarray
    A: np.ndarray
    BK: np.ndarray
    BQ: np.ndarray

    @property
    def d(self) -> int:
        return int(self.h.shape[0])

    def pack(self) -> np.ndarray:
        return np.concatenate([[self.S], self.h, self.C.ravel(), self.A.ravel(),
                               self.BK.ravel(), self.BQ.ravel()])

    @classmethod
    def unpack(cls, y: np.ndarray, d: int) -> GramState:
        blocks = np.split(y[1 + d:], 4)
        return cls(float(y[0]), y[1:1 + d], *(b.reshape(d, d) for b in blocks))

    def invariants(self, m1: int) -> tuple:
        """(S − m1 tr C, tr B_K − tr B_Q)."""
        return self.S - m1 * float(np.trace(self.C)), float(np.trace(self.BK) - np.trace(self.BQ))


def grams_from_weights(weights: Weights) -> GramState:
    """The Gram state of given weights (the same initial point as a full-model run)."""
    g = check_weights(weights).grams()
    return GramState(g["S"], g["h"], g["C"], g["A"], g["BK"], g["BQ"])


def wishart(p: int, m: int, scale: np.ndarray, rng) -> np.ndarray:
    """One draw of W_p(m, diag(scale)), i.e. the law of ZᵀZ for Z (m × p) with i.i.d. rows
    N(0, diag(scale)): Bartlett's decomposition when m ≥ p, else Z itself."""
    root = np.sqrt(np.asarray(scale, dtype=np.float64))
    if m < p:
        Z = rng.standard_normal((m, p)) * root
        return Z.T @ Z
    T = np.tril(rng.standard_normal((p, p)), -1)
    T[np.diag_indices(p)] = np.sqrt(rng.chisquare(m - np.arange(p)))
    G = T @ T.T
    return G * np.outer(root, root)


def _check_widths(d, m, m1):
    d = integer(d, "d", 4, MAX_D)
    return d, integer(m, "m", 1, MAX_WIDTH), integer(m1, "m1", 1, MAX_WIDTH)


def wishart_grams(d: int, m: int, m1: int, *, L: int = 5, seed: int = 0, init: str = "paper",
                  sigma0=None, sigma1=None) -> GramState:
    """Initial Grams of a Gaussian initialisation (``paper`` or ``kaiming``) drawn exactly from
    their Wishart laws (module docstring), for any widths m, m1 ≤ 10¹²."""
    d, m, m1 = _check_widths(d, m, m1)
    L, seed = integer(L, "L", 3), integer(seed, "seed", 0, 2**63 - 1)
    if init == "kaiming_uniform":
        raise FlowlabInputError("the Wishart law needs Gaussian weights; kaiming_uniform is "
                                "uniform: draw weights (full.init_weights) and use "
                                "grams_from_weights, or choose init 'paper' or 'kaiming'")
    s0, s1 = init_scales(init, L, d, m, m1, sigma0, sigma1)
    rng = np.random.default_rng([seed, 2])
    mlp = wishart(d + 1, m, np.r_[m1 * s1 ** 2, np.full(d, s0 ** 2)], rng)
    kq = wishart(2 * d, m, np.full(2 * d, s0 ** 2), rng)
    return GramState(float(mlp[0, 0]), mlp[1:, 0].copy(), mlp[1:, 1:].copy(), kq[:d, d:].copy(),
                     kq[:d, :d].copy(), kq[d:, d:].copy())


def gram_rhs(data, state: GramState, m: int, m1: int) -> GramState:
    """The time derivative of the Gram state (module docstring)."""
    _, c, M, _, _ = loss_gradients(data, state.h, state.A, m)
    return GramState(S=2.0 * m1 * float(state.h @ c),
                     h=state.S * c + m1 * (state.C @ c),
                     C=np.outer(c, state.h) + np.outer(state.h, c),
                     A=-(M @ state.BQ + state.BK @ M),
                     BK=-(M @ state.A.T + state.A @ M.T),
                     BQ=-(state.A.T @ M + M.T @ state.A))


def gram_observables(data, state: GramState, m: int, m1: int) -> dict:
    """The shared observables (trajectory.observables) of a Gram state."""
    tk, tq = float(np.trace(state.BK)), float(np.trace(state.BQ))
    return observables(data, state.h, state.A, state.C, state.S, tk - tq, m, m1,
                       trace_bk_plus_bq=tk + tq)


def time_unit(state: GramState, m1: int) -> float:
    """1/(S + m1 tr C / d): the time scale on which h moves at the start (Phase 1 ~ this)."""
    return 1.0 / (state.S + m1 * float(np.trace(state.C)) / state.d)


def _grid(t_eval, t_max, n_out, unit):
    """The output times: given, or 0 and ``n_out`` − 1 log-spaced times from 10⁻³·unit to t_max."""
    if t_eval is not None:
        t_eval = finite_array(t_eval, "t_eval")
        if t_eval.ndim != 1 or t_eval.size < 2 or t_eval[0] < 0 or np.any(np.diff(t_eval) <= 0):
            raise FlowlabInputError("t_eval must be an increasing 1-D array of >= 2 times >= 0")
        return t_eval
    n_out = integer(n_out, "n_out", 3, 100_000)
    t_max = 1e8 * unit if t_max is None else real_number(t_max, "t_max")
    if not t_max > 1e-3 * unit:
        raise FlowlabInputError(f"t_max must exceed 1e-3 time units ({1e-3 * unit:.3g}), "
                                f"got {t_max!r}")
    return np.r_[0.0, np.geomspace(1e-3 * unit, t_max, n_out - 1)]


def _events(data, d, m, target):
    """solve_ivp events: all samples correct (min margin crosses 0 upwards), loss ≤ target."""
    def margins(y):
        return data.y * forward(data.tokens, y[1:1 + d],
                                y[1 + d + d * d:1 + d + 2 * d * d].reshape(d, d), m)[0]

    def all_correct(_t, y):
        return float(np.min(margins(y)))
    all_correct.direction = 1.0
    if target is None:
        return [all_correct]

    def reached(_t, y):
        return float(softplus_neg(margins(y)).mean()) - target
    reached.terminal, reached.direction = True, -1.0
    return [all_correct, reached]


def gram_flow(data, state: GramState, m: int, m1: int, *, t_max=None, t_eval=None,
              n_out: int = 240, loss_target=None, rtol: float = 1e-10, quiet: bool = True,
              record_events: bool = True, settings: dict | None = None) -> Trajectory:
    """Integrate the Gram flow (solve_ivp, DOP853) and record the shared observables.

    Output times: ``t_eval``, or t = 0 and log-spaced times from 10⁻³ to ``t_max`` time units
    (default t_max = 10⁸ units, unit = :func:`time_unit`: Phase 1 lasts a few units, Phase 2 is
    long and the step size grows ∝ t there). The state at T₁ (all samples correct, located by an
    event) is recorded too unless ``record_events`` is false, and ``loss_target`` stops the run
    when the loss reaches it.
    Tolerances: ``rtol`` and an absolute tolerance of rtol × the initial size of each block.
    ``extra`` carries T1_event, nfev and whether the loss target was reached.
    """
    from scipy.integrate import solve_ivp
    from tqdm import tqdm

    d, m, m1 = _check_widths(state.d, m, m1)
    if d != data.d:
        raise FlowlabInputError(f"the Gram state has d = {d} but the data has d = {data.d}")
    y0 = finite_array(state.pack(), "initial Gram state")
    target = None if loss_target is None else real_number(loss_target, "loss_target")
    if target is not None and not 0 < target < math.log(2.0) * 10:
        raise FlowlabInputError(f"loss_target must lie in (0, 10 log 2), got {target!r}")
    rtol = real_number(rtol, "rtol")
    if not 1e-13 <= rtol <= 1e-3:
        raise FlowlabInputError(f"rtol must lie in [1e-13, 1e-3], got {rtol!r}")
    grid = _grid(t_eval, t_max, n_out, time_unit(state, m1))
    scales = [abs(state.S), np.abs(state.h).max(), np.abs(state.C).max(), np.abs(state.A).max(),
              np.abs(state.BK).max(), np.abs(state.BQ).max()]
    atol = rtol * np.repeat(np.maximum(scales, 1e-300), [1, d, d * d, d * d, d * d, d * d])
    span = math.log(grid[-1] / grid[1])
    with single_thread_blas(), tqdm(total=1000, disable=quiet, desc="cooccurrence Gram flow",
                                    leave=False) as bar:
        def rhs(t, y):
            if not quiet and t > grid[1]:
                bar.update(max(0, int(1000 * math.log(t / grid[1]) / span) - bar.n))
            return gram_rhs(data, GramState.unpack(y, d), m, m1).pack()

        sol = solve_ivp(rhs, (grid[0], grid[-1]), y0, method="DOP853", t_eval=grid, rtol=rtol,
                        atol=atol, events=_events(data, d, m, target))
    times, ys = list(sol.t), list(sol.y.T)
    if np.all(data.y * forward(data.tokens, state.h, state.A, m)[0] > 0):
        t1 = float(grid[0])                                      # correct from the start
    else:
        t1 = float(sol.t_events[0][0]) if sol.t_events[0].size else None
    for k in range(len(sol.t_events) if record_events else 0):
        for te, ye in zip(sol.t_events[k], sol.y_events[k]):
            if te not in times:
                times.append(float(te))
                ys.append(ye)
    order = np.argsort(times)
    records = [gram_observables(data, GramState.unpack(ys[i], d), m, m1) for i in order]
    reached = bool(target is not None and sol.status == 1)
    status = "ok" if sol.success else "failed"
    message = sol.message if not reached else f"reached the loss target {target:g}"
    run = {"m": m, "m1": m1, "rtol": rtol, "loss_target": target, **data.as_dict(),
           **(settings or {})}
    return Trajectory.from_records("gram_flow", run, np.asarray(times)[order], records, status,
                                   message, extra={"T1_event": t1, "nfev": int(sol.nfev),
                                                   "loss_target_reached": reached})
