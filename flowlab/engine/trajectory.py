"""One gradient-flow trajectory of any :class:`~flowlab.engine.system.System`, with SciPy's ``solve_ivp``.

The flow is d theta / dt = -grad L(theta). Integration stops when the gradient norm falls
below ``grad_tol`` (a terminal event) or at ``t_max``, within a budget of accepted steps and
wall time. The end point is then classified against the system's
:class:`~flowlab.engine.system.Reference`: ``global`` (the loss equals the optimal loss within
the reference's tolerance, or every critical point is global), ``local`` (a non-global critical
point that is a minimum: positive definite Hessian, or positive semi-definite with a
higher-order test on small spheres), or ``undetermined`` (not converged, a saddle-type end
point, an unknown optimal loss, or a system whose losses cannot tell its critical sets apart).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from flowlab.engine.checks import (
    UNDEFINED_HINT,
    FlowlabInputError,
    finite_array,
    format_point,
    integer,
    real_number,
    require_finite,
)
from flowlab.engine.defaults import FLOW_BUDGET, FLOW_METHODS
from flowlab.engine.io import json_float
from flowlab.engine.system import Reference

#: solve_ivp methods accepted by :func:`gradient_flow` (SciPy's registry; shared with the CLI).
METHODS = FLOW_METHODS

#: Default budget of one flow: accepted solver steps (deterministic) and wall time. Measured on the Markov
#: system: flows of ew, ewb, ewa from random starts in [-3, 3]^n converge in 24-213 DOP853 steps; a step
#: costs 0.5-1.3 ms (ewb at e=50, w=-50, b=50: 200000 steps, still not converged, in 98 s of CPU), so 20000
#: steps are about 100 times a typical flow and at most about half a minute. Stiff flows (large |theta|)
#: converge with an implicit method: method LSODA there takes 4058 steps.
MAX_STEPS = FLOW_BUDGET["max_steps"]
MAX_SECONDS = FLOW_BUDGET["max_seconds"]
#: Gradient evaluations of a typical flow (about 100 DOP853 steps of 13 evaluations: 12 stages and the
#: convergence event); a flow whose first evaluation says it would exceed max_seconds is refused up front
#: (the Markov system at ``--context 4096`` of ewa: 0.76 s per evaluation, about 16 minutes).
TYPICAL_EVALUATIONS = 1300


def undefined_hint(system, theta) -> str:
    """Why the loss may be undefined at ``theta``: the system's own words if it has them, else the generic ones."""
    hint = getattr(system, "undefined_hint", None)
    return hint(theta) if callable(hint) else UNDEFINED_HINT


class _OutOfBudget(Exception):
    """Raised inside solve_ivp's callbacks to stop a flow that exceeded its budget."""


class _Budget:
    """Runs solve_ivp within a step and time budget, keeping the accepted steps.

    solve_ivp evaluates the terminal event once per accepted step (and at the start), so the
    event counts and records steps; the right-hand side checks the clock (a step can be rejected
    many times) and remembers the last point where the gradient was not finite.
    """

    def __init__(self, system, t_max, max_steps, max_seconds, progress):
        from tqdm import tqdm

        self.system, self.t_max, self.max_steps, self.max_seconds = system, t_max, max_steps, max_seconds
        self.clock = time.perf_counter
        self.start = self.clock()
        self.ts, self.ys, self.nfev, self.nonfinite, self.dense = [], [], 0, None, None
        self.bar = tqdm(total=t_max, desc="flow", unit="t", disable=not progress, delay=2.0, mininterval=1.0,
                        leave=False, bar_format="{desc}: t = {n:.4g} of {total:.4g} [{elapsed}, {postfix}]")

    def elapsed(self) -> float:
        return self.clock() - self.start

    def rhs(self, t, y):
        """-grad L(y); NaN (a rejected step) where y or the gradient is not finite."""
        self.nfev += 1
        if self.max_seconds is not None and self.elapsed() > self.max_seconds:
            raise _OutOfBudget(f"max_seconds = {self.max_seconds:g}")
        if not np.all(np.isfinite(y)):  # a trial point beyond float64: the system is never asked there
            return np.full(y.shape, np.nan)
        with np.errstate(all="ignore"):  # non-finite values are handled (the solver rejects the step)
            out = -np.asarray(self.system.gradient(y), dtype=np.float64)
        if not np.all(np.isfinite(out)):
            self.nonfinite = (t, np.array(y, dtype=np.float64))
        return out

    def step(self, t, y):
        if self.ts and t <= self.ts[-1]:
            return  # an evaluation inside the last step (event location), not a new step
        self.ts.append(float(t))
        self.ys.append(np.array(y, dtype=np.float64))
        if len(self.ts) > self.max_steps:
            raise _OutOfBudget(f"max_steps = {self.max_steps}")
        self.bar.update(float(t) - self.bar.n)
        self.bar.set_postfix_str(f"{len(self.ts)} steps", refresh=False)

    def integrate(self, theta0, *, method, rtol, atol, grad_tol, dense_output=None):
        """(t, ys, nfev, status, message) of the flow from ``theta0``; with ``dense_output`` = N also
        ``self.dense``: (times, states) sampled from the solver's interpolant (:func:`dense_times`)."""
        from scipy.integrate import solve_ivp

        def converged(t, y):
            self.step(t, y)
            return float(np.linalg.norm(self.rhs(t, y))) - grad_tol

        converged.terminal = True
        converged.direction = -1
        try:
            sol = solve_ivp(self.rhs, (0.0, self.t_max), theta0, method=method, rtol=rtol, atol=atol,
                            events=converged, dense_output=bool(dense_output))
        except _OutOfBudget as stop:
            t, ys = np.array(self.ts), np.array(self.ys)
            return t, ys, self.nfev, "budget", (
                f"stopped by the budget ({stop}) after {len(self.ts) - 1} steps and {self.elapsed():.3g} s, "
                f"at t = {t[-1]:.6g}, not converged (raise max_steps/max_seconds, --max-steps/--max-seconds; "
                "a stiff flow, e.g. from large |theta|, converges faster with method LSODA or Radau)")
        finally:
            self.bar.close()
        t, ys = sol.t, sol.y.T
        if dense_output and sol.sol is not None and sol.status >= 0:
            times = dense_times(t, dense_output)
            states = sol.sol(times).T
            states[-1] = ys[-1]  # the end point exactly as stepped to
            self.dense = (times, states)
        if sol.status == 1:
            return t, ys, int(sol.nfev), "converged", f"gradient norm below {grad_tol:g} at t = {t[-1]:.6g}"
        if sol.status == 0:
            return t, ys, int(sol.nfev), "t_max", f"t_max = {self.t_max:g} reached before convergence"
        params = self.system.params
        message = f"solver failed at t = {t[-1]:.6g}, {format_point(params, ys[-1])}: {sol.message}"
        if self.nonfinite is not None:
            message += (f"; the gradient is not finite at {format_point(params, self.nonfinite[1])} "
                        f"(a trial point near t = {self.nonfinite[0]:.6g}): the flow runs into a region where the "
                        f"loss is undefined ({undefined_hint(self.system, self.nonfinite[1])})")
        return t, ys, int(sol.nfev), "failed", message


def dense_times(steps, n: int) -> np.ndarray:
    """Times at which to sample a flow's interpolant: ``n`` points evenly spaced in log(1 + t / t_1)
    (t_1 the first step: linear near 0, logarithmic after, as a loss curve's time axis), merged with
    the solver's own step times ``steps``, sorted and unique, within [0, steps[-1]]."""
    steps = np.asarray(steps, dtype=np.float64)
    end = float(steps[-1])
    if end <= 0:
        return steps.copy()
    t1 = float(steps[1]) if len(steps) > 1 and steps[1] > 0 else end
    grid = t1 * np.expm1(np.linspace(0.0, np.log1p(end / t1), int(n)))
    return np.unique(np.clip(np.concatenate([steps, grid]), 0.0, end))



@dataclass(frozen=True)
class FlowResult:
    """A trajectory of a system and its verdict. ``status`` is 'converged', 't_max', 'budget' or 'failed'.

    ``system`` is the system's :meth:`~flowlab.engine.system.System.describe` (JSON-ready), ``reference``
    the levels the verdict ``reached`` rests on; ``invariants`` and ``observables`` are arrays along
    the trajectory. Frozen and picklable (arrays, dicts and a Reference only).
    """

    system: dict
    reference: Reference
    params: tuple[str, ...]
    t: np.ndarray
    theta: np.ndarray  # (n_steps, n_params)
    loss: np.ndarray
    gradient_norm: float
    reached: str
    status: str
    message: str
    nfev: int
    invariants: dict[str, np.ndarray] = field(default_factory=dict)
    observables: dict[str, np.ndarray] = field(default_factory=dict)
    #: With ``gradient_flow(..., dense_output=N)``: the path sampled from the solver's interpolant
    #: (plain arrays: times, states (k, n_params), losses), for smooth curves; None otherwise.
    dense_t: np.ndarray | None = None
    dense_theta: np.ndarray | None = None
    dense_loss: np.ndarray | None = None

    @property
    def success(self) -> bool:
        return self.status == "converged"

    @property
    def final(self) -> dict[str, float]:
        return dict(zip(self.params, self.theta[-1].tolist()))

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])

    def invariant_drift(self) -> dict[str, float | None]:
        """max_t |I(t) - I(0)| for each invariant (None where I is undefined)."""
        out = {}
        for name, values in self.invariants.items():
            drift = np.max(np.abs(values - values[0]))
            out[name] = float(drift) if np.isfinite(drift) else None
        return out

    @property
    def energy_drift(self) -> float | None:
        return self.invariant_drift().get("E")

    def as_dict(self) -> dict:
        """JSON-ready: the system's identity (``system``, ``model``, ``chain``, ...) merged at the top level."""
        return {
            **self.system,
            "params": list(self.params),
            "initial": dict(zip(self.params, self.theta[0].tolist())),
            "final": self.final,
            "loss": self.final_loss,
            "initial_loss": float(self.loss[0]),
            "optimal_loss": self.reference.optimal_loss,
            "reference": self.reference.as_dict(),
            "gradient_norm": json_float(self.gradient_norm),
            "reached": self.reached,
            "status": self.status,
            "success": self.success,
            "message": self.message,
            "t_final": float(self.t[-1]),
            "steps": int(self.t.size),
            "nfev": self.nfev,
            "energy_drift": self.energy_drift,
            "invariant_drift": self.invariant_drift(),
            "observables": {name: json_float(values[-1]) for name, values in self.observables.items()},
        }

    def columns(self) -> dict[str, np.ndarray]:
        """The trajectory as named columns: t, parameters, loss, invariants."""
        cols = {"t": self.t}
        cols.update({name: self.theta[:, i] for i, name in enumerate(self.params)})
        cols["loss"] = self.loss
        cols.update(self.invariants)
        return cols


def _loss_verdict(ref: Reference, loss: float, loss_tol: float):
    """The verdict losses alone give ((reached, reason) or None), and the end point's name."""
    if ref.all_global is not None:
        return ("global", ref.all_global), None
    if ref.unresolved is not None:
        return ("undetermined", ref.unresolved), None
    level = ref.nonglobal_level
    if ref.optimal_loss is not None and level is not None and level - ref.optimal_loss < 100 * loss_tol:
        name = min(ref.levels, key=ref.levels.get)
        return ("undetermined", f"the {name} level - the optimal loss = {level - ref.optimal_loss:.3g} is too small "
                f"to tell the sets apart at loss_tol={loss_tol:g}"), None
    if ref.optimal_loss is not None and loss - ref.optimal_loss <= loss_tol:
        return ("global", f"loss - optimal loss = {loss - ref.optimal_loss:.3g} <= {loss_tol:g}"), None
    return None, _where(ref, loss, loss_tol)


def _where(ref: Reference, loss: float, loss_tol: float) -> str:
    """The end point in words: on a named level of the reference (within ``loss_tol``), or not."""
    for name, value in ref.levels.items():
        if abs(loss - value) <= loss_tol:
            return f"the {name} set (loss = the {name} level, {value:.12g})"
    return "a non-global critical point" if ref.optimal_loss is not None else "a critical point"


def classify_endpoint(system, theta: np.ndarray, *, reference: Reference | None = None,
                      loss_tol: float | None = None, hess_tol: float):
    """('global' | 'local' | 'undetermined', reason) for a converged end point of a flow of ``system``.

    ``global``: every critical point is global (``reference.all_global``), or the loss is within
    ``loss_tol`` (default: ``reference.loss_tol``) of the optimal loss. ``local``: the Hessian is
    positive definite, or positive semi-definite with null directions and the higher-order test
    (:func:`flowlab.engine.critical.sphere_kind`: L - L(theta) >= 0 on two small spheres) finds a
    minimum; a PSD Hessian alone is not enough. Otherwise ``undetermined``, with the reason; also
    when the reference is ``unresolved`` or the optimal loss is unknown (a minimum may then be global).
    """
    from flowlab.engine.critical import NULL_TOL, sphere_kind

    ref = system.reference() if reference is None else reference
    loss_tol = ref.loss_tol if loss_tol is None else loss_tol
    loss = float(system.loss(theta))
    verdict, where = _loss_verdict(ref, loss, loss_tol)
    if verdict is not None:
        return verdict
    lam = np.linalg.eigvalsh(system.hessian(theta))
    if lam.min() < -hess_tol:
        return ("undetermined", f"converged to a saddle-type point (Hessian eigenvalue {lam.min():.3g})")
    if ref.optimal_loss is None:
        gap = "the optimal loss is unknown, so a minimum may be global"
    else:
        gap = f"loss - optimal loss = {loss - ref.optimal_loss:.3g}"
    local = "local" if ref.optimal_loss is not None else "undetermined"
    if lam.min() > NULL_TOL * max(1.0, float(np.abs(lam).max())):
        return (local, f"{where}: {gap}, Hessian positive definite")
    r = 1e-3 * max(1.0, float(np.linalg.norm(theta)))
    kind = sphere_kind(lambda z: system.loss(z) - loss, np.asarray(theta, float), (r, 0.3 * r),
                       tol=64 * np.finfo(float).eps * max(1.0, abs(loss)))
    if kind == "local_min":
        return (local, f"{where}: {gap}, Hessian PSD with null directions and L >= L(end) on spheres of radius "
                f"{r:.2g} and {0.3 * r:.2g} (higher-order test)")
    return ("undetermined", f"{where}: {gap}; Hessian PSD with null directions but the higher-order test on small "
            f"spheres says {kind.replace('_', ' ')}: not a minimum")


def _check_start(system, theta0, max_seconds):
    """The flow's velocity at ``theta0``, after refusing a non-finite start and a flow whose first
    gradient evaluation (the pilot) predicts more than ``max_seconds`` for a typical flow."""
    with np.errstate(all="ignore"):
        pilot = time.perf_counter()
        start = -np.asarray(system.gradient(theta0), dtype=np.float64)
        pilot = time.perf_counter() - pilot
        start_loss = system.loss(theta0)
    require_finite({"loss": start_loss, "gradient": start}, system.params, theta0,
                   f"the start point of the flow: {undefined_hint(system, theta0)}")
    if max_seconds is not None and pilot * TYPICAL_EVALUATIONS > max_seconds:
        cost = getattr(system, "cost_hint", "")
        raise FlowlabInputError(
            f"one gradient evaluation took {pilot:.3g} s, so a typical flow ({TYPICAL_EVALUATIONS} evaluations) "
            f"would take about {pilot * TYPICAL_EVALUATIONS:.3g} s, more than max_seconds = {max_seconds:g}"
            + (f"; {cost} or raise --max-seconds" if cost else "")
        )
    return start


def _check_options(method, t_max, tolerances: dict, max_steps, max_seconds):
    """Validated (t_max, max_steps), or a :class:`FlowlabInputError` naming the bad option."""
    if method not in METHODS:
        raise FlowlabInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    t_max = real_number(t_max, "t_max")
    if t_max <= 0:
        raise FlowlabInputError(f"t_max must be positive, got {t_max}")
    for name, val in tolerances.items():
        if real_number(val, name) <= 0:
            raise FlowlabInputError(f"{name} must be positive, got {val}")
    max_steps = integer(max_steps, "max_steps")
    if max_seconds is not None and not real_number(max_seconds, "max_seconds") > 0:
        raise FlowlabInputError(f"max_seconds must be positive (or None), got {max_seconds}")
    return t_max, max_steps


def gradient_flow(
    system,
    theta0,
    *,
    t_max: float = 1e4,
    grad_tol: float = 1e-8,
    method: str = "DOP853",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    loss_tol: float | None = None,
    hess_tol: float = 1e-8,
    max_steps: int = MAX_STEPS,
    max_seconds: float | None = MAX_SECONDS,
    progress: bool = False,
    dense_output: int | None = None,
) -> FlowResult:
    """Integrate the gradient flow of ``system`` (any :class:`~flowlab.engine.system.System`) from ``theta0``.

    Raises :class:`FlowlabInputError` for bad options and when the loss or the gradient is not
    finite at ``theta0`` (named, with the system's ``undefined_hint`` when it has one). The work is
    bounded: after ``max_steps`` accepted solver steps or ``max_seconds`` of wall time (None: no
    time limit) the result has status ``budget``; a flow that runs into non-finite values has
    status ``failed`` with the point named; ``progress`` shows a progress bar on stderr for runs
    longer than 2 s. The verdict of a converged flow is :func:`classify_endpoint`'s. ``dense_output``
    = N (2 to 100000) also samples the solver's interpolant at N times (:func:`dense_times`) into
    ``dense_t``, ``dense_theta``, ``dense_loss`` (arrays, not the interpolant: results stay picklable);
    not for a flow stopped by its budget.
    """
    if dense_output is not None:
        dense_output = integer(dense_output, "dense_output", 2, 100000)
    t_max, max_steps = _check_options(method, t_max, {"grad_tol": grad_tol, "rtol": rtol, "atol": atol,
                                                      "loss_tol": 1.0 if loss_tol is None else loss_tol},
                                      max_steps, max_seconds)
    params = tuple(system.params)
    identity = system.describe()
    theta0 = finite_array(theta0, "initial point")
    if theta0.shape != (len(params),):
        raise FlowlabInputError(f"the initial point of {identity.get('model', system.name)!r} needs {len(params)} "
                                f"values {list(params)}")
    start = _check_start(system, theta0, max_seconds)
    if np.linalg.norm(start) < grad_tol:
        t, ys, nfev, status = np.array([0.0]), theta0[None, :], 1, "converged"
        solver_message = "the initial point is already critical"
        dense = (t, ys) if dense_output else None
    else:
        budget = _Budget(system, t_max, max_steps, max_seconds, progress)
        t, ys, nfev, status, solver_message = budget.integrate(theta0, method=method, rtol=rtol, atol=atol,
                                                               grad_tol=grad_tol, dense_output=dense_output)
        dense = budget.dense
    final = ys[-1]
    ref = system.reference()
    if status == "converged":
        reached, reason = classify_endpoint(system, final, reference=ref, loss_tol=loss_tol, hess_tol=hess_tol)
    else:
        reached, reason = "undetermined", "not converged"
        reason += "".join(f"; {why}" for why in (ref.all_global, ref.unresolved) if why is not None)
    return FlowResult(
        system=identity, reference=ref, params=params, t=t, theta=ys, loss=np.asarray(system.loss(ys), float),
        gradient_norm=float(np.linalg.norm(system.gradient(final))), reached=reached, status=status,
        message=f"{solver_message}; {reason}", nfev=nfev, invariants=dict(system.invariants(ys)),
        observables=dict(system.observables(ys)),
        **({} if dense is None else {"dense_t": dense[0], "dense_theta": dense[1],
                                    "dense_loss": np.asarray(system.loss(dense[1]), float)}),
    )
