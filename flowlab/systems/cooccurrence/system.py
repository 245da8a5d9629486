"""The full co-occurrence model of Eq. 1 on the engine's :class:`~flowlab.engine.system.System` protocol.

:class:`CooccurrenceSystem` is L̂ over the trained weights (W, W_V, W_K, W_Q) flattened in the
order of :meth:`~flowlab.systems.cooccurrence.full.Weights.flat` (a ∈ {±1}^{m1} stays fixed);
the parameter names are ``W[j,k]`` (j < m1, k < m), ``W_V[i,w]``, ``W_K[i,w]``, ``W_Q[i,w]``
(i < m, w < d; 0-based, word w = μ_{w+1}). Loss and gradient are exact
(:func:`~flowlab.systems.cooccurrence.full.loss_and_grad`), evaluated point by point over the
leading axes of theta (a loop: the model's batch is its samples, not its weight points); the
Hessian is by central differences of the exact gradient (the SystemBase default).

Reference: the optimal loss is 0, the infimum of the logistic loss, **not attained** (every
margin y_i F_i must go to +∞). It rests on an explicit separator checked on the data at
construction: with A = W_Kᵀ W_Q = 0 (uniform attention) F(X) = Σ_k h[x_k], and h = (1, 1, −1.5,
0, …) gives every sample of Def. 2.1 a positive margin (I_1: 0.5, I_2, I_3: 0.5, I_4: 1.5); h =
W_Vᵀ Wᵀ a takes any value, so c·h with c → ∞ drives L̂ to 0. Data where this separator fails
get ``optimal_loss`` None. The one non-global critical value named is ``h_zero`` = log 2: the
set {Wᵀa = 0, W_V = 0} (any W_K, W_Q) is critical (h = 0 there, so F = 0 and every gradient
vanishes); other critical values are not looked for (``complete`` False).

Invariants (conserved by the gradient flow of the full model; MODELS.md §6 and derived):
``S-m1*trC`` = ‖Wᵀa‖² − m1 ‖W_V‖²_F and ``trBK-trBQ`` = ‖W_K‖²_F − ‖W_Q‖²_F (the scalars the Gram
flow conserves), ``|W|^2-|W_V|^2`` = ‖W‖²_F − ‖W_V‖²_F (two-layer balancedness of h = W_Vᵀ Wᵀ a:
WᵀW − W_V W_Vᵀ is conserved), and ``|W_K 1|^2`` (one-hot keys: adding v 1ᵀ to W_K shifts every
score of a query equally, so ∂L̂/∂W_K 1 = 0 and the vector W_K 1 is conserved).
"""

from __future__ import annotations

import math

import numpy as np

from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.system import Reference, SystemBase

from .data import CooccurrenceData
from .full import Weights, check_weights, init_weights, loss_and_grad, weight_observables

#: The separator behind the reference: h on μ_1, μ_2, μ_3 (every other word 0), attention uniform.
SEPARATOR = (1.0, 1.0, -1.5)
INVARIANTS = ("S-m1*trC", "trBK-trBQ", "|W|^2-|W_V|^2", "|W_K 1|^2")


def weight_names(m: int, m1: int, d: int) -> tuple[str, ...]:
    """Parameter names in the order of ``Weights.flat()``: W[j,k], W_V[i,w], W_K[i,w], W_Q[i,w]."""
    names = [f"W[{j},{k}]" for j in range(m1) for k in range(m)]
    for block in ("W_V", "W_K", "W_Q"):
        names += [f"{block}[{i},{w}]" for i in range(m) for w in range(d)]
    return tuple(names)


def separator_margins(data: CooccurrenceData) -> np.ndarray:
    """y_i Σ_k h[x_k] of every sample for h = SEPARATOR on μ_1..μ_3 and 0 elsewhere."""
    h = np.zeros(data.d)
    h[:3] = SEPARATOR
    return data.y * h[data.tokens].sum(axis=1)


class CooccurrenceSystem(SystemBase):
    """L̂ of Eq. 1 over the flattened trained weights (module docstring).

    ``weights``: the start weights (they fix m, m1 and a; ``theta0`` is their flat vector); when
    None they are drawn by :func:`~flowlab.systems.cooccurrence.full.init_weights` with ``m``,
    ``m1``, ``seed`` and ``init``.
    """

    name = "cooccurrence"

    def __init__(self, data: CooccurrenceData, weights: Weights | None = None, *, m: int = 8, m1: int = 16,
                 seed: int = 0, init: str = "paper"):
        if not isinstance(data, CooccurrenceData):
            raise FlowlabInputError(f"data must be a CooccurrenceData, got {type(data).__name__}")
        if weights is None:
            weights, self.init, self.seed = init_weights(data.d, m, m1, L=data.L, seed=seed, init=init), init, seed
        else:
            weights, self.init, self.seed = check_weights(weights, data.d), "given", None
        self.data, self.weights0 = data, weights
        self.m, self.m1, self.d = weights.m, weights.m1, weights.d
        self.params = weight_names(self.m, self.m1, self.d)
        self.theta0 = weights.flat()
        self._reference = None

    def weights(self, theta) -> Weights:
        """The weights (with the fixed a) of one point theta (n_params,)."""
        return self.weights0.with_flat(theta)

    def _points(self, theta) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim == 0 or theta.shape[-1] != len(self.params):
            raise FlowlabInputError(f"theta must have shape (..., {len(self.params)}) (W, W_V, W_K, W_Q "
                                    f"flattened), got shape {theta.shape}")
        return theta

    def _each(self, fn, theta, trailing: tuple) -> np.ndarray:
        """fn(Weights) at every point of theta (..., n), stacked to (...,) + trailing."""
        theta = self._points(theta)
        flat = theta.reshape(-1, theta.shape[-1])
        out = np.array([fn(self.weights(row)) for row in flat], dtype=np.float64)
        return out.reshape(theta.shape[:-1] + trailing)

    def loss(self, theta) -> np.ndarray:
        return self._each(lambda w: loss_and_grad(self.data, w)[0], theta, ())

    def gradient(self, theta) -> np.ndarray:
        return self._each(lambda w: loss_and_grad(self.data, w)[1].flat(), theta, (len(self.params),))

    def invariants(self, theta) -> dict[str, np.ndarray]:
        def values(w: Weights):
            u = w.W.T @ w.a
            tv, tk, tq = (float(np.sum(x * x)) for x in (w.WV, w.WK, w.WQ))
            k1 = w.WK.sum(axis=1)
            return [u @ u - w.m1 * tv, tk - tq, float(np.sum(w.W * w.W)) - tv, k1 @ k1]

        out = self._each(values, theta, (len(INVARIANTS),))
        return {name: out[..., i] for i, name in enumerate(INVARIANTS)}

    def observables(self, theta) -> dict[str, np.ndarray]:
        """Per-type losses ``loss_I1``..``loss_I4``, ``G1``..``G3`` (G(μ_i) = aᵀ W W_V μ_i), attention scores
        ``A[i,j]`` = μ_iᵀ W_Kᵀ W_Q μ_j (i, j = 1..3), ``attention_deviation`` (max |softmax − 1/L|) and
        ``margin_min`` (min_i y_i F(X_i))."""
        def values(w: Weights):
            obs = weight_observables(self.data, w)
            return [*obs["loss_by_type"], *obs["G"], *obs["attention"].ravel(), obs["attention_deviation"],
                    float(np.min(obs["margins"]))]

        names = ([f"loss_I{k}" for k in range(1, 5)] + [f"G{i}" for i in range(1, 4)]
                 + [f"A[{i},{j}]" for i in range(1, 4) for j in range(1, 4)] + ["attention_deviation", "margin_min"])
        out = self._each(values, theta, (len(names),))
        return {name: out[..., i] for i, name in enumerate(names)}

    def reference(self) -> Reference:
        """Optimal loss 0 (an infimum, not attained) and the level ``h_zero`` = log 2; cached."""
        if self._reference is None:
            margins = separator_margins(self.data)
            level = {"h_zero": math.log(2.0)}
            tail = ("; h_zero = log 2 is the loss on the critical set {W^T a = 0, W_V = 0} (h = 0, F = 0, every "
                    "gradient vanishes); other non-global critical values are not looked for")
            if np.all(margins > 0):
                source = ("0: the infimum of the logistic loss, not attained (every margin y_i F_i must go to "
                          "+inf); it is approached along c*h, c -> inf, with uniform attention (W_K^T W_Q = 0) and "
                          "h = W_V^T W^T a = (1, 1, -1.5, 0, ...), which classifies every sample correctly "
                          f"(smallest margin {float(margins.min()):g}, checked on the data)")
                optimal = 0.0
            else:
                bad = int(np.argmin(margins))
                source = (f"unknown: sample {bad} is not separated by h = (1, 1, -1.5, 0, ...) with uniform "
                          "attention (the data do not follow Def. 2.1), so the infimum 0 is not established")
                optimal = None
            self._reference = Reference(optimal_loss=optimal, levels=level, loss_tol=1e-9, source=source + tail,
                                        complete=False)
        return self._reference

    def describe(self) -> dict:
        return {"system": "cooccurrence", "model": "full", "m": self.m, "m1": self.m1, "init": self.init,
                "seed": self.seed, "data": self.data.as_dict()}
