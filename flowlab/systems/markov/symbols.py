"""The symbols of the Markov system and the names a parameter may not take.

The token x, the attention average m, the bias b, the chain's p and q, the logit gap D and the
display symbols pi_0, pi_1 live here, below :mod:`~flowlab.systems.markov.models`,
:mod:`~flowlab.systems.markov.derivation` and :mod:`~flowlab.systems.markov.latex`, so that the
reserved-name check a :class:`~flowlab.systems.markov.models.Model` runs imports none of them.
"""

from __future__ import annotations

import re
from functools import cache
from types import MappingProxyType

import sympy as sp

from flowlab.engine.errors import FlowlabInputError

#: The current token x_n in {0, 1}.
TOKEN = sp.Symbol("x", real=True)
#: The attention average m_n = (1/n) sum_{i <= n} x_i (MODELS.md section 4); m -> pi1 for long contexts.
ATTENTION = sp.Symbol("m", real=True)
#: The name of the bias parameter when the bias is free.
BIAS = "b"

#: The switching probabilities P(0 -> 1) = p and P(1 -> 0) = q of the chain.
P, Q = sp.symbols("p q", positive=True)
#: The logit gap D = f(theta; 1) - f(theta; 0).
GAP = sp.Symbol("D", real=True)
#: p = 1/(1+s), q = 1/(1+t) with s, t > 0 maps (0, 1)^2 onto the positive quadrant, so that
#: 1 - p and 1 - q are visibly positive and logarithms can be expanded safely.
ODDS_S, ODDS_T = sp.symbols("s t", positive=True)
#: The stationary probabilities as they are displayed in LaTeX.
PI0_SYM, PI1_SYM = sp.symbols("pi_0 pi_1", positive=True)


def param_symbol(name: str) -> sp.Symbol:
    """The SymPy symbol of a named parameter (parameters are real)."""
    return sp.Symbol(name, real=True)


#: Names of the derivation's symbols that meet a model's parameters (name -> role); a parameter
#: with one of these names would be confused with them (:func:`reserved_names` refuses it): D is
#: substituted by the gap, and ``vanishes`` turns a parameter under |.| into a positive symbol of
#: the same name, which would equal p, q, s or t. (The symbols u and Z of
#: :func:`flowlab.systems.markov.derivation.gap_identities` meet no parameter.)
INTERNAL_NAMES = {
    P.name: "the switching probability p of the chain",
    Q.name: "the switching probability q of the chain",
    GAP.name: "the logit gap D",
    ODDS_S.name: "the odds variable s of p = 1/(1+s) in the derivation's proofs",
    ODDS_T.name: "the odds variable t of q = 1/(1+t) in the derivation's proofs",
}


@cache
def reserved_names() -> MappingProxyType:
    """Every name a parameter may not take (name -> why), derived from the pipeline's own symbols.

    The token x, the attention average m and the bias b; the derivation's symbols that meet the
    parameters (p, q, D, s, t: :data:`INTERNAL_NAMES`) and its special functions (sigmoid,
    softplus, profiled_logit0); the whitelisted functions of the parser; the names the compiled
    NumPy code calls (collected from a compiled probe that uses every whitelisted and special
    function, so the list follows SymPy's printer); the invariant search's constant C and the
    LaTeX symbols pi_0, pi_1; and the Python keywords. Names of the form x0, x1, ... (lambdify's
    common-subexpression temporaries) are refused by :func:`check_param_name` as well.
    """
    import keyword

    from flowlab.symbolic.compile import compiled_names
    from flowlab.symbolic.parse import ALLOWED_FUNCTIONS
    from flowlab.symbolic.special import NUMPY_IMPLEMENTATIONS

    out = {name: "a Python keyword" for name in keyword.kwlist}
    out.update((name, "a name the compiled NumPy code uses") for name in compiled_names())
    out.update((name, "the name of a function of the logit whitelist") for name in ALLOWED_FUNCTIONS)
    out.update((name, "the name of a special function of the derivation") for name in NUMPY_IMPLEMENTATIONS)
    internal = {**INTERNAL_NAMES, PI0_SYM.name: "the stationary probability pi_0 in the LaTeX output",
                PI1_SYM.name: "the stationary probability pi_1 in the LaTeX output",
                "C": "the constant of integration of the invariant search (flowlab.systems.markov.invariants)",
                TOKEN.name: "the token x", ATTENTION.name: "the attention average m",
                BIAS: "the bias b (a free bias, --free-bias or bias='free', makes it a coordinate)"}
    out.update((name, f"reserved for {role}") for name, role in internal.items())
    return MappingProxyType(out)


#: lambdify's common-subexpression temporaries are named x0, x1, ... (SymPy's numbered_symbols()).
_CSE_TEMPORARY = re.compile(r"x[0-9]+")


def check_param_name(name: str) -> str:
    """Refuse a parameter name that the derivation, the compiler or Python reserves (with the reason)."""
    reason = reserved_names().get(name)
    if reason is None and _CSE_TEMPORARY.fullmatch(name):
        reason = "reserved for lambdify's common-subexpression temporaries x0, x1, ..."
    if reason is not None:
        raise FlowlabInputError(f"invalid parameter name {name!r} (reserved): it is {reason}; choose another name")
    return name
