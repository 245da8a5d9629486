"""Models as data: named parameters and a symbolic logit f(theta; x) (MODELS.md sections 2-3).

A :class:`Model` is everything the pipeline needs to know about a model; the derivation,
the numerics and the analyses take any model, so a new one plugs in without new code paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache

import sympy as sp

from flowlab.engine.checks import FlowlabInputError
from flowlab.systems.markov.defaults import PRESET_NAMES
from flowlab.systems.markov.symbols import ATTENTION, BIAS, TOKEN, check_param_name, param_symbol
from flowlab.systems.markov.symbols import reserved_names as reserved_names  # re-exported: part of the documented API

BIAS_MODES = ("profiled", "free")


@dataclass(frozen=True)
class Model:
    """A logit model over named parameters.

    ``logit`` is f(theta; x) without the bias. With ``bias="profiled"`` the bias is replaced
    by its minimiser b*(theta); with ``bias="free"`` the parameter ``b`` is appended to
    ``params`` and added to the logit. ``invariants`` are candidate conserved quantities of
    the profiled flow (name -> expression in the parameters); the derivation proves or
    refutes each of them.
    """

    name: str
    params: tuple[str, ...]
    logit: sp.Expr
    bias: str = "profiled"
    invariants: tuple[tuple[str, sp.Expr], ...] = field(default=())
    description: str = ""

    def __post_init__(self):
        if self.bias not in BIAS_MODES:
            raise FlowlabInputError(f"bias must be one of {BIAS_MODES}, got {self.bias!r}")
        if len(set(self.params)) != len(self.params) or not self.params:
            raise FlowlabInputError(f"parameter names must be distinct and non-empty: {self.params}")
        for name in self.params:
            if name != BIAS:  # the bias is checked below: it appears exactly when bias='free'
                check_param_name(name)
        if (BIAS in self.params) != (self.bias == "free"):
            raise FlowlabInputError(
                f"the parameter {BIAS!r} is the bias: it appears exactly when bias='free'"
            )
        allowed = set(self.symbols) | {TOKEN, ATTENTION}
        for token in (0, 1):
            if self.full_logit.subs(TOKEN, token).has(sp.zoo, sp.nan, sp.oo, -sp.oo):
                raise FlowlabInputError(
                    f"the logit of {self.name!r} is undefined or infinite at the token x = {token} "
                    f"({self.full_logit.subs(TOKEN, token)}): the token takes the values 0 and 1"
                )
        stray = self.full_logit.free_symbols - allowed
        if stray:
            raise FlowlabInputError(
                f"logit of {self.name!r} uses unknown symbols {sorted(map(str, stray))}; "
                f"allowed: parameters {list(self.params)}, the token {TOKEN.name!r} and the attention "
                f"average {ATTENTION.name!r}"
            )

    @property
    def uses_attention(self) -> bool:
        """True when the logit reads the attention average m (not only the current token)."""
        return ATTENTION in self.logit.free_symbols

    @property
    def symbols(self) -> tuple[sp.Symbol, ...]:
        return tuple(param_symbol(n) for n in self.params)

    @property
    def full_logit(self) -> sp.Expr:
        """f(theta; x) including the bias when it is free."""
        return self.logit + (param_symbol(BIAS) if self.bias == "free" else 0)

    def with_free_bias(self, name: str | None = None) -> Model:
        """The same model with the bias b as a free coordinate of the flow."""
        if self.bias == "free":
            return self
        return replace(self, name=name or self.name + "b", params=self.params + (BIAS,), bias="free")

    def with_profiled_bias(self, name: str | None = None) -> Model:
        """The same logit with the bias replaced by its minimiser b*(theta)."""
        if self.bias == "profiled":
            return self
        default = self.name[:-1] if self.name.endswith(BIAS) and len(self.name) > 1 else self.name + "_profiled"
        params = tuple(n for n in self.params if n != BIAS)
        return replace(self, name=name or default, params=params, bias="profiled")


#: The preset names (one list, shared with the CLI).
EW, EWB, EWA, EWAB = PRESET_NAMES


def _ew() -> Model:
    e, w = param_symbol("e"), param_symbol("w")
    return Model(
        name=EW,
        params=("e", "w"),
        logit=e**2 * (1 + 2 * w * sp.Abs(w)) * TOKEN - e**2 / 2,
        invariants=(("E", e**2 - w**2 - sp.sign(w) * sp.log(sp.Abs(w))),),
        description="canonical model of the Local-to-Global paper (embedding e, FFN w), bias profiled",
    )


def _ewa() -> Model:
    e, w, a = param_symbol("e"), param_symbol("w"), param_symbol("a")
    s = (TOKEN - sp.Rational(1, 2)) + a * (ATTENTION - sp.Rational(1, 2))
    return Model(
        name=EWA,
        params=("e", "w", "a"),
        logit=e**2 * (s + 4 * w * sp.Abs(w) * sp.Max(s, 0)),
        description="model ew with the attention scalar a (MODELS.md section 4): residual stream e s alpha with "
        "s = (x - 1/2) + a (m - 1/2), m the causal attention average; bias profiled",
    )


@cache
def _presets() -> dict[str, Model]:
    ew = _ew()
    ewb = ew.with_free_bias(EWB)
    ewb = replace(ewb, description="model ew with the bias b free (what SGD trains)")
    ewa = _ewa()
    ewab = replace(ewa.with_free_bias(EWAB), description="model ewa with the bias b free")
    return {m.name: m for m in (ew, ewb, ewa, ewab)}


def __getattr__(name: str):
    """``PRESETS`` is built on first use (a Model's name check compiles a probe: too slow for import time)."""
    if name == "PRESETS":
        return _presets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def user_model(logit: str, params, *, name: str = "user", bias: str = "profiled") -> Model:
    """A model from a typed logit (parsed with a whitelist, never evaluated) and parameter names.

    ``params`` is a sequence of names or a comma-separated string; with ``bias="free"`` the bias b is
    appended as a coordinate. The logit may use the token x and the attention average m.

    >>> user_model("e**2*(1 + 2*w*Abs(w))*x - e**2/2", "e,w").logit == get_model("ew").logit
    True
    """
    from flowlab.systems.markov.logit import parse_logit, parse_params

    names = parse_params(params) if isinstance(params, str) else tuple(params)
    if bias not in BIAS_MODES:
        raise FlowlabInputError(f"bias must be one of {BIAS_MODES}, got {bias!r}")
    model = Model(name=name, params=names, logit=parse_logit(logit, names, allow_attention=True),
                  description=f"user-defined logit {logit.strip()}")
    return model.with_free_bias(name) if bias == "free" else model


def get_model(name: str) -> Model:
    """The preset model called ``name``."""
    try:
        return _presets()[name]
    except KeyError:
        raise FlowlabInputError(
            f"unknown model {name!r}; available: {', '.join(sorted(_presets()))}"
        ) from None
