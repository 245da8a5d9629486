"""NumericModel: a Derivation compiled once into vectorised, log-domain NumPy functions.

Compiled through the single call site :func:`flowlab.symbolic.compile.compile_exprs`. The switching probabilities
p and q are arguments of the compiled functions, so a model is compiled once per process
and bound to any chain cheaply; across processes the compiled code comes from the on-disk cache
(:mod:`flowlab.symbolic.cache`), so that a warm ``flowlab eval`` (a :class:`ModelSpec`) imports no SymPy.
The same holds for ``flowlab flow`` and ``flowlab basins``: the fused profiled gradient is compiled with the
model (:attr:`CompiledModel.fused_gradient`), and what they need from SymPy beyond compiled code (the
box-independent levels, the critical sets in a box, the saddle of ``ew``) is kept as JSON data per spec
(:func:`spec_facts`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flowlab.engine.checks import (
    UNDEFINED_HINT,
    FlowlabInputError,
    finite_array,
    format_point,
    real_number,
    require_finite,
)
from flowlab.engine.io import json_float
from flowlab.symbolic import cache as disk_cache
from flowlab.symbolic.compile import stack_outputs
from flowlab.systems.markov.chain import MarkovChain

if TYPE_CHECKING:
    from flowlab.systems.markov.models import Model

#: The compiled functions of a model, in the order of :class:`CompiledModel`'s fields.
FUNCTIONS = ("loss", "gradient", "hessian", "gap", "invariants", "ell", "optimal_bias", "fused_gradient")
#: The compiled functions that are None for some models (free bias; a gradient not fused).
OPTIONAL = ("optimal_bias", "fused_gradient")
#: Entry kind of a compiled model in the on-disk cache, and the source folders its key covers.
CACHE_KIND = "markov-model"
CACHE_SOURCES = (str(Path(__file__).parent),)


@dataclass(frozen=True)
class CompiledModel:
    """Compiled functions of (theta columns..., p, q) returning flat lists, with the model's name, parameter
    names and bias mode (all a warm process needs: it reads them from the on-disk cache without SymPy)."""

    name: str
    params: tuple[str, ...]
    bias: str
    loss: Callable
    gradient: Callable
    hessian: Callable
    gap: Callable
    invariants: Callable
    invariant_names: tuple[str, ...]
    ell: Callable  # ell(D, p, q), ell'(D, p, q): the 1-D profiled loss
    optimal_bias: Callable | None  # b*(theta) for a profiled model
    #: the gradient of a profiled model with sigma(zeta0(D) + D) as a last argument S: a function of
    #: (theta..., p, q, S) (:func:`_fused_gradient`); None for a free bias or when zeta0 appears otherwise
    fused_gradient: Callable | None


@dataclass(frozen=True)
class ModelSpec:
    """A model as the command line names it, before SymPy is imported: a preset, or a typed logit with its
    parameter names and bias mode. :meth:`build` makes the :class:`Model`; :func:`compile_spec` its compiled
    functions, from the on-disk cache when they are there."""

    preset: str | None = None
    logit: str | None = None
    params: str | None = None
    bias: str = "profiled"

    def identity(self) -> str:
        return json.dumps({"spec": [self.preset, self.logit, self.params, self.bias]})

    def build(self) -> Model:
        from flowlab.systems.markov.models import get_model, user_model

        if self.logit is None:
            return get_model(self.preset)
        return user_model(self.logit, self.params, bias=self.bias)


def _compile(model: Model) -> CompiledModel:
    """Derive and compile ``model`` (the candidate invariants come from the model: no proof is needed to
    compile them)."""
    from flowlab.symbolic.compile import compile_exprs
    from flowlab.systems.markov.derivation import ELL, ELL_PRIME, GAP, P, Q, derive

    d = derive(model)
    args = list(d.params) + [P, Q]
    n = len(d.params)
    return CompiledModel(
        name=model.name,
        params=tuple(model.params),
        bias=model.bias,
        loss=compile_exprs(args, [d.loss]),
        gradient=compile_exprs(args, d.gradient),
        hessian=compile_exprs(args, [d.hessian[i][j] for i in range(n) for j in range(n)]),
        gap=compile_exprs(args, [d.gap]),
        invariants=compile_exprs(args, [expr for _, expr in model.invariants]),
        invariant_names=tuple(name for name, _ in model.invariants),
        ell=compile_exprs([GAP, P, Q], [ELL, ELL_PRIME]),
        optimal_bias=compile_exprs(args, [d.optimal_bias]) if d.profiled else None,
        fused_gradient=_fused_gradient(d) if d.profiled else None,
    )


def _fused_gradient(d) -> Callable | None:
    """The derived gradient with sigma(D + zeta0(D)) as an argument S: a function of (theta..., p, q, S).

    None when the gradient uses zeta0 other than through that sigmoid (then only the log-domain path
    applies). The code is the derivation's own expression, so only sigma itself is computed otherwise
    (:func:`flowlab.symbolic.twins.profiled_sigmoid1`, by :class:`~flowlab.systems.markov.system.MarkovSystem`).
    """
    import sympy as sp

    from flowlab.symbolic.compile import compile_exprs
    from flowlab.symbolic.special import profiled_logit0, sigmoid
    from flowlab.systems.markov.derivation import P, Q

    S = sp.Dummy("S")

    def fused(e):
        if not isinstance(e, sigmoid) or not isinstance(e.args[0], sp.Add):
            return False
        zetas = [a for a in e.args[0].args if isinstance(a, profiled_logit0)]
        return len(zetas) == 1 and sp.expand(e.args[0] - zetas[0] - zetas[0].args[0]) == 0

    grad = [g.replace(fused, lambda e: S) for g in d.gradient]
    if any(g.has(profiled_logit0) for g in grad):
        return None
    return compile_exprs([*d.params, P, Q, S], grad)


def _store(identity: str, compiled: CompiledModel) -> None:
    """Put ``compiled`` in the on-disk cache (nothing when a function's code is not storable)."""
    records = {}
    for field in FUNCTIONS:
        fn = getattr(compiled, field)
        records[field] = None if fn is None else disk_cache.function_record(fn)
        if fn is not None and records[field] is None:
            return
    payload = {"name": compiled.name, "params": list(compiled.params), "bias": compiled.bias,
               "invariant_names": list(compiled.invariant_names), "functions": records}
    disk_cache.put(CACHE_KIND, identity, payload, CACHE_SOURCES)


def _load(identity: str) -> CompiledModel | None:
    """The compiled model stored for ``identity``, or None (no usable entry)."""
    payload = disk_cache.get(CACHE_KIND, identity, CACHE_SOURCES)
    if payload is None:
        return None
    try:
        records = payload["functions"]
        functions = {f: None if f in OPTIONAL and records[f] is None else disk_cache.load_function(records[f])
                     for f in FUNCTIONS}
        strings = [payload["name"], payload["bias"], *payload["params"], *payload["invariant_names"]]
        if not all(isinstance(x, str) for x in strings):
            raise ValueError("malformed names")
        return CompiledModel(name=payload["name"], params=tuple(payload["params"]), bias=payload["bias"],
                             invariant_names=tuple(payload["invariant_names"]), **functions)
    except (KeyError, TypeError, ValueError, RecursionError):
        return None


def model_identity(model: Model) -> str:
    """The canonical text of a model: name, parameters, bias mode, ``srepr`` of its logit and invariants."""
    import sympy as sp

    return json.dumps({"name": model.name, "params": list(model.params), "bias": model.bias,
                       "logit": sp.srepr(model.full_logit),
                       "invariants": [[name, sp.srepr(expr)] for name, expr in model.invariants]})


@cache
def compile_model(model: Model) -> CompiledModel:
    """Derive and compile ``model``: once per model per process, and across processes through the on-disk
    cache (:mod:`flowlab.symbolic.cache`)."""
    identity = model_identity(model)
    compiled = _load(identity)
    if compiled is None:
        compiled = _compile(model)
        _store(identity, compiled)
    return compiled


@cache
def compile_spec(spec: ModelSpec) -> CompiledModel:
    """The compiled model of a command-line spec: from the on-disk cache without SymPy when it is there."""
    identity = spec.identity()
    compiled = _load(identity)
    if compiled is None:
        compiled = compile_model(spec.build())
        _store(identity, compiled)
    return compiled


def spec_facts(kind: str, spec: ModelSpec, args: dict, derive: Callable[[], object], valid: Callable[[object], bool]):
    """JSON data derived with SymPy from ``spec``'s model for ``args`` (a chain, a box), kept in the on-disk cache.

    ``derive()`` runs on a miss (it builds the model: SymPy); its result goes through JSON both ways, so a
    warm process (no SymPy) and a cold one get the very same data (floats round-trip exactly; tuples become
    lists). A result that JSON cannot hold (NaN, inf) is returned as derived and not stored. A stored entry that
    ``valid`` refuses (a damaged or foreign layout) is derived again. ``kind`` names the entry (lower-case letters
    and dashes)."""
    identity = json.dumps({"spec": spec.identity(), "args": args}, sort_keys=True)
    stored = disk_cache.get(kind, identity, CACHE_SOURCES)
    try:
        if stored is not None and valid(stored):
            return stored
    except (TypeError, ValueError, KeyError, AttributeError):
        pass
    derived = derive()
    try:
        derived = json.loads(json.dumps(derived, allow_nan=False, sort_keys=True))  # as the cache stores it
    except (TypeError, ValueError):
        return derived
    disk_cache.put(kind, identity, derived, CACHE_SOURCES)
    return derived


#: Half-width of the default box of every parameter.
DEFAULT_HALF_WIDTH = 3.0


def make_box(model, box=None) -> dict[str, tuple[float, float]]:
    """A box {name: (lo, hi)} for every parameter of ``model`` (anything with ``name`` and ``params``: a Model,
    a NumericModel, a CompiledModel); unspecified ones get (-3, 3)."""
    box = dict(box or {})
    unknown = [k for k in box if k not in model.params]
    if unknown:
        raise FlowlabInputError(
            f"box names unknown parameters {unknown}; model {model.name!r} has {list(model.params)}"
        )
    out = {}
    for name in model.params:
        lo, hi = box.get(name, (-DEFAULT_HALF_WIDTH, DEFAULT_HALF_WIDTH))
        lo, hi = real_number(lo, f"box lower bound of {name}"), real_number(hi, f"box upper bound of {name}")
        if not lo < hi:
            raise FlowlabInputError(f"box of {name} must have lo < hi, got {lo}:{hi}")
        out[name] = (lo, hi)
    return out


class NumericModel:
    """A compiled model bound to a chain; every method is vectorised over leading axes.

    ``theta`` has shape (..., n_params) in the model's parameter order.

    >>> from flowlab import MarkovChain, get_model
    >>> nm = NumericModel(get_model("ew"), MarkovChain(0.5, 0.8))
    >>> float(nm.loss([0.0, 1.0])) == MarkovChain(0.5, 0.8).unigram_loss
    True
    """

    def __init__(self, model: Model | ModelSpec, chain: MarkovChain):
        spec = model if isinstance(model, ModelSpec) else None
        self._model = None if spec else model
        self._spec = spec
        self.chain = chain
        self.compiled = compile_spec(spec) if spec else compile_model(model)
        self.params = self.compiled.params
        self.name = self.compiled.name

    @property
    def spec(self) -> ModelSpec | None:
        """The command-line spec this was made from (None when made from a :class:`Model`)."""
        return self._spec

    @property
    def model(self) -> Model:
        """The model (built on first use when this was made from a :class:`ModelSpec`: that imports SymPy)."""
        if self._model is None:
            self._model = self._spec.build()
        return self._model

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
            raise FlowlabInputError(f"model {self.name!r} has a free bias; b* is defined for profiled models")
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
                f"a point of model {self.name!r} has {len(self.params)} coordinates "
                f"{list(self.params)}, got shape {theta.shape}"
            )
        with np.errstate(all="ignore"):  # a non-finite value is reported by check_point, not warned about
            loss, grad, hessian = self.loss(theta), self.gradient(theta), self.hessian(theta)
        self.check_point(theta, {"loss": loss, "gradient": grad, "Hessian": hessian})
        out = {
            "status": "ok",
            "message": f"loss and derivatives at {format_point(self.params, theta)}",
            "model": self.name,
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
            out["energy"] = json_float(inv["E"])
        out["invariants"] = {k: json_float(v) for k, v in inv.items()}
        return out

