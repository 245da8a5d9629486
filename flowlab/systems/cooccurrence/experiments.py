"""Experiments on the co-occurrence system: engine runs, full flow vs Gram flow, T₁ scaling in m.

* :func:`compare` — the full-model gradient flow and the Gram flow from the *same* initial
  weights, on the same output times: ``max_rel_diff`` of the loss and of every observable, and the
  invariant drift of both runs.
* :func:`training_check` — the paper's GD run against the Gram flow from its initial weights, at
  flow time t = epoch × lr (they differ by the O(lr) discretisation error of GD).
* :func:`scaling` — the Gram flow at several widths m: T₁ (first time every sample is correctly
  classified, located by an event) and the least-squares fit log T₁ = α log m + b with R².
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flowlab.engine.checks import integer, real_number
from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.fit import line_fit

from .data import training_set
from .full import PAPER_INIT, gradient_descent, gradient_flow, init_weights
from .gram import gram_flow, grams_from_weights, time_unit, wishart_grams
from .trajectory import Trajectory, _jsonable

#: Observables compared by :func:`compare` (besides the loss, which is compared pointwise).
COMPARED = ("loss_by_type", "G", "attention", "value_gram", "attention_deviation", "g_by_type",
            "margins", "invariants")
#: compare's target on the loss (MODELS.md §6 / issue 13).
COMPARE_TARGET = 1e-6


def max_rel_diff(reference: Trajectory, other: Trajectory) -> dict:
    """Differences of two runs recorded at the same times, relative to the reference.

    ``loss``: max_t |ΔL̂(t)| / L̂_ref(t); every other observable X: max_t ‖ΔX(t)‖_∞ / max_t ‖X_ref(t)‖_∞
    (the invariants: / max(1, …)).
    """
    if reference.t.shape != other.t.shape or not np.allclose(reference.t, other.t, rtol=1e-12):
        raise FlowlabInputError("the two runs must be recorded at the same times")
    out = {"loss": float(np.max(np.abs(other.loss - reference.loss) / reference.loss))}
    for name in COMPARED:
        ref, oth = getattr(reference, name), getattr(other, name)
        floor = 1.0 if name == "invariants" else 1e-300
        out[name] = float(np.max(np.abs(oth - ref)) / max(floor, float(np.max(np.abs(ref)))))
    return out


@dataclass(frozen=True)
class CompareResult:
    """Two runs from the same initial point at the same times: ``reference`` and ``other``.

    ``max_rel_diff`` is :func:`max_rel_diff` (other against reference), ``invariant_drift`` maps
    each run's engine to its relative invariant drift.
    """

    settings: dict
    max_rel_diff: dict
    invariant_drift: dict
    status: str
    message: str
    reference: Trajectory = field(repr=False, default=None)
    other: Trajectory = field(repr=False, default=None)

    def as_dict(self) -> dict:
        runs = [r for r in (self.reference, self.other) if r is not None]
        return _jsonable({"settings": self.settings, "max_rel_diff": self.max_rel_diff,
                          "invariant_drift": self.invariant_drift,
                          "T1": {r.engine: r.T1 for r in runs},
                          "final_loss": {r.engine: r.loss[-1] for r in runs},
                          "status": self.status, "message": self.message})


def _compared(settings, reference, other, target, label):
    """The CompareResult of two finished runs; status ``ok`` when the loss is within target."""
    if reference.status != "ok" or other.status != "ok" or reference.t.size != other.t.size:
        return CompareResult(settings, {}, {}, "failed",
                             f"integration failed: {reference.engine}: {reference.message}; "
                             f"{other.engine}: {other.message}", reference, other)
    diff = max_rel_diff(reference, other)
    drift = {reference.engine: reference.invariant_drift(), other.engine: other.invariant_drift()}
    ok = target is None or diff["loss"] <= target
    bound = "" if target is None else f" (target {target:g})"
    message = (f"{label}: the loss differs by at most {diff['loss']:.2g} relative{bound}"
               + ("" if ok else ", above the target"))
    return CompareResult(settings, diff, drift, "ok" if ok else "mismatch", message, reference,
                         other)


def compare(m: int = 16, m1: int = 32, *, n: int = 12, L: int = 4, d: int = 40, seed: int = 0,
            init: str = "paper", t_units: float = 1e4, n_out: int = 60,
            rtol: float = 1e-11) -> CompareResult:
    """Full gradient flow vs Gram flow from the same initial weights (module docstring).

    The run lasts ``t_units`` time units (gram.time_unit of the initial state) with ``n_out``
    log-spaced output times; status ``ok`` when the loss agrees to COMPARE_TARGET relative.
    """
    t_units = real_number(t_units, "t_units")
    if not 1e-2 <= t_units <= 1e8:
        raise FlowlabInputError(f"t_units must lie in [1e-2, 1e8], got {t_units!r}")
    n_out = integer(n_out, "n_out", 3, 10_000)
    data = training_set(n, L, d, seed)
    weights = init_weights(d, m, m1, L=L, seed=seed, init=init)
    state = grams_from_weights(weights)
    unit = time_unit(state, weights.m1)
    grid = np.r_[0.0, np.geomspace(1e-3 * unit, t_units * unit, n_out - 1)]
    full_run = gradient_flow(data, weights, grid, rtol=rtol, atol=1e-14)[0]
    gram_run = gram_flow(data, state, weights.m, weights.m1, t_eval=grid, rtol=rtol,
                         record_events=False)
    settings = {"m": weights.m, "m1": weights.m1, "n": data.n, "L": data.L, "d": data.d,
                "seed": seed, "init": init, "t_final": float(grid[-1]), "time_unit": unit,
                "n_out": n_out, "rtol": rtol}
    return _compared(settings, full_run, gram_run, COMPARE_TARGET,
                     "full gradient flow vs Gram flow")


def training_check(*, n: int = 60, L: int = 5, d: int = 64, m: int = 128, m1: int = 256,
                   seed: int = 0, init: str = PAPER_INIT, lr: float = 0.01, epochs: int = 30_000,
                   record_every: int = 100, quiet: bool = True) -> CompareResult:
    """GD (the paper's settings) vs the Gram flow from the same weights at t = epoch × lr.

    The difference is GD's discretisation error (O(lr) in the loss); no target is imposed: the
    status is ``ok`` when both runs completed, and the numbers are the result.
    """
    data = training_set(n, L, d, seed)
    weights = init_weights(d, m, m1, L=L, seed=seed, init=init)
    gd, _ = gradient_descent(data, weights, lr=lr, epochs=epochs, record_every=record_every,
                             quiet=quiet, settings={"seed": seed, "init": init})
    gram = gram_flow(data, grams_from_weights(weights), m, m1, t_eval=gd.t, quiet=quiet,
                     record_events=False)
    settings = {"n": n, "L": L, "d": d, "m": m, "m1": m1, "seed": seed, "init": init, "lr": lr,
                "epochs": epochs}
    return _compared(settings, gram, gd, None, f"GD (lr {lr:g}) vs Gram flow")


@dataclass(frozen=True)
class ScalingResult:
    """T₁ of the Gram flow at several widths and the fit T₁ ∝ m^α."""

    settings: dict
    m: tuple
    T1: tuple
    alpha: float | None
    intercept: float | None
    r2: float | None
    status: str
    message: str

    def as_dict(self) -> dict:
        return _jsonable({"settings": self.settings, "m": list(self.m), "T1": list(self.T1),
                          "T1_times_m": [None if t is None else t * w
                                         for t, w in zip(self.T1, self.m)],
                          "alpha": self.alpha, "intercept": self.intercept, "r2": self.r2,
                          "paper_alpha": -1.0, "status": self.status, "message": self.message})


def power_fit(x, y):
    """Least squares log y = α log x + b: (α, b, R²); R² is None when log y is constant."""
    return line_fit(np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64)))


def scaling(ms=(64, 256, 1024, 4096), *, m1: int = 256, n: int = 60, L: int = 5, d: int = 64,
            seed: int = 0, init: str = "paper", quiet: bool = True) -> ScalingResult:
    """T₁ per width m (Gram flow from Wishart Grams drawn with ``seed``) and the fitted α.

    Each run stops once the loss is below log(2)/(2n), which implies every margin is > 0, so T₁
    (the first up-crossing of min_i y_i F_i through 0, an integration event) is always inside it.
    """
    ms = tuple(integer(w, "m", 1) for w in ms)
    if len(ms) < 2 or len(set(ms)) != len(ms):
        raise FlowlabInputError(f"scaling needs at least two distinct widths m, got {list(ms)}")
    data = training_set(n, L, d, seed)
    t1s = []
    for w in ms:
        state = wishart_grams(d, w, m1, L=L, seed=seed, init=init)
        traj = gram_flow(data, state, w, m1, loss_target=math.log(2.0) / (2 * data.n),
                         n_out=60, quiet=quiet, record_events=False)
        t1s.append(traj.extra["T1_event"])
    settings = {"m1": m1, "n": data.n, "L": data.L, "d": data.d, "seed": seed, "init": init}
    found = [(w, t) for w, t in zip(ms, t1s) if t is not None and t > 0]
    if len(found) < 2:
        return ScalingResult(settings, ms, tuple(t1s), None, None, None, "undetermined",
                             "fewer than two widths have a positive T1: no fit")
    alpha, b, r2 = power_fit(*zip(*found))
    return ScalingResult(settings, ms, tuple(t1s), alpha, b, r2, "ok",
                         f"T1 ∝ m^{alpha:.3f} (R² {r2 if r2 is None else round(r2, 4)}) over "
                         f"{len(found)} widths; the paper: α ≈ −1 up to log factors")
