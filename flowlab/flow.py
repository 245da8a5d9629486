"""One gradient-flow trajectory, integrated with SciPy's ``solve_ivp``.

The flow is d theta / dt = -grad L(theta). Integration stops when the gradient norm falls
below ``grad_tol`` (a terminal event) or at ``t_max``. The end point is then classified:
``global`` (the loss equals the entropy rate), ``local`` (a non-global critical point whose
Hessian is positive semi-definite), or ``undetermined`` (not converged, a saddle-type end
point, or a chain too close to p + q = 1 for the losses to tell the sets apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._checks import FlowlabInputError, finite_array, real_number
from .markov import MarkovChain
from .models import Model
from .numeric import NumericModel

#: solve_ivp methods accepted by :func:`gradient_flow` (SciPy's registry).
METHODS = ("DOP853", "RK45", "RK23", "Radau", "BDF", "LSODA")


@dataclass(frozen=True)
class FlowResult:
    """A trajectory and its verdict. ``status`` is 'converged', 't_max' or 'failed'."""

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


def classify_endpoint(nm: NumericModel, theta: np.ndarray, *, loss_tol: float, hess_tol: float):
    """('global' | 'local' | 'undetermined', reason) for a converged end point."""
    chain = nm.chain
    loss = float(nm.loss(theta))
    separation = chain.unigram_loss - chain.entropy_rate
    if chain.degenerate:
        return ("global", "p + q = 1: unigram and bigram coincide, every critical point is global")
    if separation < 100 * loss_tol:
        return (
            "undetermined",
            f"h(pi1) - H = {separation:.3g} is too small to tell the sets apart at loss_tol={loss_tol:g}",
        )
    if loss - chain.entropy_rate <= loss_tol:
        return ("global", f"loss - H = {loss - chain.entropy_rate:.3g} <= {loss_tol:g}")
    lam_min = float(np.linalg.eigvalsh(nm.hessian(theta)).min())
    if lam_min >= -hess_tol:
        unigram = abs(loss - chain.unigram_loss) <= loss_tol
        where = "the unigram set (loss = h(pi1))" if unigram else "a non-global critical point"
        return ("local", f"{where}: loss - H = {loss - chain.entropy_rate:.3g}, Hessian PSD")
    return ("undetermined", f"converged to a saddle-type point (Hessian eigenvalue {lam_min:.3g})")


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
    loss_tol: float = 1e-9,
    hess_tol: float = 1e-8,
    allow_degenerate: bool = False,
    context: int | None = None,
) -> FlowResult:
    """Integrate the gradient flow of ``model`` on ``chain`` from ``theta0``.

    ``context=N`` uses the exact finite-context loss over positions 1..N
    (:class:`flowlab.context.ContextModel`) instead of the long-context limit.
    Raises :class:`FlowlabInputError` for p + q = 1 unless ``allow_degenerate`` (the
    verdict global/unigram is then vacuous and the result says so).
    """
    from scipy.integrate import solve_ivp

    if not allow_degenerate:
        chain.require_nondegenerate("which critical set a flow reaches")
    if method not in METHODS:
        raise FlowlabInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    t_max = real_number(t_max, "t_max")
    if t_max <= 0:
        raise FlowlabInputError(f"t_max must be positive, got {t_max}")
    for name, val in (("grad_tol", grad_tol), ("rtol", rtol), ("atol", atol), ("loss_tol", loss_tol)):
        if real_number(val, name) <= 0:
            raise FlowlabInputError(f"{name} must be positive, got {val}")
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

    def converged(_t, y):
        return float(np.linalg.norm(rhs(_t, y))) - grad_tol

    converged.terminal = True
    converged.direction = -1

    if np.linalg.norm(rhs(0.0, theta0)) < grad_tol:
        t, ys, nfev, status = np.array([0.0]), theta0[None, :], 1, "converged"
        solver_message = "the initial point is already critical"
    else:
        sol = solve_ivp(rhs, (0.0, t_max), theta0, method=method, rtol=rtol, atol=atol,
                        events=converged)
        t, ys, nfev = sol.t, sol.y.T, int(sol.nfev)
        if sol.status == 1:
            status, solver_message = "converged", f"gradient norm below {grad_tol:g} at t = {t[-1]:.6g}"
        elif sol.status == 0:
            status, solver_message = "t_max", f"t_max = {t_max:g} reached before convergence"
        else:
            status, solver_message = "failed", f"solver failed: {sol.message}"
    final = ys[-1]
    gnorm = float(np.linalg.norm(nm.gradient(final)))
    if status == "converged":
        reached, reason = classify_endpoint(nm, final, loss_tol=loss_tol, hess_tol=hess_tol)
    else:
        reached, reason = "undetermined", "not converged"
    if chain.degenerate:
        reason += "; p + q = 1: unigram and bigram coincide (D* = 0), the verdict is vacuous"
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
