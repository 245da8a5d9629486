"""One gradient-flow trajectory, integrated with SciPy's ``solve_ivp``.

The flow is d theta / dt = -grad L(theta). Integration stops when the gradient norm falls
below ``grad_tol`` (a terminal event) or at ``t_max``. The end point is then classified:
``global`` (the loss equals the entropy rate within the chain's gap-scaled tolerance), ``local``
(a non-global critical point that is a minimum: positive definite Hessian, or positive
semi-definite with a higher-order test on small spheres), or ``undetermined`` (not converged,
a saddle-type end point, or a nearly degenerate chain whose losses cannot tell the sets apart).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ._checks import FlowlabInputError, finite_array, integer, real_number
from ._defaults import FLOW_BUDGET, FLOW_METHODS
from .markov import MarkovChain
from .models import Model
from .numeric import UNDEFINED_HINT, NumericModel, format_point, require_finite

#: solve_ivp methods accepted by :func:`gradient_flow` (SciPy's registry; shared with the CLI).
METHODS = FLOW_METHODS


#: Default budget of one flow: accepted solver steps (deterministic) and wall time. Measured: flows of
#: ew, ewb, ewa from random starts in [-3, 3]^n converge in 24-213 DOP853 steps; a step costs 0.5-1.3 ms
#: (ewb at e=50, w=-50, b=50: 200000 steps, still not converged, in 98 s of CPU), so 20000 steps are
#: about 100 times a typical flow and at most about half a minute. Stiff flows (large |theta|)
#: converge with an implicit method: --method LSODA there takes 4058 steps.
MAX_STEPS = FLOW_BUDGET["max_steps"]
MAX_SECONDS = FLOW_BUDGET["max_seconds"]
#: Gradient evaluations of a typical flow (about 100 DOP853 steps of 13 evaluations: 12 stages and the
#: convergence event); a flow whose first evaluation says it would exceed max_seconds is refused up front
#: (``--context 4096`` of ewa: 0.76 s per evaluation, about 16 minutes).
TYPICAL_EVALUATIONS = 1300


class _OutOfBudget(Exception):
    """Raised inside solve_ivp's callbacks to stop a flow that exceeded its budget."""


class _Budget:
    """Runs solve_ivp within a step and time budget, keeping the accepted steps.

    solve_ivp evaluates the terminal event once per accepted step (and at the start), so the
    event counts and records steps; the right-hand side checks the clock (a step can be rejected
    many times) and remembers the last point where the gradient was not finite.
    """

    def __init__(self, params, t_max, max_steps, max_seconds, progress):
        from tqdm import tqdm

        self.params, self.t_max, self.max_steps, self.max_seconds = params, t_max, max_steps, max_seconds
        self.clock = time.perf_counter
        self.start = self.clock()
        self.ts, self.ys, self.nfev, self.nonfinite = [], [], 0, None
        self.bar = tqdm(total=t_max, desc="flow", unit="t", disable=not progress, delay=2.0, mininterval=1.0,
                        leave=False, bar_format="{desc}: t = {n:.4g} of {total:.4g} [{elapsed}, {postfix}]")

    def elapsed(self) -> float:
        return self.clock() - self.start

    def rhs(self, fn):
        def wrapped(t, y):
            self.nfev += 1
            if self.max_seconds is not None and self.elapsed() > self.max_seconds:
                raise _OutOfBudget(f"max_seconds = {self.max_seconds:g}")
            with np.errstate(all="ignore"):  # non-finite values are handled (the solver rejects the step)
                out = fn(t, y)
            if not np.all(np.isfinite(out)) and np.all(np.isfinite(y)):
                self.nonfinite = (t, np.array(y, dtype=np.float64))
            return out
        return wrapped

    def step(self, t, y):
        if self.ts and t <= self.ts[-1]:
            return  # an evaluation inside the last step (event location), not a new step
        self.ts.append(float(t))
        self.ys.append(np.array(y, dtype=np.float64))
        if len(self.ts) > self.max_steps:
            raise _OutOfBudget(f"max_steps = {self.max_steps}")
        self.bar.update(float(t) - self.bar.n)
        self.bar.set_postfix_str(f"{len(self.ts)} steps", refresh=False)

    def integrate(self, rhs, theta0, *, method, rtol, atol, grad_tol):
        """(t, ys, nfev, status, message) of the flow from ``theta0``."""
        from scipy.integrate import solve_ivp

        f = self.rhs(rhs)

        def converged(t, y):
            self.step(t, y)
            return float(np.linalg.norm(f(t, y))) - grad_tol

        converged.terminal = True
        converged.direction = -1
        try:
            sol = solve_ivp(f, (0.0, self.t_max), theta0, method=method, rtol=rtol, atol=atol, events=converged)
        except _OutOfBudget as stop:
            t, ys = np.array(self.ts), np.array(self.ys)
            return t, ys, self.nfev, "budget", (
                f"stopped by the budget ({stop}) after {len(self.ts) - 1} steps and {self.elapsed():.3g} s, "
                f"at t = {t[-1]:.6g}, not converged (raise max_steps/max_seconds, --max-steps/--max-seconds; "
                "a stiff flow, e.g. from large |theta|, converges faster with method LSODA or Radau)")
        finally:
            self.bar.close()
        t, ys = sol.t, sol.y.T
        if sol.status == 1:
            return t, ys, int(sol.nfev), "converged", f"gradient norm below {grad_tol:g} at t = {t[-1]:.6g}"
        if sol.status == 0:
            return t, ys, int(sol.nfev), "t_max", f"t_max = {self.t_max:g} reached before convergence"
        message = f"solver failed at t = {t[-1]:.6g}, {format_point(self.params, ys[-1])}: {sol.message}"
        if self.nonfinite is not None:
            message += (f"; the gradient is not finite at {format_point(self.params, self.nonfinite[1])} "
                        f"(a trial point near t = {self.nonfinite[0]:.6g}): the flow runs into a region where the "
                        f"loss is undefined ({UNDEFINED_HINT})")
        return t, ys, int(sol.nfev), "failed", message


@dataclass(frozen=True)
class FlowResult:
    """A trajectory and its verdict. ``status`` is 'converged', 't_max', 'budget' or 'failed'."""

    model: Model
    params: tuple[str, ...]
    chain: MarkovChain
    t: np.ndarray
    theta: np.ndarray  # (n_steps, n_params)
    loss: np.ndarray
    gradient_norm: float
    reached: str
    status: str
    message: str
    nfev: int
    invariants: dict[str, np.ndarray] = field(default_factory=dict)

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
        return {
            "model": self.model.name,
            "chain": self.chain.as_dict(),
            "params": list(self.params),
            "initial": dict(zip(self.params, self.theta[0].tolist())),
            "final": self.final,
            "loss": self.final_loss,
            "initial_loss": float(self.loss[0]),
            "entropy_rate": self.chain.entropy_rate,
            "unigram_loss": self.chain.unigram_loss,
            "gradient_norm": self.gradient_norm,
            "reached": self.reached,
            "status": self.status,
            "success": self.success,
            "message": self.message,
            "t_final": float(self.t[-1]),
            "steps": int(self.t.size),
            "nfev": self.nfev,
            "energy_drift": self.energy_drift,
            "invariant_drift": self.invariant_drift(),
        }

    def columns(self) -> dict[str, np.ndarray]:
        """The trajectory as named columns: t, parameters, loss, invariants."""
        cols = {"t": self.t}
        cols.update({name: self.theta[:, i] for i, name in enumerate(self.params)})
        cols["loss"] = self.loss
        cols.update(self.invariants)
        return cols


class _ContextAdapter:
    """The finite-context loss with the interface classify_endpoint needs (Hessian by differences)."""

    def __init__(self, cm, nm):
        self.cm, self.chain, self.invariants = cm, nm.chain, nm.invariants

    def loss(self, theta):
        return self.cm.loss(theta)

    def gradient(self, theta):
        return self.cm.gradient(theta)

    def hessian(self, theta, h=1e-5):
        theta = np.asarray(theta, dtype=np.float64)
        n = theta.size
        steps = np.eye(n) * h
        g = self.cm.gradient(np.concatenate([theta + steps, theta - steps]))
        H = (g[:n] - g[n:]) / (2 * h)
        return 0.5 * (H + H.T)


def classify_endpoint(nm: NumericModel, theta: np.ndarray, *, loss_tol: float | None = None, hess_tol: float):
    """('global' | 'local' | 'undetermined', reason) for a converged end point.

    ``global``: the loss is within ``loss_tol`` (default: the chain's gap-scaled
    :attr:`~flowlab.markov.MarkovChain.loss_tolerance`) of H. ``local``: the Hessian is positive
    definite, or positive semi-definite with null directions and the higher-order test
    (:func:`flowlab.critical_numeric.sphere_kind`: L - L(theta) >= 0 on two small spheres) finds a
    minimum; a PSD Hessian alone is not enough (the saddle of ``ew`` has one). Otherwise
    ``undetermined``, with the reason; also for a nearly degenerate chain.
    """
    from .critical_numeric import NULL_TOL, sphere_kind

    chain = nm.chain
    if chain.degenerate:
        return ("global", "p + q = 1: unigram and bigram coincide, every critical point is global")
    if chain.nearly_degenerate:
        return ("undetermined", f"nearly degenerate chain: h(pi1) - H = {chain.loss_gap:.3g} is below what float64 "
                "resolves (1e-10), so losses cannot tell the unigram set from the bigram set")
    loss_tol = chain.loss_tolerance if loss_tol is None else loss_tol
    loss = float(nm.loss(theta))
    separation = chain.loss_gap
    if separation < 100 * loss_tol:
        return (
            "undetermined",
            f"h(pi1) - H = {separation:.3g} is too small to tell the sets apart at loss_tol={loss_tol:g}",
        )
    if loss - chain.entropy_rate <= loss_tol:
        return ("global", f"loss - H = {loss - chain.entropy_rate:.3g} <= {loss_tol:g}")
    lam = np.linalg.eigvalsh(nm.hessian(theta))
    if lam.min() < -hess_tol:
        return ("undetermined", f"converged to a saddle-type point (Hessian eigenvalue {lam.min():.3g})")
    unigram = abs(loss - chain.unigram_loss) <= loss_tol
    where = "the unigram set (loss = h(pi1))" if unigram else "a non-global critical point"
    gap = f"loss - H = {loss - chain.entropy_rate:.3g}"
    if lam.min() > NULL_TOL * max(1.0, float(np.abs(lam).max())):
        return ("local", f"{where}: {gap}, Hessian positive definite")
    r = 1e-3 * max(1.0, float(np.linalg.norm(theta)))
    kind = sphere_kind(lambda z: nm.loss(z) - loss, np.asarray(theta, float), (r, 0.3 * r),
                       tol=64 * np.finfo(float).eps * max(1.0, abs(loss)))
    if kind == "local_min":
        return ("local", f"{where}: {gap}, Hessian PSD with null directions and L >= L(end) on spheres of radius "
                f"{r:.2g} and {0.3 * r:.2g} (higher-order test)")
    return ("undetermined", f"{where}: {gap}; Hessian PSD with null directions but the higher-order test on small "
            f"spheres says {kind.replace('_', ' ')}: not a minimum")


def _check_start(nm, rhs, theta0, params, context, max_seconds):
    """The flow's velocity at ``theta0``, after refusing a non-finite start and a flow whose first
    gradient evaluation (the pilot) predicts more than ``max_seconds`` for a typical flow."""
    with np.errstate(all="ignore"):
        pilot = time.perf_counter()
        start = rhs(0.0, theta0)
        pilot = time.perf_counter() - pilot
        start_loss = nm.loss(theta0)
    which = "" if context is None else f" (finite context N = {context})"
    require_finite({f"loss{which}": start_loss, f"gradient{which}": start}, params, theta0,
                   f"the start point of the flow: {UNDEFINED_HINT}")
    if max_seconds is not None and pilot * TYPICAL_EVALUATIONS > max_seconds:
        raise FlowlabInputError(
            f"one gradient evaluation took {pilot:.3g} s, so a typical flow ({TYPICAL_EVALUATIONS} evaluations) "
            f"would take about {pilot * TYPICAL_EVALUATIONS:.3g} s, more than max_seconds = {max_seconds:g}"
            + (f"; use a shorter context than N = {context} or raise --max-seconds" if context else "")
        )
    return start


def gradient_flow(
    model: Model,
    chain: MarkovChain,
    theta0,
    *,
    t_max: float = 1e4,
    grad_tol: float = 1e-8,
    method: str = "DOP853",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    loss_tol: float | None = None,
    hess_tol: float = 1e-8,
    allow_degenerate: bool = False,
    context: int | None = None,
    max_steps: int = MAX_STEPS,
    max_seconds: float | None = MAX_SECONDS,
    progress: bool = False,
) -> FlowResult:
    """Integrate the gradient flow of ``model`` on ``chain`` from ``theta0``.

    ``context=N`` uses the exact finite-context loss over positions 1..N
    (:class:`flowlab.context.ContextModel`) instead of the long-context limit.
    Raises :class:`FlowlabInputError` for p + q = 1 unless ``allow_degenerate`` (the
    verdict global/unigram is then vacuous and the result says so), and when the loss or the
    gradient is not finite at ``theta0``. The work is bounded: after ``max_steps`` accepted solver
    steps or ``max_seconds`` of wall time (None: no time limit) the result has status ``budget``;
    a flow that runs into non-finite values has status ``failed`` with the point named;
    ``progress`` shows a progress bar on stderr for runs longer than 2 s.
    """
    if not allow_degenerate:
        chain.require_nondegenerate("which critical set a flow reaches")
    if method not in METHODS:
        raise FlowlabInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    t_max = real_number(t_max, "t_max")
    if t_max <= 0:
        raise FlowlabInputError(f"t_max must be positive, got {t_max}")
    for name, val in (("grad_tol", grad_tol), ("rtol", rtol), ("atol", atol),
                      ("loss_tol", 1.0 if loss_tol is None else loss_tol)):
        if real_number(val, name) <= 0:
            raise FlowlabInputError(f"{name} must be positive, got {val}")
    max_steps = integer(max_steps, "max_steps")
    if max_seconds is not None and not real_number(max_seconds, "max_seconds") > 0:
        raise FlowlabInputError(f"max_seconds must be positive (or None), got {max_seconds}")
    nm = NumericModel(model, chain)
    theta0 = finite_array(theta0, "initial point")
    if theta0.shape != (len(model.params),):
        raise FlowlabInputError(
            f"the initial point of {model.name!r} needs {len(model.params)} values {list(model.params)}"
        )
    if context is None:
        grad_fn, p, q = nm.compiled.gradient, chain.p, chain.q

        def rhs(_t, y):
            return -np.array(grad_fn(*y, p, q), dtype=np.float64)
    else:
        from .context import ContextModel

        nm = _ContextAdapter(ContextModel(model, chain, context), nm)

        def rhs(_t, y):
            return -nm.gradient(y)

    start = _check_start(nm, rhs, theta0, model.params, context, max_seconds)
    if np.linalg.norm(start) < grad_tol:
        t, ys, nfev, status = np.array([0.0]), theta0[None, :], 1, "converged"
        solver_message = "the initial point is already critical"
    else:
        budget = _Budget(model.params, t_max, max_steps, max_seconds, progress)
        t, ys, nfev, status, solver_message = budget.integrate(
            rhs, theta0, method=method, rtol=rtol, atol=atol, grad_tol=grad_tol)
    final = ys[-1]
    gnorm = float(np.linalg.norm(nm.gradient(final)))
    if status == "converged":
        reached, reason = classify_endpoint(nm, final, loss_tol=loss_tol, hess_tol=hess_tol)
    else:
        reached, reason = "undetermined", "not converged"
    if chain.degenerate:
        reason += "; p + q = 1: unigram and bigram coincide (D* = 0), the verdict is vacuous"
    elif chain.nearly_degenerate and "nearly degenerate" not in reason:
        reason += f"; nearly degenerate chain (h(pi1) - H = {chain.loss_gap:.3g}): no verdict is possible"
    return FlowResult(
        model=model,
        params=model.params,
        chain=chain,
        t=t,
        theta=ys,
        loss=nm.loss(ys),
        gradient_norm=gnorm,
        reached=reached,
        status=status,
        message=f"{solver_message}; {reason}",
        nfev=nfev,
        invariants=nm.invariants(ys),
    )
