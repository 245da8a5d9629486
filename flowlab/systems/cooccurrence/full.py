"""The full model of Eq. 1 (Yang et al. 2024): weights, loss, exact gradients, GD and gradient flow.

F(X) = Σ_l Σ_j a_j w_jᵀ W_V X softmax(Xᵀ W_Kᵀ W_Q x_l / √m) with W_Q, W_K, W_V ∈ R^{m×d},
W ∈ R^{m1×m} (rows w_j) trained and a ∈ {±1}^{m1} fixed; L̂ = (1/n) Σ log(1 + e^{−y_i F_i}).

Fast path: F depends on the weights through h = W_Vᵀ u (u = Wᵀa) and A = W_Kᵀ W_Q only, so the
gradient is the chain rule through (h, A) (``trajectory.loss_gradients``):
∂L̂/∂W = −a (W_V c̃)ᵀ, ∂L̂/∂W_V = −u c̃ᵀ, ∂L̂/∂W_K = W_Q Mᵀ, ∂L̂/∂W_Q = W_K M. The reference
path :func:`direct_loss_and_grad` evaluates Eq. 1 and the gradients of the paper's Appendix B
sample by sample and position by position, with the one-hot matrices X; tests compare the two and
both against finite differences, and the benchmark uses it as the baseline.

Initialisations (a_j uniform ±1 in all of them): ``paper`` — W ~ N(0, σ_1²), W_V, W_K, W_Q ~
N(0, σ_0²) with σ_0 = 1/√(Lm), σ_1 = 1/√m1 (Condition 1 without its log factors; both
overridable); ``kaiming`` — Kaiming-normal with fan-in (PyTorch ``kaiming_normal_`` defaults):
std √(2/d) for W_V, W_K, W_Q and √(2/m) for W; ``kaiming_uniform`` — PyTorch's ``nn.Linear``
default (``kaiming_uniform_`` with a = √5): U(−1/√fan_in, 1/√fan_in). Appendix A only says
"Kaiming initialization"; which variant is a choice (see ``PAPER_INIT``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flowlab.engine.checks import finite_array, integer, real_number
from flowlab.engine.errors import FlowlabInputError

from .trajectory import Trajectory, forward, g_of, loss_gradients, observables, softplus_neg

#: Initialisation schemes; the paper's experiment uses ``PAPER_INIT``.
INITS = ("paper", "kaiming", "kaiming_uniform")
PAPER_INIT = "kaiming_uniform"
#: Refuse full-model work above these sizes (floats per weight set, flow parameters, GD time).
MAX_WEIGHTS = 5e7
MAX_FLOW_PARAMS = 2e5
MAX_GD_SECONDS = 3600.0
#: The estimate behind it: flops at GD_FLOP_RATE per second plus a fixed cost per step.
GD_FLOP_RATE, GD_STEP_OVERHEAD = 5e9, 2e-4


@dataclass(frozen=True)
class Weights:
    """Trained W (m1, m), W_V, W_K, W_Q (m, d) and fixed a (m1,) of Eq. 1."""

    W: np.ndarray
    WV: np.ndarray
    WK: np.ndarray
    WQ: np.ndarray
    a: np.ndarray

    @property
    def m(self) -> int:
        return int(self.WV.shape[0])

    @property
    def m1(self) -> int:
        return int(self.W.shape[0])

    @property
    def d(self) -> int:
        return int(self.WV.shape[1])

    def flat(self) -> np.ndarray:
        """The trained weights as one vector (W, W_V, W_K, W_Q)."""
        return np.concatenate([self.W.ravel(), self.WV.ravel(), self.WK.ravel(), self.WQ.ravel()])

    def with_flat(self, theta: np.ndarray) -> Weights:
        """The same shapes (and a) filled from a vector made by :meth:`flat`."""
        m, m1, d = self.m, self.m1, self.d
        cut = np.cumsum([m1 * m, m * d, m * d])
        W, WV, WK, WQ = np.split(np.asarray(theta, dtype=np.float64), cut)
        return Weights(W.reshape(m1, m), WV.reshape(m, d), WK.reshape(m, d), WQ.reshape(m, d),
                       self.a)

    def grams(self) -> dict:
        """The Gram state (S, h, C, A, B_K, B_Q) of MODELS.md §6 (S = ‖Wᵀa‖², h = W_Vᵀ Wᵀ a)."""
        u = self.W.T @ self.a
        return {"S": float(u @ u), "h": self.WV.T @ u, "C": self.WV.T @ self.WV,
                "A": self.WK.T @ self.WQ, "BK": self.WK.T @ self.WK, "BQ": self.WQ.T @ self.WQ}


def check_weights(weights: Weights, d: int | None = None) -> Weights:
    """Shapes consistent, entries finite, a ∈ {±1}^{m1}; raises FlowlabInputError naming the part."""
    arrays = {name: finite_array(getattr(weights, name), name) for name in ("W", "WV", "WK", "WQ", "a")}
    m, dd = arrays["WV"].shape if arrays["WV"].ndim == 2 else (0, 0)
    m1 = arrays["W"].shape[0] if arrays["W"].ndim == 2 else 0
    ok = (m > 0 and dd > 0 and m1 > 0 and arrays["WK"].shape == (m, dd)
          and arrays["WQ"].shape == (m, dd) and arrays["W"].shape == (m1, m)
          and arrays["a"].shape == (m1,))
    if not ok:
        raise FlowlabInputError(
            "weights must have shapes W (m1, m), W_V, W_K, W_Q (m, d), a (m1,); got "
            + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
    if d is not None and dd != d:
        raise FlowlabInputError(f"the weights act on d = {dd} words but the data has d = {d}")
    if not np.all(np.abs(arrays["a"]) == 1.0):
        raise FlowlabInputError("a must have entries ±1 (the Gram flow uses aᵀa = m1)")
    return Weights(**arrays)


def init_scales(init: str, L: int, d: int, m: int, m1: int, sigma0=None, sigma1=None):
    """(σ_0, σ_1): the standard deviations of (W_V, W_K, W_Q) and W for a Gaussian scheme.

    ``kaiming_uniform`` is not Gaussian; its standard deviations are returned (1/√(3·fan_in)).
    """
    if init not in INITS:
        raise FlowlabInputError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    default = {"paper": (1.0 / math.sqrt(L * m), 1.0 / math.sqrt(m1)),
               "kaiming": (math.sqrt(2.0 / d), math.sqrt(2.0 / m)),
               "kaiming_uniform": (1.0 / math.sqrt(3.0 * d), 1.0 / math.sqrt(3.0 * m))}[init]
    s0 = default[0] if sigma0 is None else real_number(sigma0, "sigma0")
    s1 = default[1] if sigma1 is None else real_number(sigma1, "sigma1")
    if s0 <= 0 or s1 <= 0:
        raise FlowlabInputError(f"sigma0 and sigma1 must be > 0, got {s0!r}, {s1!r}")
    return s0, s1


def init_weights(d: int, m: int, m1: int, *, L: int = 5, seed: int = 0, init: str = "paper",
                 sigma0=None, sigma1=None) -> Weights:
    """Random initial weights (module docstring); ``seed`` drives a = ±1 and all matrices."""
    d, m, m1 = integer(d, "d", 4), integer(m, "m", 1), integer(m1, "m1", 1)
    L, seed = integer(L, "L", 3), integer(seed, "seed", 0, 2**63 - 1)
    if m1 * m + 3 * m * d > MAX_WEIGHTS:
        raise FlowlabInputError(f"m1·m + 3·m·d = {m1 * m + 3 * m * d:.3g} weights exceed the "
                                f"limit {MAX_WEIGHTS:.0e}; use the Gram flow with Wishart Grams")
    s0, s1 = init_scales(init, L, d, m, m1, sigma0, sigma1)
    rng = np.random.default_rng([seed, 1])
    a = rng.choice(np.array([-1.0, 1.0]), size=m1)
    if init == "kaiming_uniform":                 # uniform with standard deviation s
        def draw(shape, s):
            return rng.uniform(-math.sqrt(3.0) * s, math.sqrt(3.0) * s, shape)
    else:
        def draw(shape, s):
            return rng.normal(0.0, s, shape)
    return Weights(W=draw((m1, m), s1), WV=draw((m, d), s0), WK=draw((m, d), s0),
                   WQ=draw((m, d), s0), a=a)


def outputs(data, weights: Weights) -> np.ndarray:
    """F(X_i) for every sample (fast path)."""
    u = weights.W.T @ weights.a
    return forward(data.tokens, weights.WV.T @ u, weights.WK.T @ weights.WQ, weights.m)[0]


def loss_and_grad(data, weights: Weights):
    """(L̂, gradient as Weights) by the chain rule through (h, A) (module docstring)."""
    u = weights.W.T @ weights.a
    h = weights.WV.T @ u
    A = weights.WK.T @ weights.WQ
    loss, c, M, _, _ = loss_gradients(data, h, A, weights.m)
    grad = Weights(W=-np.outer(weights.a, weights.WV @ c), WV=-np.outer(u, c),
                   WK=weights.WQ @ M.T, WQ=weights.WK @ M, a=weights.a)
    return loss, grad


def per_type_losses(data, weights: Weights) -> np.ndarray:
    """Mean loss over the samples of each type I_1..I_4 (0 for an empty type)."""
    losses = softplus_neg(data.y * outputs(data, weights))
    counts = np.bincount(data.types, minlength=4)
    return np.bincount(data.types, weights=losses, minlength=4) / np.maximum(counts, 1)


def direct_loss_and_grad(data, weights: Weights):
    """Reference: Eq. 1 and the Appendix-B gradients, one sample and one query at a time.

    Uses the one-hot matrices X^{(i)} and never the (h, A) reduction; slow, for tests and the
    benchmark baseline. Returns (L̂, gradient as Weights).
    """
    W, WV, WK, WQ, a = weights.W, weights.WV, weights.WK, weights.WQ, weights.a
    rootm = math.sqrt(weights.m)
    X_all = data.embeddings()
    gW, gWV, gWK, gWQ = (np.zeros_like(W), np.zeros_like(WV), np.zeros_like(WK), np.zeros_like(WQ))
    loss = 0.0
    for X, y in zip(X_all, data.y):
        V, K, Q = WV @ X, WK @ X, WQ @ X
        mlp = a @ W @ V                       # Σ_j a_j w_jᵀ v_h for each key h
        dW, dWV, dWK, dWQ = (np.zeros_like(W), np.zeros_like(WV), np.zeros_like(WK), np.zeros_like(WQ))
        F = 0.0
        for q in range(X.shape[1]):               # every position is a query
            s = K.T @ Q[:, q] / rootm
            p = np.exp(s - s.max())
            p /= p.sum()
            F += mlp @ p
            dW += np.outer(a, V @ p)
            dWV += np.outer(W.T @ a, X @ p)
            dfds = p * (mlp - mlp @ p)
            dWK += np.outer(Q[:, q], X @ dfds) / rootm
            dWQ += np.outer(K @ dfds, X[:, q]) / rootm
        z = y * F
        loss += float(softplus_neg(z))
        coef = -float(g_of(z)) * y / data.n
        gW += coef * dW
        gWV += coef * dWV
        gWK += coef * dWK
        gWQ += coef * dWQ
    return loss / data.n, Weights(gW, gWV, gWK, gWQ, a)


def weight_observables(data, weights: Weights) -> dict:
    """The :func:`~.trajectory.observables` of a weight set (its Grams; invariants from weights)."""
    g = weights.grams()
    tk, tq = float(np.trace(g["BK"])), float(np.trace(g["BQ"]))
    return observables(data, g["h"], g["A"], g["C"], g["S"], tk - tq, weights.m, weights.m1,
                       trace_bk_plus_bq=tk + tq)


def single_thread_blas():
    """A context limiting BLAS to one thread when threadpoolctl is installed (else a no-op).

    The matrices here are small (m × d); multi-threaded BLAS on them is slower, and on a loaded
    machine many times slower, than one thread.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional dependency
        from contextlib import nullcontext
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _check_gd(data, weights, lr, epochs, record_every):
    weights = check_weights(weights, data.d)
    lr = real_number(lr, "lr")
    if lr <= 0:
        raise FlowlabInputError(f"lr must be > 0, got {lr!r}")
    epochs = integer(epochs, "epochs", 1, 10**8)
    record_every = integer(record_every, "record_every", 1)
    m, m1, d = weights.m, weights.m1, weights.d
    seconds = epochs * ((4.0 * m1 + 8.0 * m * d * d + 30.0 * data.n * data.L ** 2) / GD_FLOP_RATE
                        + GD_STEP_OVERHEAD)
    if seconds > MAX_GD_SECONDS:
        raise FlowlabInputError(f"{epochs} epochs at m = {m}, m1 = {m1}, d = {d} would take about "
                                f"{seconds:.2g} s (limit {MAX_GD_SECONDS:g} s): use fewer epochs "
                                "or the Gram flow")
    return weights, lr, epochs, record_every


def gradient_descent(data, weights: Weights, *, lr: float = 0.01, epochs: int = 30_000,
                     record_every: int = 100, quiet: bool = True, settings: dict | None = None):
    """Full-batch gradient descent on all four matrices; returns (Trajectory, final Weights).

    Every step is W ← W − lr ∂L̂/∂W (and likewise W_V, W_K, W_Q) with all gradients taken at the
    old weights. Since ∂L̂/∂W = −a (W_V c̃)ᵀ is always a multiple of a, W is kept exactly as
    W(0) + a rᵀ (r accumulates lr·W_V c̃), so u = Wᵀa = u(0) + m1 r costs O(m) per step instead of
    O(m1 m); the final W is formed at the end. Observables are recorded at epoch 0, every
    ``record_every`` epochs and at the end, at flow time t = epoch × lr. A non-finite loss stops
    the run with status ``failed``.
    """
    from tqdm import tqdm

    weights, lr, epochs, record_every = _check_gd(data, weights, lr, epochs, record_every)
    m, m1, a = weights.m, weights.m1, weights.a
    WV, WK, WQ = weights.WV.copy(), weights.WK.copy(), weights.WQ.copy()
    u0, r = weights.W.T @ a, np.zeros(m)
    times, records = [0.0], [weight_observables(data, weights)]
    status, message = "ok", f"{epochs} epochs of gradient descent with lr {lr:g}"
    with single_thread_blas(), tqdm(total=epochs, disable=quiet, desc="cooccurrence GD",
                                    leave=False) as bar:
        for epoch in range(1, epochs + 1):
            u = u0 + m1 * r
            loss, c, M, _, _ = loss_gradients(data, WV.T @ u, WK.T @ WQ, m)
            if not math.isfinite(loss):
                status, message = "failed", f"the loss became non-finite at epoch {epoch}"
                break
            r += lr * (WV @ c)
            WV += np.outer(lr * u, c)
            WK, WQ = WK - lr * (WQ @ M.T), WQ - lr * (WK @ M)
            if epoch % record_every == 0 or epoch == epochs:
                times.append(epoch * lr)
                records.append(weight_observables(data, Weights(weights.W + np.outer(a, r),
                                                                WV, WK, WQ, a)))
                bar.update(epoch - bar.n)
    final = Weights(weights.W + np.outer(a, r), WV, WK, WQ, a)
    run = {"lr": lr, "epochs": epochs, "record_every": record_every, "m": m, "m1": m1,
           **data.as_dict(), **(settings or {})}
    return Trajectory.from_records("full_gd", run, times, records, status, message), final


def gradient_flow(data, weights: Weights, t_eval, *, rtol: float = 1e-10, atol: float = 1e-12,
                  settings: dict | None = None):
    """Gradient flow of all weights (solve_ivp, DOP853) for small sizes; (Trajectory, Weights).

    ``t_eval``: increasing times ≥ 0 at which the observables are recorded (the first is the
    start time).
    """
    from scipy.integrate import solve_ivp

    weights = check_weights(weights, data.d)
    t_eval = finite_array(t_eval, "t_eval")
    if t_eval.ndim != 1 or t_eval.size < 2 or np.any(np.diff(t_eval) <= 0) or t_eval[0] < 0:
        raise FlowlabInputError("t_eval must be an increasing 1-D array of at least 2 times >= 0")
    params = weights.W.size + 3 * weights.WV.size
    if params > MAX_FLOW_PARAMS:
        raise FlowlabInputError(f"the full gradient flow has {params} parameters (limit "
                                f"{MAX_FLOW_PARAMS:.0e}); use gradient_descent or the Gram flow")

    def rhs(_t, theta):
        return -loss_and_grad(data, weights.with_flat(theta))[1].flat()

    sol = solve_ivp(rhs, (t_eval[0], t_eval[-1]), weights.flat(), method="DOP853",
                    t_eval=t_eval, rtol=rtol, atol=atol)
    states = [weights.with_flat(y) for y in sol.y.T]
    records = [weight_observables(data, w) for w in states]
    run = {"rtol": rtol, "atol": atol, "m": weights.m, "m1": weights.m1, **data.as_dict(),
           **(settings or {})}
    status = "ok" if sol.success else "failed"
    traj = Trajectory.from_records("full_flow", run, sol.t, records, status, sol.message,
                                   extra={"nfev": int(sol.nfev)})
    return traj, states[-1] if states else weights
