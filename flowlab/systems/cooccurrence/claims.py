"""Phases and claims of Yang et al. (NeurIPS 2024) evaluated on a recorded run (MODELS.md §6).

T₁ is the first recorded time at which every sample is classified correctly (y_i F_i > 0); the
Phase-2 window is [T₁, t_end] (the run is read up to its end; the paper's T₂ = poly(m) lies beyond
any run here). Every claim is a dict ``{"id", "statement", "holds", "measured", "expected"}``;
``holds`` is ``None`` when the run cannot decide (no T₁, a Phase 2 too short, attention frozen by
the engine, a loss still falling at the end). All thresholds are fields of :class:`Thresholds`
with stated defaults; they are part of the result's settings.

Index convention: ``attention[:, i, j]`` = μ_{i+1}ᵀ W_Kᵀ W_Q μ_{j+1}; the paper's C_{i1,i2} (the
coefficient of μ_{i1} μ_{i2}ᵀ in W_Kᵀ W_Q) is the change of ``attention[:, i1-1, i2-1]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from flowlab.engine.fit import line_fit

from .trajectory import _jsonable, balancing_ratio, first_correct_time


@dataclass(frozen=True)
class Thresholds:
    """The stated decision thresholds (defaults fixed before looking at any run)."""

    loss_T1_min: float = 0.1  # L̂(T₁) = Θ(1): at least this many nats
    uniform_kappa: float = 1.0  # Phase 1: max |p − 1/L| ≤ kappa / L²
    rise_min: float = 1e-3  # I₂/I₃ hump: peak ≥ (1 + rise_min) × initial loss of the type
    monotone_tol: float = 1e-9  # I₁ falls: no step rises by more than this × its initial loss
    monotone_fraction: float = 0.9  # "increases": net change of that sign and ≥ this fraction of steps
    phase2_min_points: int = 10  # Phase 2 needs this many recorded times ...
    phase2_min_span: float = 2.0  # ... and t_end ≥ this × T₁
    gap_max: float = 0.1  # balancing: |Σ_{I₂}g − Σ_{I₃}g| / min ≤ gap_max ("C ≪ 1")
    r2_min: float = 0.99  # 1/L̂ linear in t: R² of the least-squares line
    final_loss_max: float = 0.01  # near-minimum loss
    still_falling: float = 0.01  # the loss still falls if it dropped by > this fraction over the last 10 %
    drift_max: float = 1e-8  # relative drift of the conserved quantities


@dataclass(frozen=True)
class ClaimsResult:
    settings: dict
    engine: str
    T1: float | None
    final_loss: float
    claims: tuple
    status: str
    message: str

    def as_dict(self) -> dict:
        return _jsonable({"settings": self.settings, "engine": self.engine, "T1": self.T1,
                          "final_loss": self.final_loss, "claims": [dict(c) for c in self.claims],
                          "status": self.status, "message": self.message})


def claim(id_, statement, holds, measured, expected) -> dict:
    return {"id": id_, "statement": statement, "holds": None if holds is None else bool(holds),
            "measured": _jsonable(measured), "expected": expected}


def setting(traj, name, default=None):
    """A size from the trajectory's settings (top level or under ``data``)."""
    s = traj.settings
    if name in s and s[name] is not None:
        return s[name]
    return (s.get("data") or {}).get(name, default)


def phase2_window(traj, T1, th: Thresholds):
    """(index array of Phase 2, reason it is too short or None)."""
    if T1 is None:
        return None, "no T1: the run never classifies every sample correctly"
    idx = np.flatnonzero(traj.t >= T1)
    if idx.size < th.phase2_min_points or traj.t[-1] < th.phase2_min_span * T1:
        return None, (f"Phase 2 too short: {idx.size} recorded times, t_end = {traj.t[-1]:.4g} "
                      f"(need >= {th.phase2_min_points} and t_end >= {th.phase2_min_span:g} T1)")
    return idx, None


def trend(x: np.ndarray, sign: int) -> tuple[float, float]:
    """(net change, fraction of recorded steps moving in the direction ``sign``)."""
    dx = np.diff(x)
    return float(x[-1] - x[0]), float(np.mean(sign * dx > 0)) if dx.size else 0.0


def settled_from(t: np.ndarray, ok: np.ndarray) -> float | None:
    """The first recorded time from which ``ok`` holds to the end of the run (None if not at the end)."""
    if not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    return float(t[0] if bad.size == 0 else t[bad[-1] + 1])


def balancing_gap(g_by_type: np.ndarray) -> np.ndarray:
    g = np.asarray(g_by_type, dtype=np.float64)
    return np.abs(g[:, 1] - g[:, 2]) / np.minimum(g[:, 1], g[:, 2])


def inverse_loss_fit(t: np.ndarray, loss: np.ndarray, points: int = 200) -> dict:
    """Least-squares line through 1/L̂ on a uniform time grid over [t₀, t_end] (interpolated)."""
    grid = np.linspace(t[0], t[-1], points)
    y = np.interp(grid, t, 1.0 / loss)
    slope, intercept, r2 = line_fit(grid, y)
    return {"slope": slope, "intercept": intercept, "r2": r2, "t_from": float(t[0]),
            "t_to": float(t[-1]), "inverse_loss_at_start": float(1.0 / loss[0]),
            "line_at_start": float(slope * t[0] + intercept)}


# ---------------------------------------------------------------- Phase 1


def _phase1_claims(traj, T1, th: Thresholds) -> list:
    m = setting(traj, "m")
    out = [claim("T1", "every sample is classified correctly at some T1 = O~(1/m)", T1 is not None,
                 {"T1": T1, "T1_times_m": None if T1 is None or m is None else T1 * m,
                  "T1_stable": settled_from(traj.t, np.all(traj.margins > 0, axis=1))},
                 "T1 exists; T1*m roughly constant across m (scaling)")]
    i1 = None if T1 is None else int(np.searchsorted(traj.t, T1))
    G = None if i1 is None else traj.G[i1]
    out.append(claim("signs_G_T1", "G(mu1), G(mu2) > 0 > G(mu3) at T1",
                     None if G is None else G[0] > 0 and G[1] > 0 and G[2] < 0,
                     None if G is None else {"G": G}, "G1 > 0, G2 > 0, G3 < 0"))
    out.append(claim("loss_T1", "the loss is still large at T1: L(T1) = Theta(1)",
                     None if i1 is None else traj.loss[i1] >= th.loss_T1_min,
                     None if i1 is None else {"loss_T1": traj.loss[i1], "loss_0": traj.loss[0]},
                     f"L(T1) >= {th.loss_T1_min:g} nats"))
    L = setting(traj, "L")
    frozen = bool(np.ptp(traj.attention, axis=0).max() == 0.0 and np.max(traj.attention_deviation) == 0.0)
    dev = None if i1 is None else float(np.max(traj.attention_deviation[: i1 + 1]))
    decided = i1 is not None and L is not None and not frozen
    out.append(claim("attention_uniform_phase1", "attention stays near uniform in Phase 1: max |p - 1/L| = O(1/L^2)",
                     dev <= th.uniform_kappa / L**2 if decided else None,
                     {"max_deviation": dev, "deviation_times_L2": None if dev is None or L is None else dev * L**2,
                      "frozen_by_engine": frozen}, f"max |p - 1/L| <= {th.uniform_kappa:g}/L^2"))
    out += _phase1_losses(traj, i1, th)
    return out


def _phase1_losses(traj, i1, th: Thresholds) -> list:
    if i1 is None:
        return [claim("loss_I1_falls", "the loss of type I1 falls from the start", None, None, "decreasing on [0, T1]"),
                claim("loss_I2_I3_hump", "the losses of types I2 and I3 first rise, then fall (in Phase 1)", None,
                      None, "peak inside (0, T1)")]
    l1 = traj.loss_by_type[: i1 + 1, 0]
    rise = float(np.max(np.diff(l1))) if l1.size > 1 else 0.0
    falls = l1.size > 1 and rise <= th.monotone_tol * l1[0] and l1[1] < l1[0]
    out = [claim("loss_I1_falls", "the loss of type I1 falls from the start", falls,
                 {"largest_step_rise": rise, "loss_0": l1[0], "loss_T1": l1[-1]},
                 f"no step rises by more than {th.monotone_tol:g} x L_I1(0), and the first step falls")]
    meas, ok = {}, True
    for k, name in ((1, "I2"), (2, "I3")):
        lk = traj.loss_by_type[: i1 + 1, k]
        p = int(np.argmax(lk))
        meas[name] = {"loss_0": lk[0], "peak": lk[p], "t_peak": traj.t[p], "t_peak_over_T1": traj.t[p] / traj.t[i1],
                      "loss_T1": lk[-1]}
        ok = ok and lk[p] >= (1 + th.rise_min) * lk[0] and 0 < p < lk.size - 1 and lk[-1] < lk[p]
    out.append(claim("loss_I2_I3_hump", "the losses of types I2 and I3 first rise, then fall (in Phase 1)", ok, meas,
                     f"peak >= (1 + {th.rise_min:g}) x initial, inside (0, T1), lower again at T1"))
    return out


# ---------------------------------------------------------------- Phase 2

#: (id, statement, series, index, direction): the correlations of Theorem 3.2.
CORRELATIONS = (
    ("attn_21_up", "mu2^T W_K^T W_Q mu1 increases in Phase 2", "attention", (1, 0), 1),
    ("attn_12_up", "mu1^T W_K^T W_Q mu2 increases in Phase 2", "attention", (0, 1), 1),
    ("attn_31_down", "mu3^T W_K^T W_Q mu1 decreases in Phase 2", "attention", (2, 0), -1),
    ("attn_32_down", "mu3^T W_K^T W_Q mu2 decreases in Phase 2", "attention", (2, 1), -1),
    ("value_12_up", "mu1^T W_V^T W_V mu2 increases in Phase 2", "value_gram", (0, 1), 1),
    ("value_13_down", "mu1^T W_V^T W_V mu3 decreases in Phase 2", "value_gram", (0, 2), -1),
    ("value_23_down", "mu2^T W_V^T W_V mu3 decreases in Phase 2", "value_gram", (1, 2), -1),
)


def _correlation_claims(traj, idx, why, th: Thresholds) -> list:
    frozen = bool(np.ptp(traj.attention, axis=0).max() == 0.0)
    out = []
    for id_, statement, series, (i, j), sign in CORRELATIONS:
        word = "increasing" if sign > 0 else "decreasing"
        expected = f"net change {'> 0' if sign > 0 else '< 0'} and >= {th.monotone_fraction:g} of the steps {word}"
        if idx is None or (series == "attention" and frozen):
            reason = why if idx is None else "attention is frozen in this engine"
            out.append(claim(id_, statement, None, {"undecided": reason}, expected))
            continue
        x = getattr(traj, series)[idx, i, j]
        net, frac = trend(x, sign)
        out.append(claim(id_, statement, sign * net > 0 and frac >= th.monotone_fraction,
                         {"at_T1": x[0], "at_end": x[-1], "net_change": net, "fraction_of_steps": frac}, expected))
    return out


def _balancing_claims(traj, idx, why, th: Thresholds) -> list:
    gap_stmt = "automatic balancing: |sum_I2 g - sum_I3 g| / min(sum_I2 g, sum_I3 g) stays small in Phase 2"
    r_stmt = "R(t) = (sum_{I2,I3,I4} g - sum_I1 g) / (sum_I1 g - sum_I2 g) lies in (1, 2) in Phase 2"
    if idx is None:
        return [claim("balancing_gap", gap_stmt, None, {"undecided": why}, f"max gap <= {th.gap_max:g}"),
                claim("balancing_ratio", r_stmt, None, {"undecided": why}, "1 < R(t) < 2 on the whole window")]
    gap = balancing_gap(traj.g_by_type[idx])
    R = balancing_ratio(traj.g_by_type[idx])
    inside = (R > 1) & (R < 2)
    finite = np.isfinite(R)
    return [
        claim("balancing_gap", gap_stmt, float(np.max(gap)) <= th.gap_max,
              {"max_gap": float(np.max(gap)), "gap_at_T1": gap[0], "gap_at_end": gap[-1]},
              f"max gap <= {th.gap_max:g}"),
        claim("balancing_ratio", r_stmt, bool(np.all(inside)),
              {"fraction_inside": float(np.mean(inside)), "min": float(np.min(R[finite])) if finite.any() else None,
               "max": float(np.max(R[finite])) if finite.any() else None, "at_end": R[-1],
               "undefined_points": int(np.sum(~finite)), "settled_from": settled_from(traj.t[idx], inside)},
              "1 < R(t) < 2 on the whole window"),
    ]


def _loss_claims(traj, idx, why, th: Thresholds) -> list:
    stmt = "1/L(t) is linear in t in Phase 2: L(t) ~ 1/(c (t - T1) + 1/L(T1))"
    if idx is None:
        fit = claim("inverse_loss_linear", stmt, None, {"undecided": why}, f"R^2 >= {th.r2_min:g}, slope > 0")
        margins = claim("margins_phase2", "every sample stays correctly classified in Phase 2", None,
                        {"undecided": why}, "min y_i F_i > 0 on the window")
    else:
        f = inverse_loss_fit(traj.t[idx], traj.loss[idx])
        fit = claim("inverse_loss_linear", stmt, f["r2"] is not None and f["r2"] >= th.r2_min and f["slope"] > 0,
                    f, f"R^2 >= {th.r2_min:g}, slope > 0")
        low = float(np.min(traj.margins[idx]))
        margins = claim("margins_phase2", "every sample stays correctly classified in Phase 2", low > 0,
                        {"min_margin": low}, "min y_i F_i > 0 on the window")
    final = float(traj.loss[-1])
    tail = traj.loss[traj.t >= 0.9 * traj.t[-1]]
    falling = tail.size > 1 and tail[-1] < (1 - th.still_falling) * tail[0]
    holds = True if final <= th.final_loss_max else (None if falling else False)
    near = claim("final_loss", "near-minimum training loss at T* = poly(m)", holds,
                 {"final_loss": final, "t_end": traj.t[-1], "still_falling": bool(falling)},
                 f"L(t_end) <= {th.final_loss_max:g} (undecided while still falling by > "
                 f"{th.still_falling:g} over the last 10 % of the run)")
    return [margins, fit, near]


def _attention_form_claim(traj) -> dict:
    stmt = ("trained W_K^T W_Q = initial + sum C_{i1,i2} mu_i1 mu_i2^T with C_12, C_21 > 0 and C_31, C_32 < 0 "
            "(Theorem 3.3)")
    if np.ptp(traj.attention, axis=0).max() == 0.0:
        return claim("attention_final_form", stmt, None, {"undecided": "attention is frozen in this engine"},
                     "C_12, C_21 > 0 > C_31, C_32")
    C = traj.attention[-1] - traj.attention[0]
    coeff = {"C_12": C[0, 1], "C_21": C[1, 0], "C_31": C[2, 0], "C_32": C[2, 1]}
    return claim("attention_final_form", stmt, C[0, 1] > 0 and C[1, 0] > 0 and C[2, 0] < 0 and C[2, 1] < 0,
                 {**coeff, "C_3x3": C}, "C_12, C_21 > 0 > C_31, C_32")


def _invariant_claim(traj, th: Thresholds) -> dict:
    drift = traj.invariant_drift()
    discrete = traj.engine.endswith("_gd")
    stmt = "S - m1 tr C and tr B_K - tr B_Q are conserved by gradient flow"
    if discrete:
        return claim("invariants", stmt, None, {"relative_drift": drift, "undecided": "gradient descent (not a flow) "
                     "conserves them only up to O(lr) per unit time"}, f"relative drift <= {th.drift_max:g}")
    return claim("invariants", stmt, max(drift) <= th.drift_max, {"relative_drift": drift},
                 f"relative drift <= {th.drift_max:g}")


def evaluate_claims(traj, thresholds: Thresholds | None = None) -> ClaimsResult:
    """Evaluate every claim of MODELS.md §6 on a :class:`Trajectory`."""
    th = Thresholds() if thresholds is None else thresholds
    T1 = first_correct_time(traj.t, traj.margins)
    idx, why = phase2_window(traj, T1, th)
    claims = (_phase1_claims(traj, T1, th) + _correlation_claims(traj, idx, why, th)
              + _balancing_claims(traj, idx, why, th) + _loss_claims(traj, idx, why, th)
              + [_attention_form_claim(traj), _invariant_claim(traj, th)])
    counts = {v: sum(c["holds"] is v for c in claims) for v in (True, False, None)}
    message = (f"{counts[True]} of {len(claims)} claims hold, {counts[False]} do not, {counts[None]} undecided"
               + (f"; the run: {traj.message}" if traj.message else ""))
    settings = {"trajectory": traj.settings, "thresholds": asdict(th)}
    final = float(traj.loss[-1])
    return ClaimsResult(settings=settings, engine=traj.engine, T1=T1, final_loss=final if math.isfinite(final) else None,
                        claims=tuple(claims), status=traj.status, message=message)


def claims_table(result: ClaimsResult) -> list[str]:
    """Markdown table rows: id, holds, statement."""
    mark = {True: "yes", False: "**no**", None: "undecided"}
    rows = ["| claim | holds | statement |", "|---|---|---|"]
    rows += [f"| `{c['id']}` | {mark[c['holds']]} | {c['statement'].replace('|', chr(92) + '|')} |"
             for c in result.claims]
    return rows


# ---------------------------------------------------------------- running an engine

ENGINES = ("full", "gram", "reduced")
#: The paper's setting (Appendix A) and its run length in flow time (30 000 epochs × lr 0.01).
PAPER = {"n": 60, "L": 5, "d": 64, "m": 128, "m1": 256, "lr": 0.01, "epochs": 30_000}
PAPER_T_MAX = PAPER["lr"] * PAPER["epochs"]


def run_engine(engine: str, *, n=60, L=5, d=64, m=128, m1=256, seed=0, t_max=PAPER_T_MAX, points=600,
               lr=PAPER["lr"], epochs=None, quiet=True):
    """One run of ``engine`` on the training set of (n, L, d) from the seeded initialisation.

    ``full``: gradient descent on Eq. 1 from the paper's Kaiming initialisation (lr, epochs =
    t_max / lr by default; recorded every epoch for the first FINE_EPOCHS so that T₁ ~ 1/m is
    resolved), the paper's experiment; ``gram``: the exact Gram flow from Wishart Grams
    (σ_0 = 1/√(Lm), σ_1 = 1/√m1; T₁ located by an event) to t_max; ``reduced``: the 13-scalar
    phase model (same σ's) to t_max.
    """
    from flowlab.engine.errors import FlowlabInputError

    if engine not in ENGINES:
        raise FlowlabInputError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    _check_run_size(n, m, m1, t_max)
    if engine == "reduced":
        from .reduced import reduced_flow

        return reduced_flow(n, L, m, m1, seed=seed, t_max=t_max, points=points)
    from .data import training_set

    data = training_set(n, L, d, seed)
    if engine == "full":
        from .full import PAPER_INIT, _check_gd, gradient_descent, init_weights

        if not (isinstance(lr, (int, float)) and 0 < lr < float("inf")):
            raise FlowlabInputError(f"lr must be a finite number > 0, got {lr!r}")
        epochs = int(round(t_max / lr)) if epochs is None else epochs
        weights = init_weights(d, m, m1, L=L, seed=seed, init=PAPER_INIT)
        _check_gd(data, weights, lr, epochs, COARSE_EVERY)  # the whole run's budget, before any work
        run = {"seed": seed, "init": PAPER_INIT, "total_epochs": epochs}
        first = min(epochs, FINE_EPOCHS)
        head, weights = gradient_descent(data, weights, lr=lr, epochs=first, record_every=1, quiet=quiet, settings=run)
        if first == epochs:
            return head
        tail, _ = gradient_descent(data, weights, lr=lr, epochs=epochs - first, record_every=COARSE_EVERY,
                                   quiet=quiet, settings=run)
        return concatenate(head, tail)
    from .gram import gram_flow, wishart_grams

    state = wishart_grams(d, m, m1, L=L, seed=seed, init="paper")
    return gram_flow(data, state, m, m1, t_max=t_max, n_out=points, quiet=quiet,
                     settings={"seed": seed, "init": "paper"})


#: Limits of one run (the paper: n = 60, m = 128, m1 = 256, t_max = 300; the issue's largest width
#: m = 10^6, m1 = 10^4 takes seconds). Beyond them the cost is not estimated, so the run is refused.
MAX_RUN = {"n": 10_000, "m": 10**7, "m1": 10**7, "t_max": 1e5}


def _check_run_size(n, m, m1, t_max) -> None:
    from flowlab.engine.errors import FlowlabInputError

    for name, value in (("n", n), ("m", m), ("m1", m1), ("t_max", t_max)):
        if isinstance(value, (int, float)) and value > MAX_RUN[name]:
            raise FlowlabInputError(
                f"{name} = {value!r} is above the limit {MAX_RUN[name]!r} of one run (the paper uses n = 60, m = 128, "
                "m1 = 256, t_max = 300; the Gram flow at m = 1e6, m1 = 1e4 takes seconds): beyond it the cost is "
                "not estimated, so the run is refused before it starts"
            )


#: Gradient descent is recorded every epoch for the first FINE_EPOCHS epochs (T₁ ~ 1/m is a few
#: epochs), then every COARSE_EVERY epochs.
FINE_EPOCHS, COARSE_EVERY = 1000, 25


def concatenate(head, tail):
    """``tail`` (started from the end of ``head``) appended to ``head``, its times shifted."""
    import dataclasses

    from .trajectory import SERIES

    series = {name: np.concatenate([getattr(head, name), getattr(tail, name)[1:]]) for name in SERIES[1:]}
    t = np.concatenate([head.t, head.t[-1] + tail.t[1:]])
    status = "ok" if head.status == tail.status == "ok" else "failed"
    message = "; ".join(x for x in (head.message, tail.message) if x)
    return dataclasses.replace(head, t=t, status=status, message=message, **series)


def subsample(traj, points: int = 600, keep=()):
    """The trajectory at about 2·points recorded times (uniform ∪ geometric, plus ``keep`` times)."""
    import dataclasses

    from .trajectory import SERIES

    t = traj.t
    if t.size <= 2 * points:
        return traj
    targets = np.concatenate([np.linspace(t[0], t[-1], points), np.geomspace(max(t[1], 1e-300), t[-1], points),
                              [x for x in keep if x is not None]])
    idx = np.unique(np.clip(np.searchsorted(t, targets), 0, t.size - 1))
    return dataclasses.replace(traj, **{name: getattr(traj, name)[idx] for name in SERIES})
