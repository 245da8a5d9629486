"""The symbolic structure of the critical set of a profiled loss L = ell(D(theta)) (SymPy).

With the bias profiled, grad L = ell'(D) grad D (proved in :mod:`flowlab.systems.markov.derivation`) and ell is
strictly convex with its single minimum at D*, so the critical set is exactly

    {D = D*}  (global minima, loss H)   union   {grad D = 0}  (D constant on each component).

This module solves grad D = 0 without trusting a single call to ``sympy.solve``:

* every variable inside |.| or sign(.) is split into the cases > 0, < 0 and = 0, so each case
  is an ordinary (typically polynomial) system;
* each equation is factorised and every choice of one factor per equation is solved on its own
  (a product vanishes iff one factor does), which is where ``solve`` alone loses branches;
* every solution is substituted back and checked to vanish, solutions contained in larger ones
  are absorbed, and the sign cases of a component are merged (e = 0 for w > 0, w < 0 and w = 0
  is the line e = 0).

On a component where the fixed coordinates are constants and one direction is normal, the normal
curvature of D is an expression c(free) and the normal curvature of L is ell'(D0) c: the set
splits where c changes sign, at the solutions of c = 0 (found the same way). The structure does
not depend on (p, q); :mod:`flowlab.systems.markov.critical` binds it to a chain and classifies.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np
import sympy as sp

from flowlab.symbolic.simplify import tidy
from flowlab.systems.markov.derivation import derive
from flowlab.systems.markov.models import Model
from flowlab.systems.markov.symbols import P, Q

#: Cases of a split variable: positive, negative, zero.
SIGNS = (1, -1, 0)


@dataclass(frozen=True)
class FlatComponent:
    """A component of {grad D = 0}: ``fixed`` coordinates as expressions of the ``free`` ones.

    ``cases`` lists the sign patterns (one entry per split symbol of the structure, in
    :attr:`CriticalStructure.split` order; the entries of fixed symbols are ignored) on which the
    component exists, or is None when it exists for all of them.
    """

    fixed: tuple[tuple[sp.Symbol, sp.Expr], ...]
    free: tuple[sp.Symbol, ...]
    cases: tuple[tuple[int, ...], ...] | None
    gap_value: sp.Expr
    #: Normal curvature of D (when one coordinate is fixed to a constant), else None.
    curvature: sp.Expr | None
    #: Points of the component where the curvature vanishes, as dicts free symbol -> value.
    splits: tuple[tuple[tuple[sp.Symbol, sp.Expr], ...], ...]
    verified: bool

    @property
    def fixed_dict(self) -> dict:
        return dict(self.fixed)

    def condition(self, split: tuple[sp.Symbol, ...], *, latex: bool) -> str:
        """The sign-case condition ('' when the component exists for every case)."""
        if self.cases is None:
            return ""
        parts = []
        for pattern in self.cases:
            conds = [
                (sp.latex(s) if latex else str(s)) + {1: " > 0", -1: " < 0", 0: " = 0"}[sg]
                for s, sg in zip(split, pattern)
                if s in self.free
            ]
            parts.append((r",\ " if latex else ", ").join(conds))
        return (r"\ \text{or}\ " if latex else " or ").join(p for p in parts if p)


@dataclass(frozen=True)
class CriticalStructure:
    """{D = D*} and the components of {grad D = 0} of a profiled model, derived once."""

    model: Model
    gap: sp.Expr
    split: tuple[sp.Symbol, ...]
    flat: tuple[FlatComponent, ...]
    #: True when every case system was solved and every solution verified by substitution.
    solved: bool
    notes: tuple[str, ...]
    #: Where the structure holds: each Max/Min keeps the branch it takes at theta = 0; the
    #: conditions (expressions that must be > 0) describe that region (empty: everywhere).
    region: tuple[sp.Expr, ...] = ()


def split_symbols(exprs) -> tuple[tuple[sp.Symbol, ...], bool]:
    """Symbols inside Abs/sign, and whether every such argument is a bare symbol."""
    args = {a for e in exprs for f in e.atoms(sp.Abs, sp.sign) for a in f.args}
    ok = all(isinstance(a, sp.Symbol) for a in args)
    return tuple(sorted((a for a in args if isinstance(a, sp.Symbol)), key=str)), ok


def _case_substitution(split, pattern):
    """(substitution into the case, map back to the original symbols, unknown of each symbol).

    In the case, a split symbol s is sign * m with m = |s| > 0 (or 0); its unknown is m.
    """
    sub, back, unknown = {}, {}, {}
    for s, sg in zip(split, pattern):
        if sg == 0:
            sub[s] = sp.S.Zero
        else:
            m = sp.Symbol(f"{s.name}_m", positive=True)  # |s|
            sub[s] = sg * m
            back[m] = sg * s
            unknown[s] = m
    return sub, back, unknown


def _factors(expr) -> list[sp.Expr]:
    """The non-constant irreducible factors of the numerator of ``expr``."""
    num = sp.numer(sp.together(expr))
    _, factors = sp.factor_list(num)
    return [f for f, _ in factors if f.free_symbols]


def _solve_system(eqs, unknowns) -> tuple[list[dict], bool]:
    """All solutions of eqs = 0 by factor combinations; (solutions, every combination solved)."""
    eqs = [sp.simplify(e) for e in eqs]
    eqs = [e for e in eqs if e != 0]
    if any(e.is_number for e in eqs):  # a non-zero constant: no solution in this case
        return [], True
    if not eqs:
        return [{}], True
    lists = [_factors(e) for e in eqs]
    if any(not fl for fl in lists):
        return [], True
    out, ok = [], True
    seen = set()
    for combo in itertools.product(*lists):
        system = tuple(sorted(set(combo), key=sp.default_sort_key))
        if system in seen:
            continue
        seen.add(system)
        try:
            sols = sp.solve(list(system), unknowns, dict=True)
        except NotImplementedError:
            ok = False
            continue
        for sol in sols:
            if all(v.is_real is not False for v in sol.values()) and all(
                not (k.is_positive and v.is_positive is False) for k, v in sol.items()
            ):
                out.append(sol)
    return out, ok


def _component_key(fixed: dict) -> tuple:
    return tuple(sorted(((str(k), sp.srepr(v)) for k, v in fixed.items())))


def _solve_flat(gap, params) -> tuple[tuple, list[FlatComponent], bool, list[str]]:
    """(split symbols, components of {grad D = 0}, every case solved, notes)."""
    grad = [tidy(sp.diff(gap, s)) for s in params]
    split, bare = split_symbols([gap, *grad])
    notes = []
    if not bare:
        return split, [], False, ["|.| or sign(.) of an expression that is not a single parameter: not split"]
    raw, solved_all = _case_solutions(grad, params, split)
    kept = _absorb(_merge_cases(raw), split)
    comps = [_flat_component(gap, params, split, fixed, patterns, verified, notes) for fixed, patterns, verified in kept]
    return split, comps, solved_all, notes


def _case_solutions(grad, params, split) -> tuple[list, bool]:
    """Every solution of grad D = 0 in every sign case, as (fixed dict in the original symbols,
    pattern, verified), and whether every case was solved."""
    raw = []
    solved_all = True
    for pattern in itertools.product(SIGNS, repeat=len(split)):
        sub, back, unknown = _case_substitution(split, pattern)
        unknowns = [unknown.get(s, s) for s in params if not (s in sub and sub[s] == 0)]
        case_grad = [g.subs(sub) for g in grad]
        sols, ok = _solve_system(case_grad, unknowns)
        solved_all &= ok
        for sol in sols:
            fixed = {}
            for s in params:
                if s in sub and sub[s] == 0:
                    fixed[s] = sp.S.Zero
                    continue
                u = unknown.get(s, s)
                if u in sol:
                    sign = pattern[split.index(s)] if s in sub else 1  # u = |s|, s = sign * u
                    fixed[s] = sp.simplify((sign * sol[u]).subs(back))
            verified = all(sp.simplify(g.subs(sol)) == 0 for g in case_grad)
            raw.append((fixed, pattern, verified))
    return raw, solved_all


def _merge_cases(raw) -> list:
    """Merge the sign cases of the same solution: [fixed, {patterns}, all verified]."""
    groups: dict[tuple, list] = {}
    for fixed, pattern, verified in raw:
        groups.setdefault(_component_key(fixed), []).append((fixed, pattern, verified))
    merged = []
    for items in groups.values():
        fixed = items[0][0]
        merged.append([fixed, {it[1] for it in items}, all(it[2] for it in items)])
    return merged


def _absorb(merged, split) -> list:
    """Absorb components contained in larger ones (e.g. the point (0, 0) in the line e = 0)."""
    merged.sort(key=lambda m: len(m[0]))
    kept = []
    for fixed, patterns, verified in merged:
        host = None
        for other in kept:
            ofixed = other[0]
            if len(ofixed) < len(fixed) and all(
                sp.simplify(sp.sympify(s).subs(fixed) - v.subs(fixed)) == 0 for s, v in ofixed.items()
            ):
                host = other
                break
        if host is None:
            kept.append([fixed, set(patterns), verified])
        else:
            # The patterns of the absorbed piece, with the sign of its fixed split values.
            for pat in patterns:
                new = tuple(
                    int(sp.sign(fixed[s])) if s in fixed and fixed[s].is_number else sg
                    for s, sg in zip(split, pat)
                )
                host[1].add(new)
            host[2] = host[2] and verified
    return kept


def _flat_component(gap, params, split, fixed, patterns, verified, notes) -> FlatComponent:
    """The component with these ``fixed`` coordinates: its cases, gap value and normal curvature."""
    free = tuple(s for s in params if s not in fixed)
    free_idx = [i for i, s in enumerate(split) if s in free]
    reduced = {tuple(p[i] for i in free_idx) for p in patterns}
    full = set(itertools.product(SIGNS, repeat=len(free_idx)))
    cases = None if reduced >= full else tuple(sorted(patterns, reverse=True))
    d0 = sp.simplify(gap.subs(fixed))
    if d0.free_symbols & set(free):
        # D must be constant on a connected set where grad D = 0; per case it may differ.
        per_case = {sp.simplify(d0.subs(_case_substitution(split, p)[0])) for p in patterns}
        if len(per_case) == 1 and not next(iter(per_case)).free_symbols:
            d0 = next(iter(per_case))
        else:
            verified = False
            notes.append(f"D is not constant on the component {fixed}")
    curvature, splits = None, ()
    if len(fixed) == 1 and all(v.is_number for v in fixed.values()):
        (s_fixed,) = fixed
        curvature = sp.factor(tidy(sp.diff(gap, s_fixed, 2)).subs(fixed))
        splits = _curvature_zeros(curvature, free, split, patterns)
    return FlatComponent(
        fixed=tuple(fixed.items()),
        free=free,
        cases=cases,
        gap_value=d0,
        curvature=curvature,
        splits=splits,
        verified=verified,
    )


def _curvature_zeros(c, free, split, patterns) -> tuple:
    """Solutions of c = 0 on the component, per sign case, in the original symbols."""
    if not free or not c.free_symbols:
        return ()
    out, seen = [], set()
    for pattern in sorted(patterns, reverse=True):
        sub, back, unknown = _case_substitution(split, pattern)
        unknowns = [unknown.get(s, s) for s in free if not (s in sub and sub[s] == 0)]
        sols, _ = _solve_system([c.subs(sub)], unknowns[:1])
        for sol in sols:
            point = {}
            for s in free:
                u = unknown.get(s, s)
                if s in sub and sub[s] == 0:
                    point[s] = sp.S.Zero
                elif u in sol:
                    sign = pattern[split.index(s)] if s in sub else 1
                    point[s] = sp.simplify((sign * sol[u]).subs(back))
            key = _component_key(point)
            if point and key not in seen:
                seen.add(key)
                out.append(tuple(point.items()))
    return tuple(out)


def fix_branches(expr, params):
    """Replace each Max/Min by the argument it selects at theta = 0.

    Returns (expression, region): the region is a tuple of expressions that are > 0 exactly where
    every Max/Min keeps that branch (for ``ewa``: |c| < 1/2 around a = 0). Raises ValueError when a
    branch cannot be decided at theta = 0 (a tie or a symbolic value).
    """
    at0 = {s: 0 for s in params}
    region = []

    def pick(f):
        vals = [a.subs(at0) for a in f.args]
        if not all(v.is_number for v in vals) or len({float(v) for v in vals}) != len(vals):
            raise ValueError(f"cannot decide the branch of {f} at theta = 0")
        fn = max if isinstance(f, sp.Max) else min
        best = fn(range(len(vals)), key=lambda i: float(vals[i]))
        for i, a in enumerate(f.args):
            if i != best:
                region.append(f.args[best] - a if isinstance(f, sp.Max) else a - f.args[best])
        return f.args[best]

    out = expr.replace(lambda e: isinstance(e, (sp.Max, sp.Min)), pick)
    return out, tuple(region)


@cache
def critical_structure(model: Model) -> CriticalStructure | None:
    """The structure of the critical set of a profiled model (None when the bias is free)."""
    if model.bias != "profiled":
        return None
    d = derive(model)
    gap, region, notes = d.gap, (), []
    if gap.has(sp.Max, sp.Min):
        try:
            gap, region = fix_branches(gap, d.params)
        except ValueError as exc:
            return CriticalStructure(model, d.gap, (), (), False, (str(exc),))
        notes.append("Max/Min fixed to their branch at theta = 0: valid where "
                     + " and ".join(f"{sp.sstr(r)} > 0" for r in region))
    if gap.has(sp.Piecewise, sp.Heaviside):
        return CriticalStructure(model, d.gap, (), (), False, ("D has Piecewise/Heaviside: not solved symbolically",))
    split, flat, solved, more = _solve_flat(gap, d.params)
    return CriticalStructure(
        model=model,
        gap=gap,
        split=split,
        flat=tuple(flat),
        solved=solved and all(c.verified for c in flat),
        notes=tuple(notes + more),
        region=region,
    )


# ------------------------------------------------------------- box-independent critical values
@dataclass(frozen=True)
class CriticalLevels:
    """The gap values D0 of every component of {grad D = 0} over the whole parameter space.

    The non-global critical values of the profiled loss are ell(D0) for D0 != D*; with the bias
    free the critical points are the lifts b = b*(theta) of the profiled ones (dL/db = 0 iff
    b = b*(theta)), with the same losses. Where Max/Min occur, every smooth piece (each Max/Min
    replaced by one of its arguments) and every kink (two arguments tied, by Lagrange
    multipliers) is solved on the whole space, valid or not: the values form a superset of the
    true ones, so the lowest of them is a conservative (still correct) level.
    """

    model: Model
    gap_values: tuple[sp.Expr, ...]  # expressions in p, q or pi1
    dimension: int  # the largest dimension of a component
    solved: bool
    how: str
    #: Expressions in pi1 that are non-zero for the solution to hold (zero: a special chain, e.g. p = q,
    #: where a factor dropped as generically non-zero vanishes and more solutions may exist).
    special: tuple[sp.Expr, ...] = ()

    def values_at(self, p: float, q: float) -> list[float] | None:
        """The gap values at the chain (p, q), or None when the structure does not cover this chain."""
        subs = {P: p, Q: q, PI1: p / (p + q)}
        if not self.solved or any(abs(complex(c.subs(subs))) <= 1e-12 for c in self.special):
            return None
        vals = [complex(v.subs(subs)) for v in self.gap_values]
        if any(abs(v.imag) > 1e-12 * (1 + abs(v.real)) or not np.isfinite(v.real) for v in vals):
            return None
        return [v.real for v in vals]


#: D depends on (p, q) only through the attention limit m = pi1: p = pi1 q / (1 - pi1) leaves pi1 alone.
PI1 = sp.Symbol("pi1", positive=True)


def _generic(eq, unknowns) -> tuple[sp.Expr, list[sp.Expr]]:
    """``eq`` without its factors free of the unknowns (non-zero for a generic chain), and those factors."""
    num = sp.numer(sp.together(eq))
    if num == 0:
        return sp.S.Zero, []
    _, factors = sp.factor_list(num)
    keep = [f**m for f, m in factors if f.free_symbols & unknowns]
    return (sp.Mul(*keep) if keep else sp.S.One), [f for f, _ in factors if not f.free_symbols & unknowns]


def _stationary(expr, params, constraints) -> tuple[list[tuple[sp.Expr, int]], list[sp.Expr], bool]:
    """(D0, dimension) of every stationary set of ``expr`` on {constraints = 0}, the chain conditions
    (expressions in pi1) under which more solutions may exist, and whether every case was solved."""
    mus = [sp.Symbol(f"mu_{i}") for i in range(len(constraints))]
    grad = [tidy(sp.diff(expr, s) - sum(m * sp.diff(k, s) for m, k in zip(mus, constraints))) for s in params]
    split, bare = split_symbols([expr, *grad, *constraints])
    if not bare:
        return [], [], False
    out, special, solved_all = [], [], True
    for pattern in itertools.product(SIGNS, repeat=len(split)):
        sub, _, unknown = _case_substitution(split, pattern)
        theta = [unknown.get(s, s) for s in params if not (s in sub and sub[s] == 0)]
        eqs = []
        for e in [g.subs(sub) for g in grad] + [k.subs(sub) for k in constraints]:
            e, conds = _generic(e, set(theta) | set(mus))
            eqs.append(e)
            special.extend(conds)
        sols, ok = _solve_system(eqs, theta + mus)
        solved_all &= ok
        for sol in sols:
            if not all(sp.simplify(e.subs(sol)) == 0 for e in eqs):
                return out, special, False  # a solution that does not verify: not trusted
            d0 = sp.simplify(expr.subs(sub).subs(sol))
            if d0.free_symbols & set(theta):
                return out, special, False  # D not visibly constant on a component: give up honestly
            out.append((d0, sum(1 for u in theta if u not in sol)))
    return out, special, solved_all


_LEVELS: dict = {}


def critical_levels(model: Model, pi1: float | None = None) -> CriticalLevels:
    """Box-independent gap values of the critical sets of ``model`` (profiled counterpart if the bias is free).

    Solved once for a generic chain; for a chain with stationary law ``pi1`` where a factor
    dropped as generically non-zero vanishes (``special``), solved again with that exact pi1.
    """
    prof = model.with_profiled_bias()
    key = (prof.params, sp.srepr(prof.logit))
    if key not in _LEVELS:  # keyed by the logit: ewab and ewa share their profiled form
        _LEVELS[key] = _levels(prof, None)
    lev = _LEVELS[key]
    if pi1 is not None and any(abs(complex(c.subs(PI1, pi1))) <= 1e-12 for c in lev.special):
        exact = sp.Rational(pi1)  # the float's exact value, not a guess
        if (key, exact) not in _LEVELS:
            _LEVELS[key, exact] = _levels(prof, exact)
        lev = _LEVELS[key, exact]
    return lev


def _levels(prof: Model, pi1) -> CriticalLevels:
    model = prof
    d = derive(prof)
    gap, params = d.gap.subs(P, PI1 * Q / (1 - PI1)), d.params
    gap = gap.replace(lambda e: isinstance(e, (sp.Max, sp.Min)), lambda e: e.func(*(sp.cancel(a) for a in e.args)))
    if Q in gap.free_symbols:
        gap = sp.factor(sp.simplify(gap))
    if pi1 is not None:
        gap = gap.subs(PI1, pi1)
    if Q in gap.free_symbols:
        return CriticalLevels(model, (), 0, False, "D depends on (p, q) other than through pi1: not solved")
    if gap.has(sp.Piecewise, sp.Heaviside):
        return CriticalLevels(model, (), 0, False, "D has Piecewise/Heaviside: not solved symbolically")
    atoms = sorted(gap.atoms(sp.Max, sp.Min), key=sp.default_sort_key)
    if not atoms:
        st = critical_structure(prof)
        return CriticalLevels(
            model, tuple(c.gap_value for c in st.flat), max((len(c.free) for c in st.flat), default=0), st.solved,
            "every component of {grad D = 0} on the whole parameter space (SymPy, every sign case, verified)",
        )
    if any(a.has(sp.Max, sp.Min) for atom in atoms for a in atom.args):
        return CriticalLevels(model, (), 0, False, "nested Max/Min in D: branches not enumerated")
    # per atom: each argument (a smooth piece), or a pair of tied arguments (a kink)
    options = [[(a,) for a in atom.args] + list(itertools.combinations(atom.args, 2)) for atom in atoms]
    values, dim, solved, special = set(), 0, True, set()
    for combo in itertools.product(*options):
        piece = gap.xreplace({atom: choice[0] for atom, choice in zip(atoms, combo)})
        ties = [c[0] - c[1] for c in combo if len(c) == 2]
        found, conds, ok = _stationary(piece, params, ties)
        solved &= ok
        special.update(conds)
        values.update(v for v, _ in found)
        dim = max([dim, *(k for _, k in found)])
    return CriticalLevels(
        model, tuple(sorted(values, key=sp.default_sort_key)), dim, solved and all(v.is_number or v.free_symbols <= {PI1}
                                                                            for v in values),
        f"a superset: every smooth piece and kink of the {len(atoms)} Max/Min of D solved on the whole "
        "parameter space (SymPy, every sign case, verified by substitution)",
        tuple(sorted(special, key=sp.default_sort_key)),
    )
