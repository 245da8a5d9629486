"""NumericModel: a Derivation compiled once into vectorised, log-domain NumPy functions.

There is one ``lambdify(cse=True)`` call site (:func:`_compile`). The switching probabilities
p and q are arguments of the compiled functions, so a model is compiled once per process
and bound to any chain cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from ._checks import FlowlabInputError, finite_array
from .derivation import ELL, ELL_PRIME, GAP, P, Q, derive
from .markov import MarkovChain
from .models import Model
from .special import NUMPY_IMPLEMENTATIONS


def _compile(args, exprs) -> Callable:
    """The single lambdify call site: a flat list of expressions -> a NumPy function.

    ``dummify=True``: the arguments become private dummies in the generated code, so no
    parameter name can shadow a NumPy function or constant the code uses (a parameter ``e`` and
    the constant ``exp(1)``, printed ``e``, used to collide).
    """
    import sympy as sp

    return sp.lambdify(args, list(exprs), modules=[NUMPY_IMPLEMENTATIONS, "numpy"], cse=True, dummify=True)


def compile_expression(args, expr) -> Callable:
    """One expression -> a NumPy function returning it (through :func:`_compile`, so no parameter
    name can shadow what the generated code uses)."""
    fn = _compile(args, [expr])
    return lambda *values: fn(*values)[0]


@cache
def compiled_names() -> frozenset[str]:
    """The global names the compiled code uses for every whitelisted and special function.

    Found by compiling a probe that applies each function (and its derivative) through
    :func:`_compile`, so the set follows SymPy's printer (maximum, select, less, nan, ...).
    """
    import sympy as sp

    from .parse import ALLOWED_FUNCTIONS
    from .special import profiled_logit0, sigmoid, softplus

    s, r = sp.symbols("s r", real=True)
    parts = [sp.Piecewise((s, s < r), (s**2, s <= r), (r, s > r), (s * r, s >= r), (0, True)),
             sp.Piecewise((s, s <= r), (r, True)), sp.Piecewise((s, s >= r), (r, True)),
             softplus(s), sigmoid(s), profiled_logit0(s, r, r + 1)]
    for name, (constructor, arities) in ALLOWED_FUNCTIONS.items():
        if name != "Piecewise":
            parts.extend(constructor(*(s, r)[:n]) for n in arities if n <= 2)
    fn = _compile([s, r], parts + [sp.diff(part, s) for part in parts])
    return frozenset(fn.__code__.co_names)


@dataclass(frozen=True)
class CompiledModel:
    """Compiled functions of (theta columns..., p, q) returning flat lists."""

    model: Model
    loss: Callable
    gradient: Callable
    hessian: Callable
    gap: Callable
    invariants: Callable
    invariant_names: tuple[str, ...]
    ell: Callable  # ell(D, p, q), ell'(D, p, q): the 1-D profiled loss
    optimal_bias: Callable | None  # b*(theta) for a profiled model


@cache
def compile_model(model: Model) -> CompiledModel:
    """Derive and compile ``model`` (cached: once per model per process)."""
    d = derive(model)
    args = list(d.params) + [P, Q]
    n = len(d.params)
    return CompiledModel(
        model=model,
        loss=_compile(args, [d.loss]),
        gradient=_compile(args, d.gradient),
        hessian=_compile(args, [d.hessian[i][j] for i in range(n) for j in range(n)]),
        gap=_compile(args, [d.gap]),
        invariants=_compile(args, [inv.expr for inv in d.invariants]),
        invariant_names=tuple(inv.name for inv in d.invariants),
        ell=_compile([GAP, P, Q], [ELL, ELL_PRIME]),
        optimal_bias=_compile(args, [d.optimal_bias]) if d.profiled else None,
    )


#: What usually makes a user's logit non-finite at a point.
UNDEFINED_HINT = ("log or sqrt of a negative number, a division by zero, an overflow such as exp(exp(.)), "
                  "or a Piecewise with no branch for this point?")


def format_point(params, theta) -> str:
    """``e=0.3, w=-1`` (each value with the digits that round-trip)."""
    def num(v):
        v = float(v)
        short = format(v, "g")
        return short if float(short) == v else repr(v)

    return ", ".join(f"{name}={num(v)}" for name, v in zip(params, np.ravel(theta)))


def require_finite(quantities: dict, params, theta, hint: str = UNDEFINED_HINT) -> None:
    """Raise :class:`FlowlabInputError` naming the point and the first quantity with a NaN or inf."""
    for what, value in quantities.items():
        if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
            raise FlowlabInputError(f"the {what} is not finite at {format_point(params, theta)} ({hint})")


def _stack(values, shape) -> np.ndarray:
    """Broadcast a flat list of outputs (constants included) to ``shape + (len,)``."""
    return np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), shape) for v in values], -1)


class NumericModel:
    """A compiled model bound to a chain; every method is vectorised over leading axes.

    ``theta`` has shape (..., n_params) in the model's parameter order.

    >>> from flowlab import MarkovChain, get_model
    >>> nm = NumericModel(get_model("ew"), MarkovChain(0.5, 0.8))
    >>> float(nm.loss([0.0, 1.0])) == MarkovChain(0.5, 0.8).unigram_loss
    True
    """

    def __init__(self, model: Model, chain: MarkovChain):
        self.model = model
        self.chain = chain
        self.params = model.params
        self.compiled = compile_model(model)

    @property
    def invariant_names(self) -> tuple[str, ...]:
        return self.compiled.invariant_names

    def _call(self, fn, theta):
        theta = finite_array(theta, "theta", last_dim=len(self.params))
        cols = np.moveaxis(theta, -1, 0)
        return fn(*cols, self.chain.p, self.chain.q), theta.shape[:-1]

    def loss(self, theta) -> np.ndarray:
        out, shape = self._call(self.compiled.loss, theta)
        return _stack(out, shape)[..., 0]

    def gradient(self, theta) -> np.ndarray:
        out, shape = self._call(self.compiled.gradient, theta)
        return _stack(out, shape)

    def hessian(self, theta) -> np.ndarray:
        out, shape = self._call(self.compiled.hessian, theta)
        n = len(self.params)
        return _stack(out, shape).reshape(shape + (n, n))

    def gap(self, theta) -> np.ndarray:
        out, shape = self._call(self.compiled.gap, theta)
        return _stack(out, shape)[..., 0]

    def invariants(self, theta) -> dict[str, np.ndarray]:
        """Invariant values; NaN where an invariant is undefined (E of ``ew`` at w = 0)."""
        if not self.invariant_names:
            return {}
        with np.errstate(divide="ignore", invalid="ignore"):
            out, shape = self._call(self.compiled.invariants, theta)
        values = _stack(out, shape)
        return {name: values[..., i] for i, name in enumerate(self.invariant_names)}

    def profiled_loss(self, D) -> tuple[np.ndarray, np.ndarray]:
        """ell(D) and ell'(D) for an array of gaps."""
        D = finite_array(D, "D")
        ell, ell_prime = self.compiled.ell(D, self.chain.p, self.chain.q)
        return _stack([ell], D.shape)[..., 0], _stack([ell_prime], D.shape)[..., 0]

    def optimal_bias(self, theta) -> np.ndarray:
        """b*(theta), the minimiser of the loss over the bias (profiled models only)."""
        if self.compiled.optimal_bias is None:
            raise FlowlabInputError(f"model {self.model.name!r} has a free bias; b* is defined for profiled models")
        out, shape = self._call(self.compiled.optimal_bias, theta)
        return _stack(out, shape)[..., 0]

    def check_point(self, theta, quantities: dict) -> None:
        """Refuse a user-given point where a quantity (name -> values) is not finite, saying why if the logit is."""
        with np.errstate(all="ignore"):
            gap = float(self.gap(theta))
        hint = UNDEFINED_HINT
        if not np.isfinite(gap):
            hint = f"the logit gap D = f(theta; 1) - f(theta; 0) is {gap} there: " + UNDEFINED_HINT
        require_finite(quantities, self.params, theta, hint)

    def evaluate(self, theta) -> dict:
        """Everything at one point, JSON-ready (the ``flowlab eval`` payload); a non-finite value is an error."""
        theta = finite_array(theta, "theta")
        if theta.shape != (len(self.params),):
            raise FlowlabInputError(
                f"a point of model {self.model.name!r} has {len(self.params)} coordinates "
                f"{list(self.params)}, got shape {theta.shape}"
            )
        with np.errstate(all="ignore"):  # a non-finite value is reported by check_point, not warned about
            loss, grad, hessian = self.loss(theta), self.gradient(theta), self.hessian(theta)
        self.check_point(theta, {"loss": loss, "gradient": grad, "Hessian": hessian})
        out = {
            "model": self.model.name,
            "chain": self.chain.as_dict(),
            "params": list(self.params),
            "at": dict(zip(self.params, theta.tolist())),
            "loss": float(loss),
            "gradient": dict(zip(self.params, grad.tolist())),
            "gradient_norm": float(np.linalg.norm(grad)),
            "hessian": hessian.tolist(),
            "gap": float(self.gap(theta)),
            "optimal_gap": self.chain.optimal_gap,
        }
        inv = self.invariants(theta)
        if "E" in inv:
            out["energy"] = _json_float(inv["E"])
        out["invariants"] = {k: _json_float(v) for k, v in inv.items()}
        return out


def _json_float(x):
    x = float(x)
    return x if np.isfinite(x) else None
