"""The common output of every cooccurrence engine and the one code path computing its observables.

Every engine (full-model gradient descent, full-model gradient flow, exact Gram flow, reduced phase
model) reduces a state to the quantities F depends on — h = W_Vᵀ Wᵀ a ∈ R^d (h_μ = G(μ)) and
A = W_Kᵀ W_Q ∈ R^{d×d} — plus the value Gram C = W_Vᵀ W_V, S = ‖Wᵀa‖² and tr B_K − tr B_Q, and calls
:func:`observables` on them. With one-hot embeddings a sample is its word indices ``tokens`` (L,),
the score of key position k for query position l is A[x_k, x_l]/√m and

    F(X) = Σ_l Σ_k h[x_k] softmax_k(A[x_k, x_l]/√m).

Word indices are 0-based: μ_1, μ_2, μ_3 are words 0, 1, 2. Types I_1..I_4 are coded 0..3.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

#: Names of the per-time arrays of a :class:`Trajectory`, in order.
SERIES = ("t", "loss", "loss_by_type", "G", "attention", "value_gram", "attention_deviation",
          "g_by_type", "margins", "invariants")


def softplus_neg(z: np.ndarray) -> np.ndarray:
    """The logistic loss ℓ(z) = log(1 + e^{−z}), stable for any z."""
    return np.logaddexp(0.0, -z)


def g_of(z: np.ndarray) -> np.ndarray:
    """g(z) = −ℓ'(z) = 1/(1 + e^z), stable for any z."""
    return 0.5 * (1.0 - np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def balancing_ratio(g_by_type: np.ndarray) -> np.ndarray:
    """R(t) = (Σ_{I₂∪I₃∪I₄} g − Σ_{I₁} g) / (Σ_{I₁} g − Σ_{I₂} g) (NaN where the denominator is ≤ 0)."""
    g = np.asarray(g_by_type, dtype=np.float64)
    num = g[:, 1] + g[:, 2] + g[:, 3] - g[:, 0]
    den = g[:, 0] - g[:, 1]
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def pair_index(tokens: np.ndarray, d: int) -> np.ndarray:
    """Flat indices x_k·d + x_l into A.ravel() of every (key k, query l) pair, shape (n, L, L)."""
    return tokens[:, :, None] * d + tokens[:, None, :]


def attention_weights(tokens: np.ndarray, A: np.ndarray, m: float, pairs=None) -> np.ndarray:
    """Softmax weights P[i, k, l] of key position k for query position l of sample i.

    ``pairs``: :func:`pair_index` of ``tokens`` when the caller already has it.
    """
    if pairs is None:
        pairs = pair_index(tokens, A.shape[0])
    scores = A.ravel().take(pairs) * (1.0 / math.sqrt(m))
    scores -= scores.max(axis=1, keepdims=True)
    e = np.exp(scores)
    e /= e.sum(axis=1, keepdims=True)
    return e


def forward(tokens: np.ndarray, h: np.ndarray, A: np.ndarray, m: float):
    """(F, P): the outputs F (n,) of Eq. 1 from (h, A) and the softmax weights P (n, L, L)."""
    P = attention_weights(tokens, A, m)
    F = np.einsum("ik,ikl->i", h[tokens], P)
    return F, P


def loss_gradients(data, h: np.ndarray, A: np.ndarray, m: float):
    """(loss, c̃, M, F, P): L̂, c̃ = −∂L̂/∂h (d,), M = ∂L̂/∂A (d, d), outputs F and weights P.

    With r_i = y_i g(y_i F_i)/n = −∂L̂/∂F_i and D[i, k, l] = ∂F_i/∂s_{kl} = P_{kl}(h[x_k] − F̄_l),
    F̄_l = Σ_k h[x_k] P_{kl} (so F_i = Σ_l F̄_l): c̃[w] = Σ r_i Σ_l P_{kl} over positions k holding
    word w, and M[x_k, x_l] accumulates −r_i D[i, k, l]/√m (score s_{kl} = A[x_k, x_l]/√m).
    """
    tokens = data.tokens
    d = h.shape[0]
    pairs = pair_index(tokens, d)
    P = attention_weights(tokens, A, m, pairs)
    v = h[tokens]
    fbar = np.einsum("ik,ikl->il", v, P)
    F = fbar.sum(axis=1)
    z = data.y * F
    r = data.y * g_of(z) / tokens.shape[0]
    c = np.bincount(tokens.ravel(), weights=(r[:, None] * P.sum(axis=2)).ravel(), minlength=d)
    dfds = P * (v[:, :, None] - fbar[:, None, :])
    dfds *= (-r / math.sqrt(m))[:, None, None]
    M = np.bincount(pairs.ravel(), weights=dfds.ravel(), minlength=d * d).reshape(d, d)
    return float(softplus_neg(z).mean()), c, M, F, P


def first_correct_time(t: np.ndarray, margins: np.ndarray) -> float | None:
    """T₁: the first recorded time at which every margin y_i F_i is > 0 (None if never)."""
    ok = np.all(np.asarray(margins) > 0.0, axis=1)
    if not ok.any():
        return None
    return float(np.asarray(t)[int(np.argmax(ok))])


def observables(data, h, A, C, S, trace_bk_minus_bq, m, m1, trace_bk_plus_bq=None) -> dict:
    """All per-time observables of a state given by its Grams (one code path for every engine).

    ``data`` is a :class:`~flowlab.systems.cooccurrence.data.CooccurrenceData` (tokens, y, types);
    h (d,), A (d, d), C (d, d) and the scalars S = ‖u‖², tr B_K − tr B_Q; m scales the scores and
    m1 enters the invariant S − m1 tr C. Returns a dict keyed like :data:`SERIES` (without ``t``)
    plus ``invariant_scale``: the size of the terms each invariant is a difference of
    (|S| + m1 |tr C|, and tr B_K + tr B_Q when given), against which its drift is measured.
    """
    F, P = forward(data.tokens, h, A, m)
    z = data.y * F
    losses = softplus_neg(z)
    gz = g_of(z)
    types = data.types
    counts = np.bincount(types, minlength=4).astype(np.float64)
    loss_sum = np.bincount(types, weights=losses, minlength=4)
    return {
        "loss": float(losses.mean()),
        "loss_by_type": np.where(counts > 0, loss_sum / np.maximum(counts, 1.0), 0.0),
        "G": np.array(h[:3], dtype=np.float64),
        "attention": np.array(A[:3, :3], dtype=np.float64),
        "value_gram": np.array(C[:3, :3], dtype=np.float64),
        "attention_deviation": float(np.max(np.abs(P - 1.0 / data.L))),
        "g_by_type": np.bincount(types, weights=gz, minlength=4),
        "margins": z,
        "invariants": np.array([S - m1 * np.trace(C), trace_bk_minus_bq], dtype=np.float64),
        "invariant_scale": np.array([abs(S) + m1 * abs(np.trace(C)),
                                     abs(trace_bk_minus_bq) if trace_bk_plus_bq is None
                                     else abs(trace_bk_plus_bq)], dtype=np.float64),
    }


def _jsonable(value):
    """Floats with NaN/inf as None, arrays as lists (JSON-ready)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def relative_drift(invariants: np.ndarray, scale=None) -> list[float]:
    """max_t |I(t) − I(0)| / max(1, scale) per conserved quantity (columns of ``invariants``).

    ``scale`` (one per column) is the size of the terms the invariant is a difference of; by
    default max_t |I(t)|. Floored at 1 so that an invariant near 0 is judged in absolute terms.
    """
    inv = np.asarray(invariants, dtype=np.float64)
    scale = np.abs(inv).max(axis=0) if scale is None else np.asarray(scale, dtype=np.float64)
    return [float(x) for x in np.abs(inv - inv[0]).max(axis=0) / np.maximum(1.0, scale)]


@dataclass(frozen=True)
class Trajectory:
    """A recorded run of one engine; every array has the time axis first (T rows).

    ``t`` is flow time (for gradient descent: epoch × learning rate). ``loss_by_type`` is the mean
    loss over the samples of each type I_1..I_4, ``g_by_type`` the sum of g(y F) over them,
    ``G`` = (G(μ_1), G(μ_2), G(μ_3)), ``attention[:, i, j]`` = μ_iᵀ W_Kᵀ W_Q μ_j and
    ``value_gram[:, i, j]`` = μ_iᵀ W_Vᵀ W_V μ_j for i, j ∈ {1, 2, 3}, ``attention_deviation`` the
    max over samples, keys and queries of |softmax weight − 1/L|, ``margins`` = y_i F(X_i) and
    ``invariants`` = (S − m1 tr C, tr B_K − tr B_Q). ``status`` is ``ok`` or ``failed``.
    """

    engine: str
    settings: dict
    t: np.ndarray
    loss: np.ndarray
    loss_by_type: np.ndarray
    G: np.ndarray
    attention: np.ndarray
    value_gram: np.ndarray
    attention_deviation: np.ndarray
    g_by_type: np.ndarray
    margins: np.ndarray
    invariants: np.ndarray
    status: str = "ok"
    message: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_records(cls, engine, settings, times, records, status="ok", message="", extra=None):
        """Stack a list of :func:`observables` dicts recorded at ``times``."""
        if len(records) != len(times) or not records:
            raise ValueError("a trajectory needs one observables record per time (and at least one)")
        arrays = {k: np.array([r[k] for r in records], dtype=np.float64) for k in SERIES[1:]}
        extra = dict(extra or {})
        if "invariant_scale" in records[0]:
            scales = np.array([r["invariant_scale"] for r in records]).max(axis=0)
            extra.setdefault("invariant_scale", [float(x) for x in scales])
        traj = cls(engine=engine, settings=dict(settings), t=np.asarray(times, dtype=np.float64),
                   status=status, message=message, extra=extra, **arrays)
        traj.check_finite()
        return traj

    def check_finite(self) -> None:
        """Raise FloatingPointError naming the first series with NaN/inf (never silent NaN)."""
        for name in SERIES:
            if not np.all(np.isfinite(getattr(self, name))):
                raise FloatingPointError(f"{self.engine} trajectory: {name} is not finite")

    @property
    def T1(self) -> float | None:
        """First recorded time at which every sample is correctly classified (None if never)."""
        return first_correct_time(self.t, self.margins)

    @property
    def balancing(self) -> np.ndarray:
        """The balancing ratio R(t) at every recorded time (:func:`balancing_ratio` of ``g_by_type``)."""
        return balancing_ratio(self.g_by_type)

    def invariant_drift(self) -> list[float]:
        """Relative drift of the two conserved quantities along the run (see relative_drift)."""
        return relative_drift(self.invariants, self.extra.get("invariant_scale"))

    def columns(self) -> dict:
        """Named arrays for ``np.savez`` (strings as 0-d unicode arrays: loadable without pickle)."""
        cols = {name: np.asarray(getattr(self, name)) for name in SERIES}
        cols["engine"] = np.array(self.engine)
        cols["status"] = np.array(self.status)
        cols["message"] = np.array(self.message)
        cols["settings_json"] = np.array(json.dumps(_jsonable(self.settings), allow_nan=False))
        return cols

    def as_dict(self) -> dict:
        """JSON-ready summary: settings, end values, T₁, invariant drift (no per-time arrays)."""
        return _jsonable({
            "engine": self.engine,
            "settings": self.settings,
            "status": self.status,
            "message": self.message,
            "n_times": int(self.t.size),
            "t_final": self.t[-1],
            "T1": self.T1,
            "initial_loss": self.loss[0],
            "final_loss": self.loss[-1],
            "loss_by_type_final": self.loss_by_type[-1],
            "G_final": self.G[-1],
            "attention_final": self.attention[-1],
            "value_gram_final": self.value_gram[-1],
            "attention_deviation_max": float(self.attention_deviation.max()),
            "invariants_initial": self.invariants[0],
            "invariant_drift": self.invariant_drift(),
            **self.extra,
        })
