"""NumericModel: a Derivation compiled once into vectorised, log-domain NumPy functions.

Compiled through the single call site :func:`flowlab.symbolic.compile.compile_exprs`. The switching probabilities
p and q are arguments of the compiled functions, so a model is compiled once per process
and bound to any chain cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from flowlab.engine.checks import (
    UNDEFINED_HINT,
    FlowlabInputError,
    finite_array,
    format_point,
    require_finite,
)
from flowlab.symbolic.compile import compile_exprs, stack_outputs
from flowlab.systems.markov.chain import MarkovChain
from flowlab.systems.markov.derivation import ELL, ELL_PRIME, GAP, P, Q, derive
from flowlab.systems.markov.models import Model


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
        loss=compile_exprs(args, [d.loss]),
        gradient=compile_exprs(args, d.gradient),
        hessian=compile_exprs(args, [d.hessian[i][j] for i in range(n) for j in range(n)]),
        gap=compile_exprs(args, [d.gap]),
        invariants=compile_exprs(args, [inv.expr for inv in d.invariants]),
        invariant_names=tuple(inv.name for inv in d.invariants),
        ell=compile_exprs([GAP, P, Q], [ELL, ELL_PRIME]),
        optimal_bias=compile_exprs(args, [d.optimal_bias]) if d.profiled else None,
    )


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
        return stack_outputs(out, shape)[..., 0]

    def gradient(self, theta) -> np.ndarray:
        out, shape = self._call(self.compiled.gradient, theta)
        return stack_outputs(out, shape)

    def hessian(self, theta) -> np.ndarray:
        out, shape = self._call(self.compiled.hessian, theta)
        n = len(self.params)
        return stack_outputs(out, shape).reshape(shape + (n, n))

    def gap(self, theta) -> np.ndarray:
        out, shape = self._call(self.compiled.gap, theta)
        return stack_outputs(out, shape)[..., 0]

    def invariants(self, theta) -> dict[str, np.ndarray]:
        """Invariant values; NaN where an invariant is undefined (E of ``ew`` at w = 0)."""
        if not self.invariant_names:
            return {}
        with np.errstate(divide="ignore", invalid="ignore"):
            out, shape = self._call(self.compiled.invariants, theta)
        values = stack_outputs(out, shape)
        return {name: values[..., i] for i, name in enumerate(self.invariant_names)}

    def profiled_loss(self, D) -> tuple[np.ndarray, np.ndarray]:
        """ell(D) and ell'(D) for an array of gaps."""
        D = finite_array(D, "D")
        ell, ell_prime = self.compiled.ell(D, self.chain.p, self.chain.q)
        return stack_outputs([ell], D.shape)[..., 0], stack_outputs([ell_prime], D.shape)[..., 0]

    def optimal_bias(self, theta) -> np.ndarray:
        """b*(theta), the minimiser of the loss over the bias (profiled models only)."""
        if self.compiled.optimal_bias is None:
            raise FlowlabInputError(f"model {self.model.name!r} has a free bias; b* is defined for profiled models")
        out, shape = self._call(self.compiled.optimal_bias, theta)
        return stack_outputs(out, shape)[..., 0]

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
            "status": "ok",
            "message": f"loss and derivatives at {format_point(self.params, theta)}",
            "model": self.model.name,
            "chain": self.chain.as_dict(),
            "params": list(self.params),
            "point": dict(zip(self.params, theta.tolist())),
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
