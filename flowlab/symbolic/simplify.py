"""Canonical forms after differentiation and proofs that an expression is zero (SymPy).

System-independent: a system passes its own substitutions that make positivity visible (e.g. the
Markov chain's p = 1/(1+s)) to :func:`vanishes`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import sympy as sp

from flowlab.symbolic.special import closed_forms


def tidy(expr):
    """Canonical forms after differentiation: s sign(s) -> |s|, sign(s)^2 -> 1, s delta(s) -> 0.

    Derivatives are taken where they exist (s != 0 for sign(s)^2); s * DiracDelta(s) is zero
    as a distribution too.
    """
    for s in expr.free_symbols:
        expr = expr.subs({s * sp.sign(s): sp.Abs(s), s * sp.DiracDelta(s): 0, sp.sign(s) ** 2: 1})
    if expr.has(sp.DiracDelta):
        expr = expr.replace(sp.DiracDelta, lambda *args: sp.S.Zero)
    return expr


def simplifies_to_zero(expr, rewrites: Sequence[Mapping] = ()) -> bool:
    """SymPy proves expr == 0: by ``simplify``, else after each substitution of ``rewrites`` with
    logarithms expanded (the substitutions must make the arguments of the logarithms visibly positive)."""
    if sp.simplify(expr) == 0:
        return True
    return any(sp.simplify(sp.expand_log(expr.subs(rewrite), force=True)) == 0 for rewrite in rewrites)


def vanishes(expr, *, closed: bool = True, rewrites: Sequence[Mapping] = ()) -> bool:
    """True when SymPy proves ``expr == 0`` on every sign pattern of the symbols in |.|, sign.

    Special functions are replaced by their closed forms first (``closed=True``); ``rewrites`` as in
    :func:`simplifies_to_zero`. The proof holds off the measure-zero sets where a split symbol is 0.
    """
    if closed:
        expr = closed_forms(expr)
    if simplifies_to_zero(expr, rewrites):
        return True
    split = sorted(
        {a for f in expr.atoms(sp.Abs, sp.sign) for a in f.args if isinstance(a, sp.Symbol)},
        key=str,
    )
    if not split:
        return False
    for signs in itertools.product((1, -1), repeat=len(split)):
        case = {s: sg * sp.Symbol(s.name, positive=True) for s, sg in zip(split, signs)}
        if not simplifies_to_zero(expr.subs(case), rewrites):
            return False
    return True
