"""Conserved quantities of the profiled flow, derived by SymPy (method of characteristics).

With the bias profiled, L = ell(D(theta)) and the flow theta' = -ell'(D) grad D moves along grad D, so
every I with grad I . grad D = 0 is conserved; an n-parameter model has n - 1 independent ones
(locally). They are found as first integrals of the characteristic system du/dv = D_u / D_v:

1. **Separable pairs.** If D_u / D_v depends only on (u, v) and factors as A(u) B(v), then
   I = int du / A(u) - int B(v) dv depends on (u, v) only and grad I . grad D = 0.
2. **Elimination.** If D_u / D_v also depends on other variables that an invariant already found
   determines (I_1 = C solved for one of them), the ratio is separable in (u, v) at fixed C; the
   integral with C replaced by I_1 is a further invariant.

Variables inside |.| and sign(.) are split by sign (v = +-s with s > 0) and the cases are joined as
I = A(|v|) + sign(v) B(|v|); Max/Min keep the branch they take at theta = 0 (for ``ewa``: the
region |c| < 1/2 around a = 0), stated in the result. Every invariant is verified symbolically
(grad I . grad D = 0 on every sign case) when SymPy can, and numerically along flows by the tests.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cache

import sympy as sp

from flowlab.symbolic.simplify import tidy
from flowlab.systems.markov.critical_symbolic import fix_branches, split_symbols
from flowlab.systems.markov.derivation import derive, vanishes
from flowlab.systems.markov.models import Model
from flowlab.systems.markov.symbols import PI1_SYM, P, Q


@dataclass(frozen=True)
class DerivedInvariant:
    expr: sp.Expr
    pair: tuple[str, str]
    method: str  # 'separable' or 'elimination'
    verified: bool  # grad I . grad D = 0 proved by SymPy
    matches: str | None = None  # name of a model invariant it reproduces (e.g. 'E')


@dataclass(frozen=True)
class InvariantSearch:
    model: str
    region: str
    invariants: tuple[DerivedInvariant, ...]
    expected: int  # n - 1
    notes: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        return len(self.invariants) == self.expected and all(i.verified for i in self.invariants)

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "region": self.region,
            "expected": self.expected,
            "found": len(self.invariants),
            "complete": self.complete,
            "invariants": [
                {"expression": str(i.expr), "latex": sp.latex(i.expr), "pair": list(i.pair), "method": i.method,
                 "verified": i.verified, "matches": i.matches}
                for i in self.invariants
            ],
            "notes": list(self.notes),
        }


def _in_pi1(expr):
    """``expr`` written with pi_1 = p/(p + q) when it depends on the chain only through pi_1 (else unchanged)."""
    if not expr.has(P, Q):
        return expr
    written = sp.simplify(expr.subs(Q, P * (1 - PI1_SYM) / PI1_SYM))
    return expr if written.has(P, Q) else written


def _separate(ratio, u, v):
    """ratio = A(u) B(v)? -> (A, B) or None."""
    sep = sp.separatevars(sp.factor(ratio), symbols=[u, v], dict=True)
    if not sep:
        return None
    coeff = sep.get("coeff", 1)
    return coeff * sep.get(u, 1), sep.get(v, 1)


def _integral_pair(ratio, u, v, moving=()):
    """First integral of du/dv = ratio when separable: int du/A(u) - int B(v) dv.

    ``moving``: the other variables of the flow; the ratio must not depend on them (constants
    such as p, q and an invariant's value C may appear).
    """
    if ratio.free_symbols & set(moving):
        return None
    parts = _separate(ratio, u, v)
    if parts is None:
        return None
    A, B = parts
    if A.has(v) or B.has(u):
        return None
    Iu = sp.integrate(sp.apart(sp.simplify(1 / A), u), u)
    Iv = sp.integrate(sp.apart(sp.simplify(B), v), v)
    if Iu.has(sp.Integral) or Iv.has(sp.Integral):
        return None
    return sp.simplify(Iu - Iv)


#: What SymPy raises when it cannot separate, integrate or solve a case (the pair is then skipped);
#: PolynomialError: ``apart`` of a ratio with transcendental generators (e.g. a LambertW root).
_SYMPY_FAILURES = (NotImplementedError, ValueError, TypeError, sp.PolynomialError)


@cache
def derive_invariants(model: Model) -> InvariantSearch:
    """Conserved quantities of the profiled flow of ``model`` (see the module docstring)."""
    d = derive(model.with_profiled_bias() if model.bias == "free" else model)
    params = list(d.params)
    notes = []
    try:
        gap, conds = fix_branches(d.gap, params)
    except ValueError as exc:
        return InvariantSearch(model.name, "", (), len(params) - 1, (str(exc),))
    region = " and ".join(f"{sp.sstr(_in_pi1(c))} > 0" for c in conds)
    grad = [tidy(sp.diff(gap, s)) for s in params]
    split, bare = split_symbols([gap, *grad])
    if not bare:
        return InvariantSearch(model.name, region, (), len(params) - 1, ("|.| of an expression: not split",))
    search = _Characteristics(params, grad, split)
    found = search.separable_pairs()
    eliminated = 0 < len(found) < len(params) - 1
    if eliminated:
        search.eliminate(found)
    unproved = [f for f in found if not f.verified]
    found = [f for f in found if f.verified]
    if len(found) < len(params) - 1:
        missing = len(params) - 1 - len(found)
        notes.append(
            f"the flow has {len(params) - 1} independent conserved quantities (locally, one fewer than the "
            f"{len(params)} parameters); {len(found)} {'is' if len(found) == 1 else 'are'} known in closed form and "
            f"{missing} {'is' if missing == 1 else 'are'} not: SymPy could not separate the remaining characteristic "
            "equations du/dv = D_u/D_v" + (" (also not at a fixed value of the ones found)" if eliminated else "")
            + (f"; {len(unproved)} further integral{'s' if len(unproved) > 1 else ''} from them could not be shown "
               "to be conserved (grad I . grad D = 0) and {} not listed".format("are" if len(unproved) > 1 else "is")
               if unproved else "")
        )
    # compare with the model's own candidates
    out = []
    for inv in found:
        match = None
        for name, cand in model.invariants:
            if vanishes(inv.expr - cand):
                match = name
        out.append(DerivedInvariant(inv.expr, inv.pair, inv.method, inv.verified, match))
    return InvariantSearch(model.name, region or "everywhere (no Max/Min)", tuple(out), len(params) - 1, tuple(notes))


class _Characteristics:
    """First integrals of du/dv = D_u / D_v for the pairs of parameters, split by sign."""

    def __init__(self, params, grad, split):
        self.params, self.grad, self.split = params, grad, split
        self.mags = {s: sp.Symbol(f"{s.name}_m", positive=True) for s in split}

    def case_integral(self, ratio_of, u, v, extra_sub=None, moving_ok=()):
        """The integral for every sign pattern, joined into one expression (or None)."""
        split, mags = self.split, self.mags
        results = {}
        for pattern in itertools.product((1, -1), repeat=len(split)):
            sub = {s: sg * mags[s] for s, sg in zip(split, pattern)}
            # in the case, u and v are sign * magnitude: du = sign du_m
            su = dict(zip(split, pattern)).get(u, 1)
            sv = dict(zip(split, pattern)).get(v, 1)
            r = sp.simplify(ratio_of(sub) * sv / su)
            if extra_sub:
                r = sp.simplify(r.subs(extra_sub(sub)))
            um = mags.get(u, u)
            vm = mags.get(v, v)
            moving = [mags.get(s, s) for s in self.params if s not in (u, v) and s not in moving_ok]
            integral = _integral_pair(r, um, vm, moving)
            if integral is None:
                return None
            results[pattern] = integral
        if not split:
            return results[()]
        # join the sign cases: I = A(|.|) + sign(.) B(|.|), one split variable at a time
        expr = None
        if len(split) == 1:
            s = split[0]
            plus, minus = results[(1,)], results[(-1,)]
            back = {mags[s]: sp.Abs(s)}
            A = sp.simplify(sp.expand_log((plus + minus) / 2, force=True)).subs(back)
            B = sp.simplify(sp.expand_log((plus - minus) / 2, force=True)).subs(back)
            expr = A + sp.sign(s) * B
        return expr

    def separable_pairs(self) -> list[DerivedInvariant]:
        """1. the pairs whose ratio D_u / D_v is separable (at most n - 1 invariants)."""
        params, grad = self.params, self.grad
        found: list[DerivedInvariant] = []
        for u, v in itertools.combinations(params, 2):
            iu, iv = params.index(u), params.index(v)

            def ratio_of(sub, iu=iu, iv=iv):
                gu, gv = grad[iu].subs(sub), grad[iv].subs(sub)
                return gu / gv if gv != 0 else sp.nan

            expr = None
            try:
                expr = self.case_integral(ratio_of, u, v)
            except _SYMPY_FAILURES:
                expr = None
            if expr is None or expr.has(sp.nan, sp.zoo):
                continue
            if len(found) >= len(params) - 1:
                break
            found.append(DerivedInvariant(expr, (str(u), str(v)), "separable", _verify(expr, grad, params)))
        return found

    def eliminate(self, found: list[DerivedInvariant]) -> None:
        """2. at a fixed value C of an invariant found, solve it for a third variable z (per sign
        case, where z = sign * |z| makes the root unique) and separate the pair again; appends to ``found``."""
        params, grad, mags = self.params, self.grad, self.mags
        C = sp.Symbol("C", real=True)
        for inv in list(found):
            for u, v in itertools.combinations(params, 2):
                if len(found) >= len(params) - 1 or (str(u), str(v)) in [f.pair for f in found]:
                    continue
                for z in [s for s in params if s not in (u, v)]:
                    def eliminate(sub, z=z, inv=inv):
                        zm = mags.get(z, z)
                        sols = [r for r in sp.solve(sp.Eq(inv.expr.subs(sub), C), zm) if r.is_real is not False]
                        if z in mags:  # |z| > 0: drop the roots that are visibly negative
                            sols = [r for r in sols if r.is_positive is not False and not r.could_extract_minus_sign()]
                        if len(sols) != 1:
                            raise ValueError("no unique root")
                        return {zm: sols[0]}

                    iu, iv = params.index(u), params.index(v)

                    def ratio_of(sub, iu=iu, iv=iv):
                        return grad[iu].subs(sub) / grad[iv].subs(sub)

                    try:
                        expr = self.case_integral(ratio_of, u, v, extra_sub=eliminate, moving_ok=(z,))
                    except _SYMPY_FAILURES:
                        expr = None
                    if expr is None or expr.has(sp.nan, sp.zoo):
                        continue
                    expr = expr.subs(C, inv.expr)
                    found.append(DerivedInvariant(expr, (str(u), str(v)), "elimination", _verify(expr, grad, params)))
                    break


def _verify(expr, grad, params) -> bool:
    dot = sum(tidy(sp.diff(expr, s)) * g for s, g in zip(params, grad))
    try:
        return vanishes(dot, closed=False)
    except (NotImplementedError, TypeError, ValueError):
        return False
