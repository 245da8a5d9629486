"""Critical sets of a model's loss in a box, classified (MODELS.md section 3).

Two independent paths, which must agree:

* **symbolic** (profiled models, and free-bias models through their profiled counterpart):
  grad L = ell'(D) grad D with ell strictly convex and minimal at D*, so the critical set is
  {D = D*} (global minima) union {grad D = 0} (:mod:`flowlab.systems.markov.critical_symbolic` solves it with
  SymPy). On a component of {grad D = 0} with gap D0, the Hessian is ell'(D0) grad^2 D: the
  normal curvature ell'(D0) c decides between local minima and maxima (Morse-Bott), the
  component splits where c changes sign, and the split points are classified from higher
  order, through the sign of ell'(D0) (D - D0) on small spheres.
  With the bias free, L is strictly convex in b, so the critical points are (theta, b*(theta))
  for theta critical in the profiled model and, the Hessian's Schur complement in b being the
  profiled Hessian, the inertia gains one positive direction: profiled maxima become saddles.
* **numeric** (any model): multi-start roots of grad L, continuation, normal Hessians and
  higher-order tests (:mod:`flowlab.engine.critical`).

``complete`` is True only when the symbolic path solved every case and verified every solution
(so no critical point is missing from its sets by construction) and the numeric path, run
independently in the same box, found no critical point off those sets and the same kinds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import numpy as np

from flowlab.engine.checks import FlowlabInputError, integer
from flowlab.engine.critical import ISOLATED_RADIUS
from flowlab.symbolic.compile import compile_expression
from flowlab.systems.markov.chain import NEAR_DEGENERATE_GAP, MarkovChain
from flowlab.systems.markov.models import Model
from flowlab.systems.markov.numeric import DEFAULT_HALF_WIDTH, NumericModel, make_box  # noqa: F401 (re-exported)
from flowlab.systems.markov.symbols import P as P_SYM
from flowlab.systems.markov.symbols import Q as Q_SYM

KINDS = ("global_min", "local_min", "local_max", "saddle", "degenerate")
METHODS = ("auto", "symbolic", "numeric")
#: Tolerances: membership of a numeric point in a symbolic set; loss equal to H on a degenerate
#: chain (otherwise the chain's gap-scaled :attr:`~flowlab.systems.markov.chain.MarkovChain.loss_tolerance`).
MEMBER_TOL = 1e-5
LOSS_TOL = 1e-9


@dataclass(frozen=True)
class CriticalSet:
    """One critical set (or a piece of one) with a single kind, sampled inside the box."""

    kind: str
    dimension: int
    loss: float
    equation: str  # LaTeX
    points: np.ndarray  # (k, n) samples in the model's parameter order
    source: str  # 'symbolic' or 'numeric'
    text: str = ""  # the equation in plain text
    description: str = ""
    location: str = ""  # for the global minima: the side of the split where they lie (text)
    location_latex: str = ""
    #: points -> bool array: does a point lie on this set (symbolic sets only). A tool of the
    #: analysis (compiled code), not data: it is dropped when the set is pickled.
    member: Callable | None = field(default=None, repr=False, compare=False)

    def __reduce__(self):
        """Pickle the data only (``member`` is the last field and is left out)."""
        return (CriticalSet, tuple(getattr(self, f.name) for f in fields(self) if f.name != "member"))

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "dimension": self.dimension,
            "loss": self.loss,
            "equation": self.equation,
            "text": self.text,
            "description": self.description,
            "location": self.location,
            "location_latex": self.location_latex,
            "source": self.source,
            "points": self.points.tolist(),
        }


@dataclass(frozen=True)
class CriticalResult:
    model: Model
    params: tuple[str, ...]
    chain: MarkovChain
    box: dict[str, tuple[float, float]]
    degenerate: bool
    complete: bool
    sets: tuple[CriticalSet, ...]
    method: str
    message: str
    agreement: dict | None
    timings: dict[str, float]
    #: Symbolic critical sets (of the whole parameter space) with no point in the box, as text.
    outside_box: tuple[str, ...] = ()
    #: Context length N of the finite-context loss (None: the long-context limit).
    context: int | None = None

    def kinds(self) -> list[str]:
        return [s.kind for s in self.sets]

    @property
    def status(self) -> str:
        """'degenerate' (p + q = 1), else 'complete' or 'incomplete' (see :attr:`complete`)."""
        return "degenerate" if self.degenerate else "complete" if self.complete else "incomplete"

    @property
    def seconds(self) -> float:
        """Wall time of the analysis (``timings`` holds it by phase, in ``<phase>_s`` keys)."""
        return self.timings.get("total_s", sum(self.timings.values()))

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "message": self.message,
            "model": self.model.name,
            "chain": self.chain.as_dict(),
            "params": list(self.params),
            "box": {k: list(v) for k, v in self.box.items()},
            "degenerate": self.degenerate,
            "complete": self.complete,
            "method": self.method,
            "optimal_loss": self.chain.entropy_rate,
            "levels": {"unigram": self.chain.unigram_loss},
            "sets": [s.as_dict() for s in self.sets],
            "agreement": self.agreement,
            "outside_box": list(self.outside_box),
            "context": self.context,
            "nearly_degenerate": self.chain.nearly_degenerate,
            "seconds": self.seconds,
            "seconds_by_phase": {k.removesuffix("_s"): v for k, v in self.timings.items() if k != "total_s"},
        }


# ------------------------------------------------------------------------------ the box (make_box: numeric.py)
def _bounds(box, params):
    return np.array([box[n][0] for n in params]), np.array([box[n][1] for n in params])


def _in_box(x, lo, hi):
    pad = 1e-12 * (1 + np.abs(hi - lo))
    return np.all((x >= lo - pad) & (x <= hi + pad), axis=-1)


# ------------------------------------------------------------------------- symbolic sets
def _level_points(nm: NumericModel, target: float, lo, hi, per_axis=None):
    """Points of {D = target} in the box: sign changes along grid lines, refined by bisection.

    Where D is undefined (NaN) there is no sign change: such grid lines contribute nothing."""
    with np.errstate(all="ignore"):
        return _level_points_in(nm, target, lo, hi, per_axis)


def _level_points_in(nm: NumericModel, target: float, lo, hi, per_axis):
    n = lo.size
    per_axis = per_axis or {1: 1001, 2: 161}.get(n, 41)
    axes = [np.linspace(lo[i], hi[i], per_axis) for i in range(n)]
    pts = []
    for i in range(n):
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        g = np.moveaxis(grid, i, 0)  # lines along axis i: (per_axis, ..., n)
        f = nm.gap(g) - target
        a, b = g[:-1], g[1:]
        fa, fb = f[:-1], f[1:]
        hit = (np.sign(fa) * np.sign(fb) < 0) | (fa == 0)
        a, b, fa = a[hit], b[hit], fa[hit]
        for _ in range(60):
            m = 0.5 * (a + b)
            fm = nm.gap(m) - target
            left = np.sign(fm) == np.sign(fa)
            a = np.where(left[:, None], m, a)
            fa = np.where(left, fm, fa)
            b = np.where(left[:, None], b, m)
        pts.append(0.5 * (a + b))
    pts = np.concatenate(pts) if pts else np.zeros((0, n))
    return np.unique(np.round(pts, 12), axis=0)


def _thin(points, k):
    """At most k points, evenly spread through the (lexicographically sorted) samples."""
    if len(points) <= k:
        return points
    return points[np.linspace(0, len(points) - 1, k).round().astype(int)]


def _kind_with_free_bias(kind: str) -> str:
    """Inertia of the free-bias Hessian = profiled inertia + one positive (Schur complement)."""
    return "saddle" if kind == "local_max" else kind


@dataclass(frozen=True)
class _FlatLevel:
    """The loss level of a component of {grad D = 0} on a chain."""

    d0: float  # the gap on the component
    loss: float  # ell(D0)
    at_optimum: bool  # D0 = D*: every point is a global minimum
    sgn: float  # sign of ell'(D0) = sign(D0 - D*)
    what: str  # how the component is described


class _ComponentView:
    """A component of {grad D = 0} bound to a chain: its points from the free coordinates, its sign
    cases, its normal curvature and membership (compiled once)."""

    def __init__(self, comp, params, split, chain_subs, lo, hi):
        self.comp, self.split = comp, split
        self.names = [str(s) for s in params]
        self.free = comp.free
        self.fixed = comp.fixed_dict
        self.fixed_fns = {str(s): compile_expression(self.free, v.subs(chain_subs)) for s, v in self.fixed.items()}
        self.curv_fn = (compile_expression(self.free, comp.curvature.subs(chain_subs))
                        if comp.curvature is not None and self.free else None)
        # an isolated point may be degenerate: numeric roots scatter around it (see engine.critical)
        self.tol = MEMBER_TOL if self.free else ISOLATED_RADIUS * float(np.linalg.norm(hi - lo))

    def index(self, s) -> int:
        return self.names.index(str(s))

    def coords(self, free_vals):
        """Points (k, n) from free coordinates (k, len(free))."""
        k = free_vals.shape[0]
        out = np.empty((k, len(self.names)))
        for j, s in enumerate(self.free):
            out[:, self.index(s)] = free_vals[:, j]
        with np.errstate(all="ignore"):
            for name, fn in self.fixed_fns.items():
                out[:, self.index(name)] = np.broadcast_to(np.asarray(fn(*free_vals.T), dtype=float), (k,))
        return out

    def in_cases(self, x):
        if self.comp.cases is None:
            return np.ones(len(x), bool)
        ok = np.zeros(len(x), bool)
        for pattern in self.comp.cases:
            m = np.ones(len(x), bool)
            for s, sg in zip(self.split, pattern):
                if s in self.free:
                    m &= np.sign(x[:, self.index(s)]) == sg
            ok |= m
        return ok

    def curvature(self, x):
        vals = [x[:, self.index(s)] for s in self.free]
        return np.broadcast_to(np.asarray(self.curv_fn(*vals), float), (len(x),))

    def on_component(self, x):
        x = np.atleast_2d(x)
        free_vals = (np.stack([x[:, self.index(s)] for s in self.free], -1) if self.free
                     else np.zeros((len(x), 0)))
        with np.errstate(invalid="ignore"):
            close = np.all(np.abs(self.coords(free_vals) - x) <= self.tol, axis=-1)
        return close & self.in_cases(x)

    def samples(self, lo, hi):
        """Points of the component over the box (a grid of about 4096 free values), in its sign cases."""
        if self.free:
            per = max(2, int(round(4096 ** (1 / len(self.free)))))
            idx = [self.index(s) for s in self.free]
            grids = np.meshgrid(*[np.linspace(lo[i], hi[i], per) for i in idx], indexing="ij")
            free_vals = np.stack([g.ravel() for g in grids], -1)
        else:
            free_vals = np.zeros((1, 0))
        pts = self.coords(free_vals)
        return pts[np.all(np.isfinite(pts), -1) & _in_box(pts, lo, hi) & self.in_cases(pts)]


class _SymbolicAssembly:
    """Binds a CriticalStructure to a chain and a box; builds the classified sets."""

    def __init__(self, model: Model, chain: MarkovChain, box, samples: int, chain_free: bool = False):
        import sympy as sp

        from flowlab.systems.markov.critical_symbolic import critical_structure
        from flowlab.systems.markov.latex import tex

        self.sp, self.tex = sp, tex
        self.model = model
        self.free_bias = model.bias == "free"
        self.prof = model.with_profiled_bias() if self.free_bias else model
        self.structure = critical_structure(self.prof)
        self.chain = chain
        self.nm = NumericModel(self.prof, chain)
        self.params = self.prof.params
        self.prof_symbols = [sp.Symbol(n, real=True) for n in self.params]
        self.lo, self.hi = _bounds(box, self.params)
        self.full_lo, self.full_hi = _bounds(box, model.params)
        self.samples = samples
        self.dstar = chain.optimal_gap
        self.sides: list = []
        self.outside: list[str] = []
        # the sets' text and LaTeX at this chain: p and q as the exact rationals of their decimal text
        self.exact = {} if chain_free else {P_SYM: sp.Rational(repr(chain.p)), Q_SYM: sp.Rational(repr(chain.q))}
        subs = {P_SYM: chain.p, Q_SYM: chain.q}
        self.region_fns = [compile_expression(self.prof_symbols, r.subs(subs))
                           for r in (self.structure.region if self.structure is not None else ())]

    # rendering: an expression of the structure as the sets' text and LaTeX show it
    def show(self, expr):
        """``expr`` at this chain (p, q exact, simplified); unchanged when the text is chain-free.

        Of the substituted expression and two simplified forms, the one with the fewest operations.
        """
        sp = self.sp
        if not self.exact or not isinstance(expr, sp.Basic):
            return expr
        raw = expr.subs(self.exact)
        simple = sp.simplify(raw)
        return min((raw, sp.powsimp(simple), simple), key=lambda x: (sp.count_ops(x), len(sp.sstr(x))))

    def show_sign(self, expr):
        """:meth:`show` of an expression whose sign is what matters (c > 0), without a positive numeric factor."""
        x = self.show(expr)
        if not self.exact:
            return x
        coeff = self.sp.factor_terms(x).as_coeff_Mul()[0]
        return self.sp.expand(x / abs(coeff)) if coeff.is_Rational and coeff != 0 else x

    # lifting profiled points to the model's coordinates
    def lift(self, pts):
        if not self.free_bias:
            return pts
        b = self.nm.optimal_bias(pts) if len(pts) else np.zeros(0)
        return np.concatenate([pts, b[:, None]], axis=-1)

    def member_fn(self, inner):
        """Membership in model coordinates from membership in profiled coordinates."""
        if not self.free_bias:
            return inner

        def member(x):
            x = np.atleast_2d(x)
            theta, b = x[:, :-1], x[:, -1]
            return inner(theta) & (np.abs(b - self.nm.optimal_bias(theta)) <= MEMBER_TOL)

        return member

    def make_set(self, kind, dim, loss, equation, text, pts, description, member):
        """A CriticalSet in the model's coordinates (lifted by b* when the bias is free)."""
        pts = self.lift(pts)
        keep = _in_box(pts, self.full_lo, self.full_hi) if len(pts) else np.zeros(0, bool)
        pts = pts[keep]
        if self.free_bias:
            kind = _kind_with_free_bias(kind)
            equation += r",\quad b = b^*(\theta)"
            text += ", b = b*(theta)"
        if not len(pts):
            self.outside.append(f"{text} ({description})")
        return CriticalSet(
            kind=kind,
            dimension=dim,
            loss=float(loss),
            equation=equation,
            points=_thin(pts, self.samples),
            source="symbolic",
            text=text,
            description=description,
            member=self.member_fn(member),
        )

    def gap_level(self):
        pts = _level_points(self.nm, self.dstar, self.lo, self.hi)
        gap = self.show(self.structure.gap)
        eq = f"{self.tex(gap)} = D^*"

        def member(x):
            return np.abs(self.nm.gap(np.atleast_2d(x)) - self.dstar) <= MEMBER_TOL * max(1.0, abs(self.dstar))

        return self.make_set(
            "global_min", len(self.params) - 1, self.chain.entropy_rate, eq, f"{gap} = D*", pts,
            f"global minima, the bigram model (loss H), D* = {self.dstar:.10g}", member,
        )

    def flat_sets(self, comp):
        """The classified pieces of one component of {grad D = 0}."""
        sp = self.sp
        chain_subs = {P_SYM: self.chain.p, Q_SYM: self.chain.q}
        view = _ComponentView(comp, self.params, self.structure.split, chain_subs, self.lo, self.hi)
        d0 = float(comp.gap_value.subs(chain_subs))
        loss, lp = (float(v) for v in self.nm.profiled_loss(np.array(d0)))
        level = _FlatLevel(
            d0=d0,
            loss=loss,
            # ell'(D0) = 0 exactly when D0 = D* (p + q = 1 for the unigram set, D0 = 0): all global.
            at_optimum=lp == 0.0 or abs(d0 - self.dstar) <= 1e-12 * max(1.0, abs(self.dstar)),
            # sign ell'(D0) = sign(D0 - D*) exactly (ell strictly convex, minimal at D*); the float lp may
            # lose its sign when ell is nearly flat (a nearly degenerate chain)
            sgn=1.0 if d0 > self.dstar else -1.0,
            what="the unigram set (D = 0)" if d0 == 0 else f"grad D = 0 with D = {d0:.6g}",
        )
        pts = view.samples(self.lo, self.hi)
        base_tex = r",\ ".join(f"{sp.latex(s)} = {sp.latex(self.show(v))}" for s, v in view.fixed.items())
        base_txt = ", ".join(f"{s} = {sp.sstr(self.show(v))}" for s, v in view.fixed.items())
        if comp.cases is not None:
            base_tex += r",\ " + comp.condition(view.split, latex=True)
            base_txt += ", " + comp.condition(view.split, latex=False)
        if not len(pts):
            self.outside.append(f"{base_txt} ({level.what})")
            return []
        if view.curv_fn is None:
            return self._hessian_sets(view, pts, level, base_tex, base_txt)
        return self._curvature_sets(view, pts, level, base_tex, base_txt)

    def _hessian_sets(self, view, pts, level, base_tex, base_txt):
        """No closed-form curvature: classify the samples from the Hessian (exact on the set:
        ell'(D0) grad^2 D), whose tangent eigenvalues vanish."""
        from flowlab.engine.critical import kind_from_eigenvalues

        dim = len(view.free)
        kinds = []
        for x, h in zip(pts, self.nm.hessian(pts) if len(pts) else []):
            lam = np.linalg.eigvalsh(h)
            mu = np.delete(lam, np.argsort(np.abs(lam))[:dim])
            k = "global_min" if level.at_optimum else kind_from_eigenvalues(mu, max(1.0, float(np.max(np.abs(lam)))))
            kinds.append(k or self._higher_order(x, level.d0, level.sgn))
        kinds = np.array(kinds, dtype=object)
        out = []
        for k in dict.fromkeys(kinds):
            sel = kinds == k
            out.append(self.make_set(k, dim, level.loss, base_tex, base_txt, pts[sel], level.what, view.on_component))
        return out

    def _curvature_sets(self, view, pts, level, base_tex, base_txt):
        """One normal direction: the normal curvature of L is ell'(D0) c, split where c changes sign."""
        sp = self.sp
        comp, free, dim = view.comp, view.free, len(view.free)
        split_pts = []
        for sol in comp.splits:
            sd = dict(sol)
            if dim == 1 and all(s in sd for s in free):
                split_pts.append((view.coords(np.array([[float(sd[s]) for s in free]]))[0], sd))
        intervals = self._intervals(split_pts, free, view.curvature, view.coords) if dim == 1 else {}
        c_tex, c_txt = self.tex(self.show_sign(comp.curvature)), sp.sstr(self.show_sign(comp.curvature))
        out = []
        for csign in (1, -1):
            kind = "global_min" if level.at_optimum else ("local_min" if level.sgn * csign > 0 else "local_max")
            sel = np.sign(view.curvature(pts)) == csign if len(pts) else np.zeros(0, bool)
            if not np.any(sel):
                continue

            def member(x, csign=csign):
                x = np.atleast_2d(x)
                with np.errstate(invalid="ignore"):
                    return view.on_component(x) & (np.sign(view.curvature(x)) == csign)

            rel = ">" if csign > 0 else "<"
            where_tex, where_txt = intervals.get(csign, (f"{c_tex} {rel} 0", f"{c_txt} {rel} 0"))
            self.sides.append(
                (where_txt, where_tex, lambda x, csign=csign: np.sign(view.curvature(np.atleast_2d(x))) == csign)
            )
            out.append(
                self.make_set(kind, dim, level.loss, base_tex + r",\ " + where_tex, base_txt + ", " + where_txt,
                              pts[sel], f"{level.what}, normal curvature of D {rel} 0", member)
            )
        if dim >= 2 and comp.splits:
            out.extend(self._split_sets(view, level))
        out.extend(self._split_point_sets(view, split_pts, level))
        return out

    def _split_point_sets(self, view, split_pts, level):
        """The isolated points of a 1-D component where its normal curvature changes sign."""
        sp = self.sp
        out = []
        for x0, sd in split_pts:
            if not view.in_cases(x0[None])[0]:
                continue
            if not _in_box(x0[None], self.lo, self.hi)[0]:
                self.outside.append(", ".join(f"{k} = {sp.sstr(self.show(v))}"
                                              for k, v in (*view.fixed.items(), *sd.items()))
                                    + f" ({level.what}, where its normal curvature changes sign)")
                continue
            kind = "global_min" if level.at_optimum else self._higher_order(x0, level.d0, level.sgn)
            items = (*view.fixed.items(), *sd.items())
            # the Hessian vanishes at a split point, so numeric roots scatter around it as around
            # any degenerate isolated point (the wider the flatter ell is, i.e. the smaller the gap)
            radius = ISOLATED_RADIUS * float(np.linalg.norm(self.hi - self.lo))

            def member(x, x0=x0, radius=radius):
                return np.linalg.norm(np.atleast_2d(x) - x0, axis=-1) <= radius

            out.append(
                self.make_set(kind, len(view.free) - 1, level.loss,
                              r",\ ".join(f"{sp.latex(s)} = {sp.latex(self.show(v))}" for s, v in items),
                              ", ".join(f"{s} = {sp.sstr(self.show(v))}" for s, v in items), x0[None],
                              f"{level.what}, where its normal curvature changes sign", member)
            )
        return out

    def _split_sets(self, view, level):
        """Where the normal curvature changes sign on a component with >= 2 free variables: each
        solution of c = 0 gives one free variable as a function of the others (a curve or more),
        sampled over the box and classified from higher order at a few of its points."""
        sp = self.sp
        comp, coords, curvature, in_cases, fixed = view.comp, view.coords, view.curvature, view.in_cases, view.fixed
        loss, d0, sgn, at_optimum, what = level.loss, level.d0, level.sgn, level.at_optimum, level.what
        names = [str(s) for s in self.params]
        out = []
        for sol in comp.splits:
            sd = dict(sol)
            solved = [s for s in comp.free if s in sd]
            rest = [s for s in comp.free if s not in sd]
            if len(solved) != 1 or not rest:
                continue
            (z,) = solved
            fz = compile_expression(rest, sd[z].subs({P_SYM: self.chain.p, Q_SYM: self.chain.q}))
            per = max(2, int(round(400 ** (1 / len(rest)))))
            idx = [names.index(str(r)) for r in rest]
            grids = np.meshgrid(*[np.linspace(self.lo[i], self.hi[i], per) for i in idx], indexing="ij")
            rest_vals = np.stack([g.ravel() for g in grids], -1)
            with np.errstate(all="ignore"):
                zv = np.asarray(fz(*rest_vals.T), dtype=complex) * np.ones(len(rest_vals))
            real = np.abs(zv.imag) <= 1e-12 * (1 + np.abs(zv.real))
            free_vals = np.empty((len(rest_vals), len(comp.free)))
            for j, s in enumerate(comp.free):
                free_vals[:, j] = zv.real if s == z else rest_vals[:, rest.index(s)]
            pts = coords(free_vals)
            ok = real & np.all(np.isfinite(pts), -1) & _in_box(pts, self.lo, self.hi) & in_cases(pts)
            pts = pts[ok]
            if len(pts):
                with np.errstate(invalid="ignore"):
                    pts = pts[np.abs(curvature(pts)) <= 1e-9 * (1 + np.abs(curvature(pts + 0.01)))]
            if not len(pts):
                continue
            if at_optimum:
                kind = "global_min"
            else:
                probes = {self._higher_order(x, d0, sgn) for x in pts[np.linspace(0, len(pts) - 1, 5).astype(int)]}
                kind = probes.pop() if len(probes) == 1 else "degenerate"
            items = (*fixed.items(), (z, sd[z]))
            zi, fn = names.index(str(z)), fz

            def member(x, zi=zi, fn=fn, rest_idx=idx):
                x = np.atleast_2d(x)
                with np.errstate(all="ignore"):
                    zz = np.asarray(fn(*[x[:, i] for i in rest_idx]), dtype=complex) * np.ones(len(x))
                ok = np.abs(zz.imag) < 1e-12
                for name, v in fixed.items():
                    ok &= np.abs(x[:, names.index(str(name))] - float(v)) <= MEMBER_TOL
                return ok & (np.abs(x[:, zi] - zz.real) <= MEMBER_TOL)

            out.append(
                self.make_set(kind, len(comp.free) - 1, loss,
                              r",\ ".join(f"{sp.latex(k)} = {sp.latex(self.show(v))}" for k, v in items),
                              ", ".join(f"{k} = {sp.sstr(self.show(v))}" for k, v in items), pts,
                              f"{what}, where its normal curvature changes sign", member)
            )
        return out

    def box_in_region(self, box) -> tuple[bool, str]:
        """Is the box inside the branch region, and how that was established.

        Conditions linear in the parameters (``ewa``: |c| < 1/2, c linear in a) take their minimum
        over a box at a corner, so the 2^n corners prove it; otherwise 9 points per axis are only
        probed, and the answer says so.
        """
        sp = self.sp
        lo, hi = _bounds(box, self.params)
        subs = {P_SYM: self.chain.p, Q_SYM: self.chain.q}
        linear = all(sp.Poly(r.subs(subs), *self.prof_symbols).total_degree() <= 1
                     if r.subs(subs).is_polynomial(*self.prof_symbols) else False for r in self.structure.region)
        k = 2 if linear else 9
        probe = np.stack(np.meshgrid(*[np.linspace(a, b, k) for a, b in zip(lo, hi)], indexing="ij"), -1)
        inside = bool(np.all(self.in_region(probe.reshape(-1, len(lo)))))
        how = ("proved: the conditions are linear in the parameters and hold at every corner of the box" if linear
               else "checked at 9 points per axis of the box (the conditions are not linear: not a proof)")
        return inside, how

    def in_region(self, x):
        """Points where the structure holds (each Max/Min on the branch it takes at theta = 0)."""
        x = np.atleast_2d(x)
        ok = np.ones(len(x), bool)
        for fn in self.region_fns:
            with np.errstate(all="ignore"):
                ok &= np.broadcast_to(np.asarray(fn(*x.T), float), (len(x),)) > 0
        return ok

    def _intervals(self, split_pts, free, curvature, coords):
        """One free variable: (LaTeX, text) of the intervals where the curvature is > 0 and < 0."""
        sp = self.sp
        (s,) = free
        exact = {float(sd[s]): self.show(sd[s]) for _, sd in split_pts}
        edges = [-math.inf, *sorted(exact), math.inf]
        out: dict[int, list[tuple[str, str]]] = {1: [], -1: []}
        name = sp.latex(s)
        for a, b in zip(edges[:-1], edges[1:]):
            if math.isfinite(a) and math.isfinite(b):
                mid = (a + b) / 2
                pair = (f"{sp.latex(exact[a])} < {name} < {sp.latex(exact[b])}",
                        f"{sp.sstr(exact[a])} < {s} < {sp.sstr(exact[b])}")
            elif math.isfinite(b):
                mid, pair = b - 1, (f"{name} < {sp.latex(exact[b])}", f"{s} < {sp.sstr(exact[b])}")
            elif math.isfinite(a):
                mid, pair = a + 1, (f"{name} > {sp.latex(exact[a])}", f"{s} > {sp.sstr(exact[a])}")
            else:
                continue  # no split: the sign condition itself is the clearest statement
            c = float(curvature(coords(np.array([[mid]])))[0])
            if c != 0 and math.isfinite(c):
                out[1 if c > 0 else -1].append(pair)
        return {
            k: (r"\ \text{or}\ ".join(t for t, _ in v), " or ".join(t for _, t in v)) for k, v in out.items() if v
        }

    def _higher_order(self, x0, d0, sgn):
        """Kind at a point of {grad D = 0} from the sign of ell'(D0) (D - D0) on small spheres."""
        from flowlab.engine.critical import sphere_kind

        scale = float(np.linalg.norm(self.hi - self.lo))
        return sphere_kind(
            lambda z: sgn * (self.nm.gap(z) - d0), x0, (1e-3 * scale, 3e-4 * scale), tol=1e-15
        )

    def sets(self):
        self.sides = []  # (text, LaTeX, predicate) of the sides of each split of {grad D = 0}
        self.outside = []  # texts of the sets (or pieces) of the whole space that have no point in the box
        gap = self.gap_level()
        out = []
        for comp in self.structure.flat:
            out.extend(self.flat_sets(comp))
        if len(gap.points):
            theta = gap.points[:, : len(self.params)]
            where = [(txt, tex) for txt, tex, pred in self.sides if np.all(pred(theta))]
            gap = replace(gap, location=" and ".join(w[0] for w in where),
                          location_latex=r"\ \text{and}\ ".join(w[1] for w in where))
        return [s for s in [gap, *out] if len(s.points)]


# ----------------------------------------------------------------------- numeric path
def _numeric_sets(model, chain, box, *, starts, seed, samples, sets=True, context=None):
    from flowlab.engine.critical import find_numeric
    from flowlab.engine.system import Reference

    if context is None:
        nm = NumericModel(model, chain)
    else:  # the exact finite-context loss and gradient, the Hessian by central differences of that gradient
        from flowlab.systems.markov.system import MarkovSystem

        nm = MarkovSystem(model, chain, context)
    lo, hi = _bounds(box, model.params)
    ref = Reference(chain.entropy_rate, loss_tol=LOSS_TOL if chain.degenerate else chain.loss_tolerance)
    res = find_numeric(nm, lo, hi, reference=ref, starts=starts, seed=seed, sets=sets)
    sets = []
    for pc in res.pieces:
        what = "split point" if pc.split else f"{pc.dimension}-dimensional set"
        eq = rf"\nabla L = 0,\ L = {pc.loss:.10g}\ \text{{(numeric {what})}}"
        sets.append(
            CriticalSet(pc.kind, pc.dimension, pc.loss, eq, _thin(pc.points, samples), "numeric",
                        f"grad L = 0, L = {pc.loss:.10g}", f"numeric {what}")
        )
    return sets, res


def _cross_check_degenerate(chain, num_res, nm):
    """p + q = 1: every critical point is global, so every numeric root must have loss H.

    (ell is flat to second order at D* = 0 and grad L vanishes like e^3 on the unigram set, so
    roots are located only to about gtol^(1/3): distances to the sets are not compared.)
    """
    losses = nm.loss(num_res.roots) if len(num_res.roots) else np.zeros(0)
    bad = int(np.sum(losses - chain.entropy_rate > LOSS_TOL))
    return {
        "agree": bad == 0,
        "numeric_roots": int(len(num_res.roots)),
        "numeric_roots_above_H": bad,
        "starts": num_res.starts,
        "note": "degenerate chain: numeric roots checked for loss = H only",
    }


def _cross_check(sym_sets, num_sets, num_res):
    """Agreement of the two paths (numeric points on symbolic sets, same kinds, nothing missed)."""
    # near the sets where a normal curvature changes sign the numeric kinds are not decisive
    splits = [s for s in sym_sets if "changes sign" in s.description]
    split_pts = np.concatenate([s.points for s in splits]) if splits else np.zeros((0, 0))
    near = 1e-3 if all(s.dimension == 0 for s in splits) else 0.1
    off, mismatches, checked = 0, [], 0
    hit = np.zeros(len(sym_sets), dtype=int)
    for ns in num_sets:
        for x in ns.points:
            owners = [i for i, s in enumerate(sym_sets) if s.member(x[None])[0]]
            if not owners:
                off += 1
                continue
            for i in owners:
                hit[i] += 1
            near_split = len(split_pts) and np.min(np.linalg.norm(split_pts - x, axis=-1)) < near
            # near a split only isolated numeric split points (classified from higher order) are compared
            if (near_split and not (ns.dimension == 0 and any(sym_sets[i] in splits for i in owners))) \
                    or ns.kind == "degenerate":
                continue
            checked += 1
            kinds = {sym_sets[i].kind for i in owners}
            if ns.kind not in kinds:
                mismatches.append({"point": x.tolist(), "numeric": ns.kind, "symbolic": sorted(kinds)})
    missed = [s.equation for s, h in zip(sym_sets, hit) if h == 0]
    roots_off = int(sum(1 for x in num_res.roots if not any(s.member(x[None])[0] for s in sym_sets)))
    agree = off == 0 and roots_off == 0 and not mismatches and not missed
    return {
        "agree": bool(agree),
        "numeric_roots": int(len(num_res.roots)),
        "numeric_samples_checked": int(checked),
        "numeric_points_off_symbolic_sets": int(off + roots_off),
        "kind_mismatches": mismatches[:10],
        "symbolic_sets_not_found_numerically": missed,
        "starts": num_res.starts,
    }


# ------------------------------------------------------------------------------- the API
def _symbolic_sets(model, chain, box, samples, method, notes, chain_free=False):
    """(symbolic sets or None, texts of the sets outside the box); appends to ``notes``."""
    asm = _SymbolicAssembly(model, chain, box, samples, chain_free)
    structure = asm.structure
    box_inside = True
    if structure is not None and structure.region:
        box_inside, how = asm.box_in_region(box)
        where = structure.notes[0].split(": ", 1)[-1]
        notes.append(f"the box lies inside the region where the symbolic structure holds ({where}): {how}"
                     if box_inside else
                     f"the box reaches beyond the region where the symbolic structure holds ({where})")
    if structure is not None and structure.solved and box_inside:
        sym_sets = asm.sets()
        if asm.outside:
            notes.append("symbolic critical sets with no point in the box (not listed): " + "; ".join(asm.outside))
        return sym_sets, tuple(asm.outside)
    why = "; ".join(structure.notes) if structure is not None else "no profiled form"
    if not box_inside:
        why = "box outside its region"
    if method == "symbolic":
        raise FlowlabInputError(f"the symbolic path does not apply to {model.name!r}: {why}")
    notes.append(f"symbolic path unavailable ({why}); numeric sets only")
    return None, ()


def critical_sets(
    model: Model,
    chain: MarkovChain,
    box=None,
    *,
    method: str = "auto",
    starts: int = 1024,
    seed: int = 0,
    samples: int = 64,
    chain_free: bool = False,
    context: int | None = None,
) -> CriticalResult:
    """The critical sets of ``model`` on ``chain`` inside ``box`` ({name: (lo, hi)}), classified.

    ``method``: 'auto' (symbolic with a numeric cross-check when the model allows it, numeric
    otherwise), 'symbolic' (no cross-check: ``complete`` stays False), or 'numeric'.
    The sets' ``text`` and ``equation`` hold the chain's p and q as exact rationals, simplified;
    ``chain_free`` keeps p and q as symbols (the regions table, whose rows span chains).
    ``context=N``: the exact loss over a finite context of N positions (MODELS.md section 4), by the numeric
    path only (the symbolic structure D = D*, grad D = 0 is the long-context limit's): its sets are never
    ``complete`` and their kinds rest on a Hessian by central differences of the exact gradient.

    >>> from flowlab import MarkovChain, get_model
    >>> r = critical_sets(get_model("ew"), MarkovChain(0.1, 0.1))
    >>> sorted(set(r.kinds())), r.complete
    (['global_min', 'local_max', 'local_min', 'saddle'], True)
    """
    if method not in METHODS:
        raise FlowlabInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    starts = integer(starts, "starts", 1, 2**20)
    samples = integer(samples, "samples")
    box = make_box(model, box)
    timings = {}
    notes = []
    if context is not None:
        context, method = _context_method(context, method, chain, notes)
        _refuse_slow_context(model, context, starts)
    sym_sets, outside = None, ()
    t0 = time.perf_counter()
    if method in ("auto", "symbolic"):
        sym_sets, outside = _symbolic_sets(model, chain, box, samples, method, notes, chain_free)
        timings["symbolic_s"] = time.perf_counter() - t0
    num_sets = num_res = None
    roots_only = chain.degenerate and sym_sets is not None
    skip_numeric = chain.nearly_degenerate and sym_sets is not None
    if skip_numeric:
        notes.append(_nearly_degenerate_note(chain) + "; kinds from the symbolic structure (sign of D0 - D*, exact)")
    if method in ("auto", "numeric") and not skip_numeric:
        t1 = time.perf_counter()
        num_sets, num_res = _numeric_sets(model, chain, box, starts=starts, seed=seed, samples=samples,
                                          sets=not roots_only, context=context)
        timings["numeric_s"] = time.perf_counter() - t1
        notes.extend(num_res.notes)
    if num_sets is not None and chain.nearly_degenerate:
        notes.append(_nearly_degenerate_note(chain) + "; numeric kinds cannot be resolved and are reported as "
                     "'degenerate'")
        num_sets = [replace(s, kind="degenerate", description=s.description + " (nearly degenerate chain)")
                    for s in num_sets]
    sets, used, complete, agreement = _combine(model, chain, sym_sets, num_sets, num_res, roots_only, notes)
    timings["total_s"] = time.perf_counter() - t0
    _lead_notes(chain, complete, roots_only, agreement, notes)
    order = {k: i for i, k in enumerate(KINDS)}
    sets.sort(key=lambda s: (s.source != "symbolic", order[s.kind], -s.dimension))
    return CriticalResult(
        model=model,
        params=model.params,
        chain=chain,
        box=box,
        degenerate=chain.degenerate,
        complete=bool(complete),
        sets=tuple(sets),
        method=used,
        message="; ".join(dict.fromkeys(notes)),
        agreement=agreement,
        timings=timings,
        outside_box=outside,
        context=context,
    )


#: Longest finite-context critical-set search accepted (estimated up front), and the cost model of one gradient
#: at one point: ~40 us by quadrature (ewa, N = 256, measured) or ~20 ns per (x, m) term summed directly
#: (about 0.6 N^2 terms), times (2n + 1) gradients per Levenberg-Marquardt iteration (the difference Hessian)
#: and up to CONTEXT_ITERATIONS iterations per start.
CONTEXT_MAX_SECONDS, CONTEXT_ITERATIONS = 3600.0, 120
QUADRATURE_SECONDS, TERM_SECONDS = 4e-5, 2e-8


def _refuse_slow_context(model, context: int, starts: int) -> None:
    """Refuse a finite-context search whose estimated time exceeds :data:`CONTEXT_MAX_SECONDS` (before any work)."""
    from flowlab.systems.markov.context_quadrature import piecewise_structure

    if not model.uses_attention:
        return  # two terms, one per token: as cheap as the long-context loss
    per_point = QUADRATURE_SECONDS if piecewise_structure(model) is not None else TERM_SECONDS * 0.6 * context**2
    estimate = starts * CONTEXT_ITERATIONS * (2 * len(model.params) + 1) * per_point
    if estimate > CONTEXT_MAX_SECONDS:
        raise FlowlabInputError(
            f"finite-context critical sets with {starts} starts at N = {context} would take up to about "
            f"{estimate / 3600:.3g} h (limit {CONTEXT_MAX_SECONDS / 3600:g} h): use fewer --starts or a shorter --context")


def _context_method(context, method: str, chain: MarkovChain, notes: list) -> tuple[int, str]:
    """(N, 'numeric') for a finite context; refuses the symbolic method and a nearly degenerate chain."""
    from flowlab.systems.markov.context import MAX_CONTEXT

    context = integer(context, "the context length", 1, MAX_CONTEXT)
    if method == "symbolic":
        raise FlowlabInputError("--method symbolic solves the long-context loss (D = D*, grad D = 0); a finite "
                                "context has no such structure: use --method numeric (or auto)")
    chain.require_resolvable(f"the finite-context critical-set analysis (N = {context})")
    notes.append(f"finite context N = {context}: numeric multi-start on the exact expected loss over positions "
                 "1..N (the symbolic structure D = D*, grad D = 0 is the long-context limit's); kinds from a "
                 "Hessian by central differences of the exact gradient; completeness not vouched for")
    return context, "numeric"


def _combine(model, chain, sym_sets, num_sets, num_res, roots_only, notes):
    """(sets, method used, complete, agreement) from the two paths; appends to ``notes``."""
    agreement = None
    if sym_sets is not None and num_sets is not None:
        if roots_only:
            agreement = _cross_check_degenerate(chain, num_res, NumericModel(model, chain))
        else:
            agreement = _cross_check(sym_sets, num_sets, num_res)
        sets = list(sym_sets)
        if not agreement["agree"]:
            notes.append("the symbolic and numeric paths DISAGREE (see agreement); numeric sets appended")
            sets += [s for s in num_sets]
        used = "symbolic+numeric"
        complete = agreement["agree"]
    elif sym_sets is not None:
        sets, used, complete = list(sym_sets), "symbolic", False
        notes.append("no numeric cross-check: completeness not vouched for")
    else:
        sets, used, complete = list(num_sets), "numeric", False
        notes.append(f"numeric multi-start ({num_res.starts} starts) cannot vouch that no critical point was missed")
    return sets, used, complete, agreement


def _lead_notes(chain, complete, roots_only, agreement, notes) -> None:
    """Put what makes the result complete, and a degenerate chain, first in ``notes``."""
    if complete:
        found = "only roots with loss H" if roots_only else "no critical point off these sets, with the same kinds"
        notes.insert(
            0,
            "complete: grad L = ell'(D) grad D with ell strictly convex (unique root D*), every sign case "
            "of grad D = 0 solved by factor combinations and verified by substitution, and an independent "
            f"numeric multi-start ({agreement['starts']} starts) found {found}",
        )
    if chain.degenerate:
        notes.insert(
            0,
            "degenerate chain p + q = 1: tokens are i.i.d., D* = 0, unigram and bigram coincide and every "
            "critical point is a global minimum",
        )


def _nearly_degenerate_note(chain: MarkovChain) -> str:
    return (f"nearly degenerate chain: h(pi1) - H = {chain.loss_gap:.3g} is below {NEAR_DEGENERATE_GAP:g}, the "
            "smallest loss gap float64 resolves, so losses cannot tell the unigram set from the bigram set")


# --------------------------------------------------------------------- the regions table
#: Representative chains of the paper's case split (Figure 1 uses p = q = 0.1 and 0.9).
#: p != q in each region, so that the attention direction a of ``ewa`` is not flat (c = a (pi1 - 1/2)),
#: and |pi1 - 1/2| < 1/6 (pi1 = 0.4, 0.4, 0.5625), so its branch region |c| < 1/2 covers a in [-3, 3].
REGION_CHAINS = {"p+q<1": (0.1, 0.15), "p+q=1": (0.4, 0.6), "p+q>1": (0.9, 0.7)}


def regions_table(model: Model, box=None, **kwargs) -> dict:
    """The kind of every critical set for p + q < 1, = 1 and > 1 (the paper's case split).

    The kinds depend on (p, q) only through sign ell'(D0) = sign(D0 - D*) on each component of
    {grad D = 0} (D0 = 0 for the unigram set and D* > 0 iff p + q < 1), so one chain per region
    decides the row; each column is computed with the full cross-checked analysis. Each region
    carries its chain, ``complete`` (bool) and ``message``; the top-level ``complete`` is True when
    every region is complete (docs/schema.md, ``critical-regions``).
    """
    columns, rows, t0 = {}, {}, time.perf_counter()
    for region, (p, q) in REGION_CHAINS.items():
        res = critical_sets(model, MarkovChain(p, q), box, chain_free=True, **kwargs)
        columns[region] = res
        for s in res.sets:
            key = s.text  # chain-independent: D* stays a symbol
            rows.setdefault(key, {"set": key, "latex": s.equation, "dimension": s.dimension})[region] = {
                "kind": s.kind,
                "location": s.location,
                "location_latex": s.location_latex,
                "loss": s.loss,
                "equation": s.equation,
            }
    complete = all(res.complete for res in columns.values())
    return {
        "status": "complete" if complete else "incomplete",
        "message": "every region complete" if complete else "incomplete in " + ", ".join(
            r for r, res in columns.items() if not res.complete),
        "model": model.name,
        "params": list(model.params),
        "regions": {r: {"p": pq[0], "q": pq[1], "complete": columns[r].complete, "message": columns[r].message}
                    for r, pq in REGION_CHAINS.items()},
        "rows": list(rows.values()),
        "complete": complete,
        "seconds": time.perf_counter() - t0,
    }


__all__ = ["KINDS", "CriticalResult", "CriticalSet", "critical_sets", "make_box", "regions_table"]
